# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The ROS 2 node: topics, parameters, QoS, the latest-frame worker and /diagnostics.

This is the only module that imports rclpy; everything it computes comes from the
pipeline, and every message it fills comes from dpt_ros.core.conversions.
"""

from __future__ import annotations

from collections import deque
import gc
import os
import signal
import statistics
import sys
import threading
import time
import traceback
from typing import Any, Callable, Deque, Dict, FrozenSet, List, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterUninitializedException
from rclpy.executors import ExternalShutdownException
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
import torch

from dpt_ros.core import cdr
from dpt_ros.core import conversions as conv
from dpt_ros.core import outputs
from dpt_ros.core.anchors import AnchorError, AnchorInput
from dpt_ros.core.config import Config, config_from_flat, ConfigError, iter_settings
from dpt_ros.core.conversions import FrameError
from dpt_ros.core.geometry import IntrinsicsError
from dpt_ros.core.metric import Anchors
from dpt_ros.core.models import load_model, ModelLoadError, move_model, resolve_device
from dpt_ros.core.outputs import DEPTH_TASK, EncodeOptions, FRAME_STAGES, SEGMENTATION_TASK
from dpt_ros.core.params import param_table, ParamSpec
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.ros.scheduler import Handoff, Job, Scheduler, Taken

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
except ImportError:  # Humble
    try:
        from rclpy.qos_event import SubscriptionEventCallbacks, UnsupportedEventTypeError
    except ImportError:
        SubscriptionEventCallbacks = UnsupportedEventTypeError = None

RCLError = _rclpy.RCLError

_OWN_GROUPS = tuple(sorted({name.split('.')[0] + '.' for name, *_ in iter_settings()}))
CLASS_NAMES_PARAM = 'segmentation.class_names'
_WARN_PERIOD_S = 5.0
# Transport loss is judged over windows of this many frames (received + lost) per camera.
_LOSS_WINDOW = 20
# Frames larger than one UDP datagram travel in fragments: with Fast DDS defaults a
# best-effort reader between processes loses the whole frame when one fragment is late.
_LARGE_FRAME_BYTES = 64 * 1024


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """Build the ParameterDescriptor for one table entry (what `ros2 param describe` shows)."""
    d = ParameterDescriptor(description=spec.describe(), read_only=spec.read_only,
                            additional_constraints=f'allowed: {spec.constraint()}')
    if spec.type is float:
        # Doubles accept YAML integers ('max: 10'), which static typing would refuse; the
        # value is checked and converted by Config validation instead.
        d.type = ParameterType.PARAMETER_DOUBLE
        d.dynamic_typing = True
        if spec.range is not None:
            d.floating_point_range = [FloatingPointRange(
                from_value=float(spec.range[0]), to_value=float(spec.range[1]), step=0.0)]
    elif spec.type is tuple:
        d.type = ParameterType.PARAMETER_STRING_ARRAY
    elif spec.type is int and spec.range is not None:
        d.integer_range = [IntegerRange(from_value=int(spec.range[0]),
                                        to_value=int(spec.range[1]), step=1)]
    return d


class _Stats:
    """Counters and bounded latency windows for /diagnostics (never grows)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received = self.processed = self.dropped = self.errors = 0
        self.lost = 0  # reported lost in transport by the middleware (message_lost events)
        self.last = (0, 0, 0, 0)  # received, processed, dropped, lost at the last report
        self._window = (0, 0)  # received, lost when the current loss window began
        self.last_t = time.monotonic()
        self.stages: Dict[str, Deque[float]] = {s: deque(maxlen=200) for s in FRAME_STAGES}
        self.total: Deque[float] = deque(maxlen=200)
        self.age: Deque[float] = deque(maxlen=200)

    def add_timings(self, timings: Dict[str, float], total_ms: float, age_ms: float) -> None:
        """Count one processed frame with its stage timings, latency and age."""
        with self.lock:
            self.processed += 1
            for k, v in timings.items():
                if k in self.stages:
                    self.stages[k].append(v)
            self.total.append(total_ms)
            self.age.append(age_ms)

    def add_lost(self, count: int) -> Optional[Tuple[int, int]]:
        """Count frames lost in transport; at the end of a loss window return (lost, seen) in it.

        A window ends once _LOSS_WINDOW frames were seen (received + lost) since it began.
        """
        with self.lock:
            self.lost += count
            rec0, lost0 = self._window
            lost, seen = self.lost - lost0, self.received - rec0 + self.lost - lost0
            if seen < _LOSS_WINDOW:
                return None
            self._window = (self.received, self.lost)
            return lost, seen

    def report(self) -> Tuple[Dict[str, str], bool]:
        """Rates since the last report, counters and latency; and whether frames go unused."""
        now = time.monotonic()
        with self.lock:
            dt = max(now - self.last_t, 1e-6)
            rec, proc, drop, lost = self.received, self.processed, self.dropped, self.lost
            rates = ((rec - self.last[0]) / dt, (proc - self.last[1]) / dt, drop - self.last[2],
                     lost - self.last[3], rec - self.last[0])
            self.last, self.last_t = (rec, proc, drop, lost), now
            total = sorted(self.total)
            age = statistics.median(self.age) if self.age else float('nan')
            errors = self.errors
        values = {
            'input_rate_hz': f'{rates[0]:.2f}', 'output_rate_hz': f'{rates[1]:.2f}',
            'frames_received': str(rec), 'frames_processed': str(proc),
            'frames_dropped': str(drop), 'dropped_since_last_report': str(rates[2]),
            'frames_lost': str(lost), 'lost_since_last_report': str(rates[3]),
            'received_since_last_report': str(rates[4]), 'bad_frames': str(errors),
            'latency_p50_ms': f'{_pct(total, 50):.2f}',
            'latency_p95_ms': f'{_pct(total, 95):.2f}', 'frame_age_p50_ms': f'{age:.2f}',
        }
        return values, bool(rec and not proc)

    def stage_p50(self) -> Dict[str, str]:
        """Per-stage p50 in ms, as /diagnostics values."""
        with self.lock:
            return {f'{k}_p50_ms': f'{statistics.median(v):.2f}'
                    for k, v in self.stages.items() if v}


