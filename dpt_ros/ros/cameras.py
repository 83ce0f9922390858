# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Camera I/O: each camera's output publishers and input subscriptions, their QoS, losses.

Inputs come from the one input table (dpt_ros.core.inputs). Image and camera_info
subscriptions are keep-last 1 (the newest frame wins), anchor subscriptions keep-last
ANCHOR_HISTORY (each anchor message is the one some frame pairs with); their reliability is
configured or follows what the publishers offer ('auto', checked once a second so a camera
that appears later is matched). camera_info (and anchors/camera_info) is subscribed
transient_local while every publisher of it latches it, so calibration published once is
received. A callback only stores the newest frame for the worker, or
the anchor message for pairing (and wakes a frame waiting for it). Frames the middleware
reports lost are counted, and a large best-effort stream that loses most of them gets one
warning naming the fix.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

from rclpy.clock import Clock, ClockType
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from dpt_ros.core import conversions as conv
from dpt_ros.core import inputs
from dpt_ros.core import outputs
from dpt_ros.core.anchors import AnchorInput
from dpt_ros.core.config import Config
from dpt_ros.core.frames import Calibration
from dpt_ros.core.inputs import Input
from dpt_ros.core.reports import Throttle
from dpt_ros.ros import fastdds
from dpt_ros.ros.diagnostics import Heard, Stats
from dpt_ros.ros.scheduler import Scheduler
from dpt_ros.ros.serialized import SerializedPublisher

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
except ImportError:  # Humble
    try:
        from rclpy.qos_event import SubscriptionEventCallbacks, UnsupportedEventTypeError
    except ImportError:
        SubscriptionEventCallbacks = UnsupportedEventTypeError = None

# Frames larger than one UDP datagram travel in fragments: with Fast DDS defaults a
# best-effort reader between processes loses the whole frame when one fragment is late.
LARGE_FRAME_BYTES = 64 * 1024
# A keep-last 1 reader loses large reliable messages that follow each other closely (Fast DDS
# defaults, 1.2 MB depth images at 15 Hz from another process: about one in five, even with an
# idle executor): anchors keep a history, so a message whose fragments are repaired late comes
# late (the pairing wait covers that) instead of never.
ANCHOR_HISTORY = 10
TRANSPORT_LOSS = 'transport_loss'  # its warning is given once per node


class Camera:
    """One camera's topics, calibration, output publishers and counters."""

    def __init__(self, name: str) -> None:
        self.name = name  # '' for the single camera of a node without `cameras`
        self.prefix = name.rstrip('/') + '/' if name else ''
        self.inputs: List[Tuple[Input, str]] = []  # (table row, full topic), while active
        self.image_topic = self.info_topic = ''
        self.calibration = Calibration()
        self.pubs: Dict[str, Any] = {}  # output name -> publisher
        self.unadvertised: Dict[str, str] = {}  # topic -> the task whose model is not loaded
        self.senders: Dict[str, SerializedPublisher] = {}  # output name -> its pub's sender
        self.subs: Dict[str, Any] = {}  # topic -> subscription
        self.sub_reliability: Dict[str, ReliabilityPolicy] = {}
        self.sub_durability: Dict[str, DurabilityPolicy] = {}  # calibration topics follow it
        self.frame_bytes = 0  # size of the last image received (the loss warning's 'large')
        self.stats = Stats()
        self.anchors: Optional[AnchorInput] = None  # with anchors.source, while active
        self.anchor_topics: Tuple[str, ...] = ()
        self.suspended = False  # depth.mode fitted: no metres for want of anchors
        self.metre_dropouts = 0  # metres stopped while anchor messages kept arriving
        # The newest frame's per-frame facts (Result.notes: focal_source, prompt) for
        # /diagnostics.
        self.notes: Dict[str, str] = {}
        self.points_left_out = ''  # why the newest frame decoded gets no points ('' if it does)

    @property
    def camera_info(self) -> Any:
        """The newest CameraInfo received (None before the first)."""
        return self.calibration.info

    def subscribed(self, name: str) -> bool:
        """Whether output `name` of this camera has a subscriber."""
        pub = self.pubs.get(name)
        return pub is not None and pub.get_subscription_count() > 0

    def wanted(self) -> FrozenSet[str]:
        """Names of this camera's outputs someone subscribes to."""
        return frozenset(name for name in self.pubs if self.subscribed(name))

    @property
    def label(self) -> str:
        """How log lines name this camera."""
        return f"camera '{self.name}'" if self.name else 'camera'

    def topic(self, role: str) -> str:
        """Return the full topic of this camera's first input of a role ('' without one)."""
        return next((t for row, t in self.inputs if row.role == role), '')