def _pct(ordered: List[float], q: float) -> float:
    if not ordered:
        return float('nan')
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class _Throttle:
    """Warn at most once per period per problem kind, counting what was suppressed."""

    def __init__(self, log: Any, period: float = _WARN_PERIOD_S) -> None:
        self.log = log
        self.period = period
        self.last: Dict[str, Tuple[float, int]] = {}

    def __call__(self, key: str, text: str) -> None:
        now = time.monotonic()
        t, suppressed = self.last.get(key, (-1e9, 0))
        if now - t < self.period:
            self.last[key] = (t, suppressed + 1)
            return
        more = f' ({suppressed} more like this suppressed)' if suppressed else ''
        self.log.warning(text + more)
        self.last[key] = (now, 0)


class Camera:
    """One camera's topics, calibration, output publishers and counters."""

    def __init__(self, name: str) -> None:
        self.name = name  # '' for the single camera of a node without `cameras`
        self.prefix = name.rstrip('/') + '/' if name else ''
        self.image_topic = self.info_topic = ''
        self.image_type: Any = Image
        self.camera_info: Optional[CameraInfo] = None
        self.pubs: Dict[str, Any] = {}  # output name -> publisher
        self.subs: Dict[str, Any] = {}  # topic -> subscription
        self.sub_reliability: Dict[str, ReliabilityPolicy] = {}
        self.frame_bytes = 0  # size of the last image received (the loss warning's 'large')
        self.stats = _Stats()
        self.anchors: Optional[AnchorInput] = None  # with anchors.source, while active
        self.anchor_topics: Tuple[str, ...] = ()
        self.suspended = False  # depth.mode fitted: no metres for want of anchors

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


class _Frame:
    """A decoded frame of one camera on its way through a batch."""

    def __init__(self, cam: Camera, taken: Taken, frame: Any, want: FrozenSet[str],
                 intr: Any, info: Any, decode_ms: float) -> None:
        self.cam, self.taken, self.frame, self.want = cam, taken, frame, want
        self.intr, self.info, self.decode_ms = intr, info, decode_ms
        self.anchors: Optional[Anchors] = None  # paired by stamp (depth.mode fitted)

    @property
    def group(self) -> Tuple[Tuple[int, ...], str]:
        """Frames with the same key share a forward (same size and pixel layout)."""
        return self.frame.pixels.shape, self.frame.layout


class _DptCore:
    """What the plain and the managed (lifecycle) node share.

    configure: read and validate the parameters, load the weights into host memory;
    activate: move them to the device, advertise, subscribe; deactivate: unsubscribe,
    unadvertise, free device memory; cleanup: free everything. One worker thread does all
    torch work (loading, moving, every frame): on the CPU a forward from a thread other than
    the one whose OpenMP pool ran the loading is slower, and on CUDA it keeps the current
    device and stream in one thread. With output.overlap a second thread fills and publishes
    a batch's outputs while the worker runs the next forward (scheduler.Handoff: one batch in
    flight, the worker waits for it, nothing queues).
    """

    def _init_core(self, pipeline: Optional[Pipeline]) -> None:
        """Set up state and declare the parameters (ConfigError for a wrongly typed one)."""
        self._warn = _Throttle(self.get_logger())
        self._warned_once: set = set()
        self._given_pipeline = pipeline
        self._pipeline: Optional[Pipeline] = None
        self._building: Optional[Pipeline] = None  # being warmed up on the worker
        self._host_models: Dict[str, Any] = {}  # task -> LoadedModel kept between activations
        self._cfg: Optional[Config] = None
        self._cameras: List[Camera] = []
        self._scheduler: Optional[Scheduler] = None
        self._worker: Optional[threading.Thread] = None
        self._handoff: Optional[Handoff] = None
        self._stage_stats = _Stats()
        self._batch_sizes: Dict[int, int] = {}
        self._timers: List[Any] = []
        self._diag_pub = self._label_pub = None
        self._labels: List[str] = []
        self._declare_parameters()
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ------------------------------------------------------------------ parameters

    def _declare_parameters(self) -> None:
        """Declare every table parameter (values are validated by _read_config)."""
        overrides = dict(getattr(self, '_parameter_overrides', {}) or {})
        for spec in param_table():
            # An empty list has no type of its own in rclpy: declare string arrays by type.
            default = (list(spec.default) or Parameter.Type.STRING_ARRAY) \
                if spec.type is tuple else spec.default
            try:
                self.declare_parameter(spec.name, default, _descriptor(spec))
            except Exception as exc:  # noqa: B902 - rclpy raises several types here
                given = overrides.get(spec.name)
                shown = f' = {given.value!r}' if given is not None else ''
                raise ConfigError(f'parameter {spec.name}{shown}: {exc} '
                                  f'(allowed: {spec.constraint()}).') from exc
        unknown = sorted(n for n in overrides if n.startswith(_OWN_GROUPS)
                         and not self.has_parameter(n) and n != CLASS_NAMES_PARAM)
        if unknown:
            known = ', '.join(p.name for p in param_table())
            raise ConfigError(f"unknown parameter(s) {', '.join(unknown)}; known: {known}.")

    def _flat_parameters(self) -> Dict[str, Any]:
        return {spec.name: self._parameter_value(spec.name) for spec in param_table()}

    def _parameter_value(self, name: str) -> Any:
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:
            return None  # a list declared by type and not given (an empty list)

    def _read_config(self) -> Config:
        """Return the validated config from the parameters in force (ConfigError if bad)."""
        return config_from_flat(self._flat_parameters())

    def _on_set_parameters(self, params: List[Parameter]) -> SetParametersResult:
        names = {p.name for p in param_table()}
        changes = {p.name: p.value for p in params if p.name in names}
        if not changes:
            return SetParametersResult(successful=True)
        flat = self._flat_parameters()
        flat.update(changes)
        try:
            cfg = config_from_flat(flat)
            if self._pipeline is not None:
                self._pipeline.update(cfg)  # checked against the model; applies next frame
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if self._cfg is not None:
            self._cfg = cfg
        self.get_logger().info(
            'parameters updated: ' + ', '.join(f'{k}={v!r}' for k, v in changes.items()))
        return SetParametersResult(successful=True)

    @property
    def config(self) -> Optional[Config]:
        """The settings in force (None before configuration)."""
        return self._cfg

    @property
    def pipeline(self) -> Optional[Pipeline]:
        """The pipeline this node runs (None unless active)."""
        return self._pipeline

    @property
    def cameras(self) -> List[Camera]:
        """The cameras this node serves (one unnamed camera without `cameras`)."""
        return list(self._cameras)

    # ------------------------------------------------------------------ transitions

    def _configure(self) -> None:
        """Validate the parameters, start the worker and load the weights into host memory."""
        self._cfg = self._read_config()
        self._cameras = [Camera(n) for n in (self._cfg.cameras or ('',))]
        self._scheduler = Scheduler([c.name for c in self._cameras])
        self._handoff = Handoff(on_error=self._publish_failed)
        self._worker = threading.Thread(target=self._work, name='dpt_worker', daemon=True)
        self._worker.start()
        if self._given_pipeline is None:
            self._in_worker(self._load_host_models)

    def _activate(self) -> None:
        """Put the models on the device, then advertise, subscribe and report."""
        self._pipeline = self._in_worker(self._make_pipeline)
        self._labels = self._pipeline.labels
        if not self.has_parameter(CLASS_NAMES_PARAM):
            self.declare_parameter(
                CLASS_NAMES_PARAM, self._labels or Parameter.Type.STRING_ARRAY,
                ParameterDescriptor(description='Class names of the segmentation model, by id '
                                    '(index = value in segmentation/image). Read-only.',
                                    read_only=True))
        self._open_topics()
        self._handoff.open()
        info = self._pipeline.describe()
        inputs = '; '.join(' + '.join((c.image_topic, c.info_topic) + c.anchor_topics)
                           for c in self._cameras)
        self.get_logger().info(
            f"dpt_ros ready: {', '.join(f'{k}={v}' for k, v in info.items())}; input {inputs}")
        if self._labels:
            self.get_logger().info(f'segmentation classes: {self._labels}')

    def _deactivate(self) -> None:
        """Stop subscribing and publishing, drop waiting frames, free device memory."""
        self._close_topics()
        if self._scheduler is not None:
            self._scheduler.clear()
            # A batch in its forward now is dropped at its hand-off (the Handoff is closed).
            self._in_worker(self._free_device)

    def _cleanup(self) -> None:
        """Release everything configure made: the worker, the weights, the cameras."""
        self._close_topics()
        self._stop_worker()
        if self._pipeline is not None:
            self._pipeline.close()
        self._pipeline = None
        self._host_models = {}
        self._cameras = []
        self._scheduler = None
        self._cfg = None
        gc.collect()

    # ------------------------------------------------------------------ worker jobs

    def _in_worker(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the worker thread and return its result (raise what it raised).

        On Ctrl-C meanwhile, let fn finish (a process that exits while a thread is inside
        torch's C++ aborts), stop the worker, then re-raise.
        """
        job = self._scheduler.submit(fn)
        try:
            job.done.wait()
        except BaseException:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the second Ctrl-C of launch
            building = self._building
            if building is not None:
                building.cancel()  # an engine build stops at its next step
            self._scheduler.stop()
            job.done.wait()
            self._worker.join(timeout=10.0)
            raise
        return job.result()

    def _load_host_models(self) -> None:
        """Load every configured checkpoint into host memory (worker thread)."""
        m = self._cfg.model
        for task, source in ((DEPTH_TASK, m.depth), (SEGMENTATION_TASK, m.segmentation)):
            if source:
                self._host_models[task] = load_model(source, task, m, self.get_logger().info,
                                                     on_host=True)

    def _make_pipeline(self) -> Pipeline:
        """Move the host models to the device and build the pipeline (worker thread)."""
        if self._given_pipeline is not None:
            self._given_pipeline.update(self._cfg)
            return self._given_pipeline
        device = resolve_device(self._cfg.model.device)
        for model in self._host_models.values():
            move_model(model, device)
        pipe = Pipeline(self._cfg, log=self.get_logger().info,
                        depth_model=self._host_models.get(DEPTH_TASK),
                        seg_model=self._host_models.get(SEGMENTATION_TASK))
        # First-frame work (engine build or load, graph capture) now, not on a robot's first
        # frame; Ctrl-C meanwhile cancels it (_in_worker).
        self._building = pipe
        try:
            pipe.prepare()
        finally:
            self._building = None
        return pipe

    def _free_device(self) -> None:
        """Back to host memory: close the pipeline, move the weights home (worker thread)."""
        if self._pipeline is None or self._pipeline is self._given_pipeline:
            self._pipeline = None
            return
        self._pipeline.close()
        self._pipeline = None
        for model in self._host_models.values():
            move_model(model, torch.device('cpu'))
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _stop_worker(self) -> None:
        if self._handoff is not None:
            self._handoff.close()  # wakes a worker waiting to hand a batch over
        if self._scheduler is not None:
            self._scheduler.stop()
        if self._worker is not None and self._worker.is_alive() and \
                threading.current_thread() is not self._worker:
            self._worker.join(timeout=10.0)
        self._worker = None
        if self._handoff is not None:
            self._handoff.stop()
        self._handoff = None

    # ------------------------------------------------------------------ topics and QoS

    def _open_topics(self) -> None:
        cfg = self._cfg
        out_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=cfg.output.history_depth,
            reliability=(ReliabilityPolicy.RELIABLE if cfg.output.reliability == 'reliable'
                         else ReliabilityPolicy.BEST_EFFORT))
        compressed = cfg.input.transport == 'compressed'
        for cam in self._cameras:
            # Advertise only what this node can publish: no segmentation topics without a
            # segmentation model, no depth topics without a depth model (depth.mode is live,
            # so a depth model gets all of them).
            cam.pubs = {o.name: self.create_publisher(conv.msg_class(o.msg_type),
                                                      cam.prefix + o.topic, out_qos)
                        for o in outputs.OUTPUTS
                        if self._pipeline.model_for(o.task) is not None}
            base = self._resolve(cam.prefix + 'image')
            cam.image_topic = base + '/compressed' if compressed else base
            cam.image_type = CompressedImage if compressed else Image
            cam.info_topic = self._resolve(cam.prefix + 'camera_info')
            self._open_anchors(cam, cfg.anchors.source)
            self._subscribe_camera(cam)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._publish_label_info()
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        # Timers on the steady clock: under use_sim_time a paused bag must not stop them.
        self._timers = [self.create_timer(cfg.diagnostics.period, self._diagnostics,
                                          clock=steady)]
        if cfg.input.reliability == 'auto' or cfg.anchors.source != 'none':
            self._timers.append(self.create_timer(1.0, self._match_publishers, clock=steady))

    def _close_topics(self) -> None:
        """Unsubscribe, finish (or drop) the batch being published, then unadvertise."""
        for timer in self._timers:
            self.destroy_timer(timer)
        self._timers = []
        for cam in self._cameras:
            for sub in cam.subs.values():
                self.destroy_subscription(sub)
            cam.subs, cam.sub_reliability = {}, {}
        if self._handoff is not None:
            # From here on no batch is published: the publishers can go.
            self._handoff.close()
        for cam in self._cameras:
            for pub in cam.pubs.values():
                self.destroy_publisher(pub)
            cam.pubs = {}
            cam.anchors, cam.anchor_topics, cam.suspended = None, (), False
        for pub in (self._diag_pub, self._label_pub):
            if pub is not None:
                self.destroy_publisher(pub)
        self._diag_pub = self._label_pub = None

    def _resolve(self, name: str) -> str:
        """Fully qualified, remapped topic name (image_transport appends '/compressed')."""
        if hasattr(self, 'resolve_topic_name'):
            return self.resolve_topic_name(name)
        ns = self.get_namespace().rstrip('/')
        return name if name.startswith('/') else f'{ns}/{name}'

    def _reliability(self, cam: Camera, topic: str) -> ReliabilityPolicy:
        """Return the configured reliability, or in 'auto' what the publishers offer.

        Anchor topics always follow their publishers: lidar and depth drivers often publish
        best effort, which a reliable subscription would never receive.
        """
        choice = 'auto' if topic in cam.anchor_topics else self._cfg.input.reliability
        if choice == 'reliable':
            return ReliabilityPolicy.RELIABLE
        if choice == 'best_effort':
            return ReliabilityPolicy.BEST_EFFORT
        offered = [i.qos_profile.reliability for i in self.get_publishers_info_by_topic(topic)]
        if not offered:
            return cam.sub_reliability.get(topic, ReliabilityPolicy.RELIABLE)
        # A reliable subscription cannot match a best-effort publisher; the reverse works.
        if any(r == ReliabilityPolicy.BEST_EFFORT for r in offered):
            return ReliabilityPolicy.BEST_EFFORT
        return ReliabilityPolicy.RELIABLE

    def _inputs(self, cam: Camera) -> List[Tuple[str, Any, Callable[[Any], None]]]:
        return [(cam.image_topic, cam.image_type, lambda msg: self._on_image(cam, msg)),
                (cam.info_topic, CameraInfo, lambda msg: setattr(cam, 'camera_info', msg))]

    def _open_anchors(self, cam: Camera, source: str) -> None:
        """Give a camera its anchor stream and topic names (anchors.source; read-only)."""
        if source == 'none':
            cam.anchors, cam.anchor_topics = None, ()
            return
        cam.anchors = AnchorInput(source)
        names = ('anchors/points',) if source == 'points' else \
            ('anchors/depth', 'anchors/camera_info')
        cam.anchor_topics = tuple(self._resolve(cam.prefix + n) for n in names)

    def _anchor_inputs(self, cam: Camera) -> List[Tuple[str, Any, Callable[[Any], None]]]:
        a = cam.anchors
        if a is None:
            return []
        if a.source == 'points':
            return [(cam.anchor_topics[0], PointCloud2, a.add)]
        return [(cam.anchor_topics[0], Image, a.add),
                (cam.anchor_topics[1], CameraInfo, a.set_info)]

    def _subscribe_camera(self, cam: Camera, only_changed: bool = False) -> None:
        for topic, msg_type, callback in self._inputs(cam) + self._anchor_inputs(cam):
            rel = self._reliability(cam, topic)
            if only_changed and rel == cam.sub_reliability.get(topic):
                continue
            if only_changed:
                name = 'best_effort' if rel == ReliabilityPolicy.BEST_EFFORT else 'reliable'
                self.get_logger().info(f'{topic}: publisher offers {name}; resubscribing {name}')
            old = cam.subs.pop(topic, None)
            if old is not None:
                self.destroy_subscription(old)
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=rel)
            lost = (lambda info: self._on_lost(cam, info)) if topic == cam.image_topic else None
            cam.subs[topic] = self._create_subscription(msg_type, topic, callback, qos, lost)
            cam.sub_reliability[topic] = rel

    def _create_subscription(self, msg_type: Any, topic: str, callback: Callable[[Any], None],
                             qos: QoSProfile, on_lost: Optional[Callable[[Any], None]]) -> Any:
        """Subscribe; with on_lost, also to the middleware's lost-message events if it has them."""
        if on_lost is not None and SubscriptionEventCallbacks is not None:
            try:
                return self.create_subscription(
                    msg_type, topic, callback, qos,
                    event_callbacks=SubscriptionEventCallbacks(message_lost=on_lost))
            except UnsupportedEventTypeError as exc:
                self.get_logger().debug(
                    f'{topic}: the middleware does not report lost messages ({exc}); '
                    'frames_lost stays 0')
        elif on_lost is not None:
            self.get_logger().debug(
                'this rclpy has no SubscriptionEventCallbacks: frames_lost stays 0')
        return self.create_subscription(msg_type, topic, callback, qos)

    def _match_publishers(self) -> None:
        """With reliability 'auto', follow the publishers' QoS when a camera (re)appears."""
        for cam in self._cameras:
            self._subscribe_camera(cam, only_changed=True)

    def _publish_label_info(self) -> None:
        """Publish vision_msgs/LabelInfo (transient local) when vision_msgs is installed."""
        self._label_pub = None
        if not self._labels:
            return
        try:
            from vision_msgs.msg import LabelInfo, VisionClass
        except ImportError:
            return
        from rclpy.qos import DurabilityPolicy
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._label_pub = self.create_publisher(LabelInfo, outputs.TOPIC_LABEL_INFO, qos)
        msg = LabelInfo()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.class_map = [VisionClass(class_id=i, class_name=n) for i, n in enumerate(self._labels)]
        self._label_pub.publish(msg)

    # ------------------------------------------------------------------ callbacks

    def _on_image(self, cam: Camera, msg: Any) -> None:
        # Only keep the newest frame per camera; the worker takes it when free (arrival
        # order, never stamps, so a looping bag or a clock jump cannot stall it).
        scheduler = self._scheduler
        if scheduler is None:
            return
        dropped = scheduler.put(cam.name, msg)
        cam.frame_bytes = len(msg.data)
        with cam.stats.lock:
            cam.stats.received += 1
            cam.stats.dropped += int(dropped)

    def _on_lost(self, cam: Camera, info: Any) -> None:
        """Count frames the middleware lost; warn once when a large best-effort stream loses most.

        info is rmw_message_lost_status_t (total_count, total_count_change).
        """
        window = cam.stats.add_lost(int(info.total_count_change))
        if window is None or 'transport_loss' in self._warned_once:
            return
        lost, seen = window
        best_effort = cam.sub_reliability.get(cam.image_topic) == ReliabilityPolicy.BEST_EFFORT
        large = cam.frame_bytes == 0 or cam.frame_bytes >= _LARGE_FRAME_BYTES  # 0: none came
        if not (best_effort and large and 2 * lost > seen):
            return
        self._warned_once.add('transport_loss')
        size = f'{cam.frame_bytes / 1e6:.1f} MB frames' if cam.frame_bytes else 'no frame arrived'
        profile = os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE') or \
            os.environ.get('FASTRTPS_DEFAULT_PROFILES_FILE')
        fix = (f'this node runs with the Fast DDS profile {profile}: run the camera driver '
               'with it too' if profile else 'run the camera driver and this node with the '
               'shipped profile config/fastdds_large_frames.xml (`ros2 launch dpt_ros '
               'dpt.launch.py large_frames:=true`, or FASTDDS_DEFAULT_PROFILES_FILE)')
        self.get_logger().warning(
            f'{cam.label}: {lost} of the last {seen} frames on {cam.image_topic} were lost in '
            f'transport (best-effort subscription, {size}). With Fast DDS defaults most large '
            f'best-effort frames between processes are lost: {fix}, or publish the camera '
            'reliable. /diagnostics counts them (frames_lost).')

    # ------------------------------------------------------------------ worker

    def _work(self) -> None:
        """Run jobs and batches on the worker thread until stopped."""
        scheduler, handoff = self._scheduler, self._handoff
        by_name = {c.name: c for c in self._cameras}
        while True:
            item = scheduler.next(lambda: self._cfg.batch.max_size,
                                  lambda: self._cfg.batch.max_wait_ms / 1e3)
            if item is None:
                return
            if isinstance(item, Job):
                item()
                del item  # its result may be a pipeline: hold no reference while waiting
                continue
            if self._pipeline is None:
                continue  # frames that arrived just before deactivation
            try:
                self._handle_batch([(by_name[t.camera], t) for t in item], handoff)
            except Exception as exc:  # noqa: B902 - the worker must outlive any frame
                if scheduler.stopped or not self.context.ok():
                    return  # Ctrl-C: rclpy shut the context down while a frame was in flight
                for cam, _ in ((by_name[t.camera], t) for t in item):
                    with cam.stats.lock:
                        cam.stats.errors += 1
                self._warn('internal', f'frame failed: {exc!r}\n{traceback.format_exc()}')

    def _intrinsics(self, cam: Camera, width: int, height: int) -> Tuple[Any, Any]:
        """(Intrinsics, CameraInfo) usable for this frame size, or (None, None) with a warning."""
        info = cam.camera_info
        if info is None:
            if ('no_info', cam.name) not in self._warned_once:
                self._warned_once.add(('no_info', cam.name))
                self.get_logger().warning(
                    f'no camera_info received on {cam.info_topic} yet: publishing depth '
                    'without points and depth/camera_info until it arrives.')
            return None, None
        try:
            intr = conv.intrinsics_from_camera_info(info, self._cfg.input.rectified)
            intr.check(width, height)
        except (IntrinsicsError, ValueError) as exc:
            self._warn('bad_info' + cam.name, f'camera_info on {cam.info_topic} unusable '
                       f'({exc}); publishing depth without points for this frame.')
            return None, None
        return intr, info

    def _decode(self, cam: Camera, taken: Taken, cfg: Config) -> Optional[_Frame]:
        """Decode one taken frame; None when no one listens or it is unusable (warned)."""
        want = cam.wanted()
        if not want:
            return None  # no one listens: spend nothing
        t0 = time.perf_counter()
        try:
            if isinstance(taken.msg, CompressedImage):
                frame = conv.decode_compressed(taken.msg)
            else:
                frame = conv.decode_image(taken.msg)
        except FrameError as exc:
            with cam.stats.lock:
                cam.stats.errors += 1
            self._warn('frame' + cam.name, f'skipping frame from {cam.image_topic}: {exc}')
            return None
        decode_ms = (time.perf_counter() - t0) * 1e3
        intr = info = None
        fitted = cam.anchors is not None and self._pipeline.depth_mode(cfg) == 'fitted'
        if fitted or want & {'points', 'depth', 'depth_info'}:
            intr, info = self._intrinsics(cam, frame.width, frame.height)
        if 'points' in want and self._pipeline.depth_mode() == 'relative_inverse' and \
                'relative_points' not in self._warned_once:
            self._warned_once.add('relative_points')
            self.get_logger().warning(
                'points need metric depth: the depth model is relative (depth.mode '
                f"'{cfg.depth.mode}'). Set depth.mode to 'metric' or 'affine_inverse' with "
                'depth.scale/depth.shift, or use a metric checkpoint.')
        if intr is None:
            want = want - {'points'}
        out = _Frame(cam, taken, frame, want, intr, info, decode_ms)
        if fitted:  # anchor decoding is timed as part of the frame's decode stage
            t1 = time.perf_counter()
            out.anchors = self._pair_anchors(out, cfg)
            out.decode_ms += (time.perf_counter() - t1) * 1e3
        return out

    def _pair_anchors(self, f: _Frame, cfg: Config) -> Optional[Anchors]:
        """Return the anchors nearest in stamp to a frame; None (warned) if unusable."""
        cam, header = f.cam, f.taken.msg.header
        try:
            return cam.anchors.for_frame(conv.stamp_ns(header), (f.frame.width, f.frame.height),
                                         f.intr, str(header.frame_id), cfg.anchors)
        except AnchorError as exc:
            # Throttled per camera and kind of problem: a driver sending the same bad
            # message at 30 Hz logs once a period, a second problem still gets its line.
            self._warn(f'anchors:{cam.name}:{str(exc)[:40]}',
                       f'skipping the anchors on {cam.anchor_topics[0]} for a frame of '
                       f'{cam.label}: {exc}')
            return None

    def _handle_batch(self, taken: List[Tuple[Camera, Taken]], handoff: Handoff) -> None:
        """Decode, run frames of one size and layout as one forward, publish per camera."""
        cfg = self._cfg  # one snapshot for the whole batch
        frames = [f for f in (self._decode(cam, t, cfg) for cam, t in taken) if f is not None]
        groups: Dict[Tuple, List[_Frame]] = {}
        for f in frames:
            groups.setdefault(f.group, []).append(f)
        for group in groups.values():
            # One forward for the group, computing what any of its cameras wants; each camera
            # then publishes only what its own subscribers want.
            want = frozenset().union(*(f.want for f in group))
            # Each camera is its own source: depth.temporal follows every camera separately,
            # by its image stamps.
            results = self._pipeline.process_batch(
                [f.frame for f in group], [f.intr for f in group], want,
                anchors=[f.anchors for f in group], sources=[f.cam.name for f in group],
                stamps=[conv.stamp_ns(f.taken.msg.header) / 1e9 for f in group])
            with self._stage_stats.lock:
                self._batch_sizes[len(group)] = self._batch_sizes.get(len(group), 0) + 1
            for f, result in zip(group, results):
                self._note_fit(f.cam, result)
            done = list(zip(group, results))
            # Fill and publish on the publishing thread while this one runs the next forward
            # (waits here while the previous batch is still being published).
            handoff.submit(lambda done=done: self._publish_batch(done, cfg), cfg.output.overlap)

    def _publish_batch(self, done: List[Tuple[_Frame, Any]], cfg: Config) -> None:
        """Publish every camera's outputs of one forward (publishing thread, or the worker)."""
        for f, result in done:
            try:
                self._publish(f, result, cfg)
            except Exception:  # noqa: B902 - one camera's failure must not lose the others'
                if not self.context.ok():
                    return  # Ctrl-C: rclpy shut the context down while publishing
                with f.cam.stats.lock:
                    f.cam.stats.errors += 1
                self._publish_failed()

    def _publish_failed(self, _exc: Optional[BaseException] = None) -> None:
        """Warn about a failed publication (inside its except block)."""
        self._warn('publish', f'publishing failed:\n{traceback.format_exc()}')

    def _note_fit(self, cam: Camera, result: Any) -> None:
        """Log when a camera's metres come back after an outage (the stop was warned)."""
        if cam.anchors is None or result.mode != 'fitted' or result.fit is None:
            return
        if cam.suspended and result.fit.metric:
            self.get_logger().info(f'{cam.label}: anchors are back; publishing metres again.')
        cam.suspended = not result.fit.metric

    def _publish(self, f: _Frame, result: Any, cfg: Config) -> None:
        cam, header = f.cam, f.taken.msg.header
        for w in result.warnings:
            self._warn('result:' + cam.name + w[:40], w)
        t1 = time.perf_counter()
        encoded = outputs.encode(result, EncodeOptions(cfg.depth.encoding, f.info is not None),
                                 f.want)
        # Serialized CDR straight from the arrays (dpt_ros.core.cdr): rclpy publishes bytes as
        # they are, without building a message and copying the arrays into it.
        data = [(cam.pubs[o.name], cdr.fields_to_cdr(o.msg_type, fields, header, f.info))
                for o, fields in encoded if cam.subscribed(o.name)]
        t2 = time.perf_counter()
        for pub, out in data:
            pub.publish(out)
        t3 = time.perf_counter()
        timings = dict(result.timings, decode=f.decode_ms, fill=(t2 - t1) * 1e3,
                       publish=(t3 - t2) * 1e3)
        total_ms = (time.monotonic() - f.taken.arrived) * 1e3
        age_ms = (self.get_clock().now().nanoseconds - conv.stamp_ns(header)) / 1e6
        cam.stats.add_timings(timings, total_ms, age_ms)
        self._stage_stats.add_timings(timings, total_ms, age_ms)

    # ------------------------------------------------------------------ diagnostics

    def _status(self, name: str, values: Dict[str, str], idle: bool) -> DiagnosticStatus:
        status = DiagnosticStatus()
        status.name = name
        status.hardware_id = values.get('gpu', values.get('device', ''))
        rates = (float(values.get('input_rate_hz', 0)), float(values.get('output_rate_hz', 0)),
                 int(values.get('dropped_since_last_report', 0)))
        lost, got = int(values.get('lost_since_last_report', 0)), \
            int(values.get('received_since_last_report', 0))
        status.level = DiagnosticStatus.OK
        if lost > got:
            status.level = DiagnosticStatus.WARN
            status.message = 'most input frames are lost in transport (frames_lost; see the log)'
        elif idle:
            status.level = DiagnosticStatus.WARN
            status.message = 'frames arrive but none were processed (no subscribers?)'
        elif values.get('metric_suspended') == 'true':
            status.level = DiagnosticStatus.WARN
            # The fit state says why: no anchors, refused (and the test), degenerate.
            status.message = (f"no metres ({values.get('fit_state', 'no anchors')}): "
                              'depth/image and points suspended')
        elif rates[2] and rates[1] < 0.5 * rates[0]:
            status.message = 'keeping up with the newest frame, dropping older ones'
        else:
            status.message = 'ok'
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        return status

    def diagnostics_status(self) -> List[DiagnosticStatus]:
        """Build the /diagnostics statuses: the node, then one per named camera.

        Without `cameras` the node's status also holds its camera's counters and latency.
        """
        fqn = self.get_fully_qualified_name()
        node_values: Dict[str, str] = {}
        idle = False
        named = bool(self._cfg.cameras)
        if not named:
            node_values, idle = self._cameras[0].stats.report()
        node_values.update(self._stage_stats.stage_p50())
        with self._stage_stats.lock:
            sizes = dict(sorted(self._batch_sizes.items()))
        forwards = sum(sizes.values())
        node_values['batches'] = str(forwards)
        node_values['mean_batch_size'] = \
            f'{sum(k * v for k, v in sizes.items()) / forwards:.2f}' if forwards else 'nan'
        node_values['max_batch_size'] = str(max(sizes, default=0))
        node_values.update(self._pipeline.describe() if self._pipeline else {})
        if not named:
            node_values['input_topic'] = self._cameras[0].image_topic
            node_values.update(self._anchor_values(self._cameras[0]))
            return [self._status(f'dpt_ros: {fqn}', node_values, idle)]
        node_values['cameras'] = ', '.join(c.name for c in self._cameras)
        out = [self._status(f'dpt_ros: {fqn}', node_values, False)]
        for cam in self._cameras:
            values, cam_idle = cam.stats.report()
            values['input_topic'] = cam.image_topic
            values.update(self._anchor_values(cam))
            out.append(self._status(f'dpt_ros: {fqn} camera {cam.name}', values, cam_idle))
        return out

    def _anchor_values(self, cam: Camera) -> Dict[str, str]:
        """Return a camera's anchor counters and, in depth.mode fitted, its last fit."""
        a, pipe = cam.anchors, self._pipeline
        if a is None or pipe is None:
            return {}
        values = {'anchors_topic': cam.anchor_topics[0], 'anchor_messages': str(a.messages),
                  'frames_with_anchors': str(a.paired),
                  'frames_without_anchors': str(a.unpaired),
                  'frames_with_bad_anchors': str(a.bad)}
        if pipe.depth_mode() != 'fitted':
            return values
        rep = pipe.fit_report(cam.name)
        values.update({
            'anchors_received': str(rep.received), 'anchors_used': str(rep.used),
            'anchors_inliers': str(rep.inliers), 'scale': f'{rep.scale:.6g}',
            'shift': f'{rep.shift:.6g}', 'residual_absrel': f'{rep.residual:.4f}',
            'fit_age_s': f'{rep.age:.3f}', 'fit_state': rep.state or 'no frames yet',
            'fit_held': str(rep.held).lower(),
            'metric_suspended': str(bool(rep.state) and not rep.metric).lower()})
        return values

    def _diagnostics(self) -> None:
        if self._diag_pub is None:
            return
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = self.diagnostics_status()
        self._diag_pub.publish(arr)

    @property
    def dropped(self) -> int:
        """Frames replaced by a newer one before the worker took them (all cameras)."""
        return sum(c.stats.dropped for c in self._cameras)

    @property
    def processed(self) -> int:
        """Frames fully processed and published (all cameras)."""
        return sum(c.stats.processed for c in self._cameras)

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        """Stop the worker and the publishing, free the models (idempotent)."""
        for pipe in (self._building, self._pipeline):
            if pipe is not None:
                pipe.cancel()  # an engine build stops at its next step
        self._stop_worker()  # no batch is published after this: the publishers can go
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None
        self._host_models = {}


class DptNode(_DptCore, Node):
    """Depth, point clouds and segmentation from one or more cameras with DPT models."""

    def __init__(self, node_name: str = 'dpt', *, pipeline: Optional[Pipeline] = None,
                 **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._init_core(pipeline)
        try:
            self._configure()
            self._activate()
        except BaseException:
            self.close()
            raise

    def destroy_node(self) -> None:
        """Stop the worker before the node's handles go away."""
        if hasattr(self, '_scheduler'):
            self.close()
        super().destroy_node()


class DptLifecycleNode(_DptCore, LifecycleNode):
    """The same node, managed: `ros2 lifecycle set`, nav2's lifecycle manager.

    unconfigured: parameters declared, nothing loaded; configure: parameters validated,
    weights loaded into host memory; activate: weights on the device, topics advertised and
    subscribed; deactivate: topics gone, device memory freed (weights stay in host memory);
    cleanup / shutdown: everything released. A failed transition logs why and leaves the
    node in the state it came from.
    """

    def __init__(self, node_name: str = 'dpt', *, pipeline: Optional[Pipeline] = None,
                 **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._init_core(pipeline)
        # rclpy (Humble to Kilted) raises out of the change_state service for a transition
        # the current state does not have (`ros2 lifecycle set` activate while unconfigured),
        # which stops the executor: answer success false instead, as later rclpy does.
        service = getattr(self, '_service_change_state', None)
        if service is not None:
            service.callback = self._refuse_unknown_transitions(service.callback)

    def _refuse_unknown_transitions(self, handle: Callable[[Any, Any], Any]
                                    ) -> Callable[[Any, Any], Any]:
        def change_state(request: Any, response: Any) -> Any:
            try:
                return handle(request, response)
            except RCLError as exc:
                t = request.transition
                self.get_logger().error(
                    f"transition '{t.label or t.id}' is not possible from this state: {exc}")
                response.success = False
                return response
        return change_state

    def _transition(self, name: str, step: Callable[[], None],
                    undo: Callable[[], None]) -> TransitionCallbackReturn:
        try:
            step()
        except (ConfigError, ModelLoadError) as exc:
            self.get_logger().error(f'{name} failed: {exc}')
            undo()
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # noqa: B902 - any other failure: log it, then ERROR
            self.get_logger().error(f'{name} failed: {exc!r}\n{traceback.format_exc()}')
            undo()
            return TransitionCallbackReturn.ERROR
        self.get_logger().info(f'{name}: done')
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate the parameters and load the weights into host memory."""
        return self._transition('configure', self._configure, self._cleanup)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Move the weights to the device, advertise and subscribe."""
        return self._transition('activate', self._activate, self._deactivate)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop subscribing and publishing; free device memory."""
        return self._transition('deactivate', self._deactivate, self._deactivate)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the weights, the worker and the cameras."""
        return self._transition('cleanup', self._cleanup, self._cleanup)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything, from whichever state."""
        return self._transition('shutdown', self._cleanup, self._cleanup)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything after a failed transition; back to unconfigured."""
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Stop the worker before the node's handles go away."""
        if hasattr(self, '_scheduler'):
            self.close()
        super().destroy_node()


def _run(make_node: Callable[[], Node], program: str, args: Optional[List[str]]) -> int:
    """Spin a node until Ctrl-C; exit 2 with one message on a bad parameter or model."""
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        rclpy.spin(node)
    except (ConfigError, ModelLoadError) as exc:
        print(f'{program}: error: {exc}', file=sys.stderr, flush=True)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # noqa: B902 - told apart below
        if rclpy.ok():
            raise  # a real error
        # else Ctrl-C shut the context down while the node was being built
    finally:
        # ros2 launch delivers Ctrl-C twice (terminal + launch), at any moment, start-up
        # included; ignore the second so teardown finishes without a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main(args: Optional[List[str]] = None) -> int:
    """Entry point of `dpt_node`: configured and active from the start."""
    return _run(DptNode, 'dpt_node', args)


def lifecycle_main(args: Optional[List[str]] = None) -> int:
    """Entry point of `dpt_lifecycle_node`: starts unconfigured, driven by lifecycle services."""
    return _run(DptLifecycleNode, 'dpt_lifecycle_node', args)


if __name__ == '__main__':
    sys.exit(main())