class CameraIO:
    """Advertises the cameras' outputs, subscribes their inputs and counts what arrives."""

    def __init__(self, node: Any, once: Throttle) -> None:
        self.node = node
        self.once = once  # warnings given once per node
        self.cameras: List[Camera] = []
        self.scheduler: Optional[Scheduler] = None
        self.reliability = 'auto'  # input.reliability
        self._out_reliability = ReliabilityPolicy.RELIABLE  # output.reliability
        self._timer: Any = None
        self._label_pubs: List[Any] = []  # each camera's segmentation/label_info

    # ------------------------------------------------------------------ open and close

    def open(self, cameras: List[Camera], cfg: Config, has_model: Callable[[str], bool],
             scheduler: Scheduler, labels: List[str]) -> None:
        """Advertise each camera's outputs, subscribe its inputs (and publish label_info)."""
        self.cameras, self.scheduler, self.reliability = cameras, scheduler, cfg.input.reliability
        self._out_reliability = (ReliabilityPolicy.RELIABLE if cfg.output.reliability ==
                                 'reliable' else ReliabilityPolicy.BEST_EFFORT)
        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=cfg.output.history_depth,
                             reliability=self._out_reliability)
        rows = inputs.selected(cfg)
        for cam in cameras:
            # Advertise only what this node can publish: no segmentation topics without a
            # segmentation model, no depth topics without a depth model (depth.mode is live,
            # so a depth model gets all of them).
            cam.pubs = {o.name: self.node.create_publisher(conv.msg_class(o.msg_type),
                                                           cam.prefix + o.topic, out_qos)
                        for o in outputs.OUTPUTS if has_model(o.task)}
            cam.senders = {name: SerializedPublisher(pub) for name, pub in cam.pubs.items()}
            cam.unadvertised = {self.resolve(cam.prefix + o.topic): o.task
                                for o in outputs.OUTPUTS if not has_model(o.task)}
            cam.inputs = [(row, row.resolve(cam.prefix, self.resolve)) for row in rows]
            cam.image_topic = cam.topic(inputs.IMAGE)
            cam.info_topic = cam.topic(inputs.CAMERA_INFO)
            cam.anchor_topics = tuple(t for row, t in cam.inputs
                                      if row.role in (inputs.ANCHORS, inputs.ANCHORS_INFO))
            cam.anchors = AnchorInput(cfg.anchors.source) if cam.anchor_topics else None
            self._subscribe(cam)
        self._publish_label_info(labels)
        # Always: camera_info follows its publishers' durability, whatever input.reliability.
        # On the steady clock: under use_sim_time a paused bag must not stop it.
        self._timer = self.node.create_timer(
            1.0, self.match_publishers, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def unsubscribe(self) -> None:
        """Stop receiving: no frame reaches the worker after this."""
        if self._timer is not None:
            self.node.destroy_timer(self._timer)
            self._timer = None
        for cam in self.cameras:
            for sub in cam.subs.values():
                self.node.destroy_subscription(sub)
            cam.subs, cam.sub_reliability, cam.sub_durability = {}, {}, {}

    def detach(self) -> List[Any]:
        """Take the cameras' publishers and anchors away; return the publishers.

        On the worker thread between batches (a job), after unsubscribe: no frame is being
        decoded, paired or published meanwhile, and none finds them after.
        """
        pubs: List[Any] = []
        for cam in self.cameras:
            pubs.extend(cam.pubs.values())
            cam.pubs, cam.senders, cam.unadvertised = {}, {}, {}
            cam.anchors, cam.anchor_topics, cam.suspended = None, (), False
        return pubs

    def unadvertise(self, pubs: List[Any]) -> None:
        """Destroy the publishers detach() took, and label_info's."""
        for pub in pubs:
            self.node.destroy_publisher(pub)
        for pub in self._label_pubs:
            self.node.destroy_publisher(pub)
        self._label_pubs = []
        self.cameras, self.scheduler = [], None

    def resolve(self, name: str) -> str:
        """Fully qualified, remapped topic name."""
        if hasattr(self.node, 'resolve_topic_name'):
            return self.node.resolve_topic_name(name)
        ns = self.node.get_namespace().rstrip('/')
        return name if name.startswith('/') else f'{ns}/{name}'

    # ------------------------------------------------------------------ subscriptions and QoS

    def _reliability(self, cam: Camera, topic: str, offered: List[Any]) -> ReliabilityPolicy:
        """Return the configured reliability, or in 'auto' what the publishers offer.

        Anchor topics always follow their publishers: lidar and depth drivers often publish
        best effort, which a reliable subscription would never receive. offered: the QoS
        profiles of the topic's publishers.
        """
        choice = 'auto' if topic in cam.anchor_topics else self.reliability
        if choice == 'reliable':
            return ReliabilityPolicy.RELIABLE
        if choice == 'best_effort':
            return ReliabilityPolicy.BEST_EFFORT
        # A reliable subscription cannot match a best-effort publisher; the reverse works.
        return _follow(offered, 'reliability', ReliabilityPolicy.BEST_EFFORT, any,
                       cam.sub_reliability.get(topic, ReliabilityPolicy.RELIABLE),
                       ReliabilityPolicy.RELIABLE)

    @staticmethod
    def _durability(cam: Camera, role: str, topic: str, offered: List[Any]) -> DurabilityPolicy:
        """Return transient_local for a calibration topic whose publishers all latch it.

        A driver (or a bag played with its recorded QoS) that publishes camera_info once,
        transient_local, reaches only a transient_local subscription; such a subscription
        matches no volatile publisher, so it is taken only while every publisher latches.
        """
        if role not in (inputs.CAMERA_INFO, inputs.ANCHORS_INFO):
            return DurabilityPolicy.VOLATILE
        return _follow(offered, 'durability', DurabilityPolicy.TRANSIENT_LOCAL, all,
                       cam.sub_durability.get(topic, DurabilityPolicy.VOLATILE),
                       DurabilityPolicy.VOLATILE)

    def _callback(self, cam: Camera, role: str) -> Callable[[Any], None]:
        """Return what receiving a message of this role does."""
        if role == inputs.IMAGE:
            return lambda msg: self.on_image(cam, msg)
        if role == inputs.CAMERA_INFO:
            return cam.calibration.update
        if role == inputs.ANCHORS_INFO:
            return cam.anchors.set_info
        anchors, scheduler = cam.anchors, self.scheduler

        def on_anchors(msg: Any) -> None:
            anchors.add(msg)
            scheduler.poke()  # a frame may be waiting for this message
        return on_anchors

    def _subscribe(self, cam: Camera, only_changed: bool = False) -> None:
        for row, topic in cam.inputs:
            offered = [i.qos_profile for i in self.node.get_publishers_info_by_topic(topic)]
            rel = self._reliability(cam, topic, offered)
            dur = self._durability(cam, row.role, topic, offered)
            if only_changed and rel == cam.sub_reliability.get(topic) and \
                    dur == cam.sub_durability.get(topic, DurabilityPolicy.VOLATILE):
                continue
            if only_changed:
                name = 'best_effort' if rel == ReliabilityPolicy.BEST_EFFORT else 'reliable'
                if dur == DurabilityPolicy.TRANSIENT_LOCAL:
                    name += ' transient_local'
                self.node.get_logger().info(
                    f'{topic}: publisher offers {name}; resubscribing {name}')
            old = cam.subs.pop(topic, None)
            if old is not None:
                self.node.destroy_subscription(old)
            depth = ANCHOR_HISTORY if row.role == inputs.ANCHORS else 1
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=rel,
                             durability=dur)
            lost = (lambda info: self.on_lost(cam, info)) if row.role == inputs.IMAGE else None
            cam.subs[topic] = self._create_subscription(
                conv.msg_class(row.msg_type), topic, self._callback(cam, row.role), qos, lost)
            cam.sub_reliability[topic] = rel
            cam.sub_durability[topic] = dur

    def _create_subscription(self, msg_type: Any, topic: str, callback: Callable[[Any], None],
                             qos: QoSProfile, on_lost: Optional[Callable[[Any], None]]) -> Any:
        """Subscribe; with on_lost, also to the middleware's lost-message events if it has them."""
        if on_lost is not None and SubscriptionEventCallbacks is not None:
            try:
                return self.node.create_subscription(
                    msg_type, topic, callback, qos,
                    event_callbacks=SubscriptionEventCallbacks(message_lost=on_lost))
            except UnsupportedEventTypeError as exc:
                self.node.get_logger().debug(
                    f'{topic}: the middleware does not report lost messages ({exc}); '
                    'frames_lost stays 0')
        elif on_lost is not None:
            self.node.get_logger().debug(
                'this rclpy has no SubscriptionEventCallbacks: frames_lost stays 0')
        return self.node.create_subscription(msg_type, topic, callback, qos)

    def heard(self, cam: Camera) -> Optional[Heard]:
        """Return what the ROS graph says of a camera's image topic and outputs (diagnostics).

        Checked from the graph each report, so a camera or a viewer that comes later is judged
        as it is. None while the camera is not subscribed (an inactive node).
        """
        row = next((r for r, t in cam.inputs if r.role == inputs.IMAGE), None)
        topic = cam.image_topic
        if row is None or topic not in cam.subs:
            return None
        pubs = self.node.get_publishers_info_by_topic(topic)
        other = ''
        if not pubs:
            base = topic[:-len('/compressed')] if topic.endswith('/compressed') else \
                topic + '/compressed'
            other = base if self.node.get_publishers_info_by_topic(base) else ''
        # Only a reliability the user forced can miss a publisher for good ('auto' follows).
        forced = cam.sub_reliability.get(topic) if self.reliability == 'reliable' else None
        outs = [(pub.topic_name, self.node.get_subscriptions_info_by_topic(pub.topic_name))
                for pub in cam.pubs.values()]
        clock = ''
        if self.node.count_publishers('/clock') and \
                not self.node.get_parameter('use_sim_time').value:
            clock = ('/clock is published (a bag played with --clock, a simulator) while '
                     'use_sim_time is false')
        unserved = [(t, task) for t, task in cam.unadvertised.items()
                    if self.node.count_subscribers(t)]
        for t, task in unserved:
            self.once(('unserved', t), f'{t} has a subscriber, but no {task} model is loaded '
                      f'(model.{task}): nothing is published on it.')
        return Heard(len(pubs), input_problem(topic, row.msg_type, forced, pubs, other),
                     output_problem(self._out_reliability, outs), clock,
                     self.node.count_publishers(cam.info_topic),
                     '; '.join(f'{t} (no {task} model: model.{task})' for t, task in unserved))

    def match_publishers(self) -> None:
        """With reliability 'auto', follow the publishers' QoS when a camera (re)appears."""
        for cam in self.cameras:
            self._subscribe(cam, only_changed=True)

    def _publish_label_info(self, labels: List[str]) -> None:
        """Publish vision_msgs/LabelInfo (transient local) beside each camera's segmentation.

        Under the camera's prefix, as its other outputs: `front/segmentation/label_info`
        with `cameras: [front, ...]`. Only when vision_msgs is installed.
        """
        self._label_pubs = []
        if not labels:
            return
        try:
            from vision_msgs.msg import LabelInfo, VisionClass
        except ImportError:
            return
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        msg = LabelInfo()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.class_map = [VisionClass(class_id=i, class_name=n) for i, n in enumerate(labels)]
        for cam in self.cameras:
            pub = self.node.create_publisher(LabelInfo, cam.prefix + outputs.TOPIC_LABEL_INFO,
                                             qos)
            self._label_pubs.append(pub)
            pub.publish(msg)

    # ------------------------------------------------------------------ callbacks

    def on_image(self, cam: Camera, msg: Any) -> None:
        """Keep only the newest frame per camera; the worker takes it when free.

        Arrival order, never stamps, so a looping bag or a clock jump cannot stall it.
        """
        scheduler = self.scheduler
        if scheduler is None:
            return
        dropped = scheduler.put(cam.name, msg)
        cam.frame_bytes = len(msg.data)
        cam.stats.add_received(dropped)

    def on_lost(self, cam: Camera, info: Any) -> None:
        """Count frames the middleware lost; warn once when a large best-effort stream loses most.

        info is rmw_message_lost_status_t (total_count, total_count_change).
        """
        window = cam.stats.add_lost(int(info.total_count_change))
        if window is None or self.once.told(TRANSPORT_LOSS):
            return
        lost, seen = window
        best_effort = cam.sub_reliability.get(cam.image_topic) == ReliabilityPolicy.BEST_EFFORT
        large = cam.frame_bytes == 0 or cam.frame_bytes >= LARGE_FRAME_BYTES  # 0: none came
        if not (best_effort and large and 2 * lost > seen):
            return
        size = f'{cam.frame_bytes / 1e6:.1f} MB frames' if cam.frame_bytes else 'no frame arrived'
        major = fastdds.fastdds_major()
        profile = fastdds.profile_in_effect(os.environ, major)
        ignored = fastdds.ignored_profile(os.environ, major)
        if profile:
            fix = (f'this node runs with the Fast DDS profile {profile}: run the camera driver '
                   'with it too')
        elif ignored:
            fix = f"{ignored.rstrip('.')}, for the camera driver too"
        else:
            fix = ('run the camera driver and this node with the shipped profile '
                   'config/fastdds_large_frames.xml (`ros2 launch dpt_ros dpt.launch.py '
                   f'large_frames:=true`, or {fastdds.reading_vars(major)[0]})')
        self.once(TRANSPORT_LOSS,
                  f'{cam.label}: {lost} of the last {seen} frames on {cam.image_topic} were lost '
                  f'in transport (best-effort subscription, {size}). With Fast DDS defaults most '
                  f'large best-effort frames between processes are lost: {fix}, or publish the '
                  'camera reliable. /diagnostics counts them (frames_lost).')


def input_problem(topic: str, msg_type: str, subscribed: Optional[ReliabilityPolicy],
                  publishers: List[Any], other: str = '') -> str:
    """Return why a subscription to topic receives nothing from publishers ('' if it can).

    publishers: the topic's TopicEndpointInfo; msg_type: what the node subscribes
    ('sensor_msgs/msg/Image'); subscribed: its reliability; other: the image topic of the
    other transport when that one has publishers.
    """
    if not publishers:
        if other:
            transport = 'compressed' if other.endswith('/compressed') else 'raw'
            return (f'no publisher on {topic}, but {other} has one: input.transport '
                    f'{transport} subscribes to it')
        return f'no publisher on {topic}'
    types = sorted({p.topic_type for p in publishers})
    if msg_type not in types:
        return (f"{topic} is published as {', '.join(types)}; this node subscribes {msg_type} "
                '(input.transport)')
    same = [p for p in publishers if p.topic_type == msg_type]
    if subscribed == ReliabilityPolicy.RELIABLE and \
            all(p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in same):
        return (f'every publisher of {topic} offers best_effort, which a reliable subscription '
                '(input.reliability reliable) never receives: set input.reliability auto or '
                'best_effort')
    return ''


def output_problem(offered: ReliabilityPolicy, topics: List[Tuple[str, List[Any]]]) -> str:
    """Return which outputs have a subscriber that can never receive them ('' if none).

    topics: (topic, its subscriptions' TopicEndpointInfo). A subscriber requesting reliable
    gets nothing from a best-effort publisher, nor one requesting transient_local from the
    node's volatile outputs.
    """
    bad = []
    for topic, subs in topics:
        wants = set()
        for s in subs:
            if offered == ReliabilityPolicy.BEST_EFFORT and \
                    s.qos_profile.reliability == ReliabilityPolicy.RELIABLE:
                wants.add('reliable')
            if s.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL:
                wants.add('transient_local')
        if wants:
            bad.append(f"{topic} ({' '.join(sorted(wants))})")
    if not bad:
        return ''
    offer = 'best_effort' if offered == ReliabilityPolicy.BEST_EFFORT else 'reliable'
    return (f"a subscriber requests QoS these outputs do not offer ({offer}, volatile: "
            f"output.reliability) and receives nothing: {', '.join(bad)}")


def _follow(offered: List[Any], policy: str, special: Any, rule: Callable[[Any], bool],
            unknown: Any, otherwise: Any) -> Any:
    """Return special when rule (any / all) of the publishers' QoS profiles offer it.

    unknown while no publisher is known, otherwise when the rule fails.
    """
    if not offered:
        return unknown
    return special if rule(getattr(q, policy) == special for q in offered) else otherwise
