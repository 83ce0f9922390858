# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Camera I/O (dpt_ros.ros.cameras) over real DDS: QoS matching, lost frames and their warning."""

import os
import time
from types import SimpleNamespace

import pytest

from dpt_ros.core import conversions as conv
from dpt_ros.ros import fastdds
from dpt_ros.tools.sample import synthetic_scene

from rosutil import Harness, header  # noqa: I100

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402, I100
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from dpt_ros.ros import diagnostics as diag  # noqa: E402

NS = '/io'


def start(harness, **params):
    """Start a DptNode with the tiny metric model under NS; spin it."""
    return harness.start_node(NS, **{'model.device': 'cpu', **params})


def test_auto_reliability_follows_a_best_effort_camera_that_comes_later(harness, tiny_metric):
    node = start(harness, **{'model.depth': str(tiny_metric)})
    cam = node.cameras[0]
    assert cam.sub_reliability[cam.image_topic] == ReliabilityPolicy.RELIABLE  # none yet
    harness.record_outputs(NS, ['depth/image'])
    img, info = harness.publishers(NS, reliability=ReliabilityPolicy.BEST_EFFORT)
    # Matched within the second-long check; a reliable reader would never get these frames.
    assert harness.wait(lambda: cam.sub_reliability[cam.image_topic]
                        == ReliabilityPolicy.BEST_EFFORT, 10)
    assert harness.wait(lambda: cam.sub_reliability[cam.info_topic]
                        == ReliabilityPolicy.BEST_EFFORT, 10)
    assert harness.wait_subscribed(img) and harness.wait_subscribed(info)
    s = synthetic_scene(64, 48)
    for i in range(50):  # best effort: resend until one frame made it through
        h = header(i)
        info.publish(conv.camera_info_from_intrinsics(s.intrinsics, h))
        img.publish(conv.image_msg(h, s.rgb, 'rgb8'))
        if harness.wait(lambda: harness.get(f'{NS}/depth/image'), 0.2):
            break
    assert harness.get(f'{NS}/depth/image') and cam.stats.received >= 1


def test_camera_info_latched_once_before_the_node_starts_is_received(harness, tiny_metric):
    """A driver (or a bag played with its recorded QoS) publishing camera_info once, latched.

    Issue: every input was subscribed volatile, so calibration published once before the node
    came up never reached it: no points, no depth/camera_info, ever.
    """
    s = synthetic_scene(64, 48)
    latched = harness.node.create_publisher(CameraInfo, f'{NS}/camera_info', QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL))
    latched.publish(conv.camera_info_from_intrinsics(s.intrinsics, header(0)))
    node = start(harness, **{'model.depth': str(tiny_metric)})
    cam = node.cameras[0]
    harness.record_outputs(NS, ['depth/image', 'points'])
    img = harness.node.create_publisher(Image, f'{NS}/image', 5)
    assert harness.wait(lambda: cam.sub_durability.get(cam.info_topic)
                        == DurabilityPolicy.TRANSIENT_LOCAL, 10)
    assert harness.wait(lambda: cam.calibration.info is not None, 10)  # the latched sample
    assert harness.wait_subscribed(img)
    img.publish(conv.image_msg(header(1), s.rgb, 'rgb8'))
    harness.wait_stamp(f'{NS}/points', conv.stamp_ns(header(1)))
    # A volatile publisher of it joins: back to volatile, which matches both.
    volatile = harness.node.create_publisher(CameraInfo, f'{NS}/camera_info', 5)
    assert harness.wait(lambda: cam.sub_durability.get(cam.info_topic)
                        == DurabilityPolicy.VOLATILE, 10)
    assert harness.wait_subscribed(volatile) and harness.wait(
        lambda: latched.get_subscription_count() == 1, 10)


def _says(harness, text, timeout=10.0):
    """Wait for a /diagnostics report whose message holds text (after any received so far)."""
    newest = harness.newest_status
    n = len(harness.get('/diagnostics'))
    return harness.wait(lambda: len(harness.get('/diagnostics')) > n and
                        text in newest().message, timeout)


def _back_to_ok(harness, timeout=10.0):
    """Wait for a /diagnostics report of the node saying exactly 'ok'."""
    newest = harness.newest_status
    return harness.wait(lambda: _says(harness, 'ok', 1.0) and newest().message == 'ok', timeout)


def test_diagnostics_say_why_a_camera_is_not_heard(harness, tiny_metric):
    """No frames: the status names what the graph shows, not only 'is the camera publishing?'.

    No publisher at all; one on the other transport's topic; a best-effort camera that a forced
    reliable subscription never receives; a topic published as another type (its own
    participant: another process, as a wrong driver would be).
    """
    node = start(harness, **{'model.depth': str(tiny_metric), 'diagnostics.period': 0.2,
                             'input.reliability': 'reliable'})
    harness.record('/diagnostics', DiagnosticArray)
    newest = harness.newest_status
    topic = f'{NS}/image'
    assert _says(harness, f'no frames received yet (no publisher on {topic})'), newest()
    assert newest().level == DiagnosticStatus.WARN
    assert diag.values(newest())['input_publishers'] == '0'
    compressed = harness.node.create_publisher(CompressedImage, f'{topic}/compressed', 5)
    assert _says(harness, f'but {topic}/compressed has one: input.transport compressed'), \
        newest()
    harness.node.destroy_publisher(compressed)
    other = Harness('dpt_test_wrong_type')
    try:
        other.start()
        other.node.create_publisher(CameraInfo, topic, 5)
        assert _says(harness, f'{topic} is published as sensor_msgs/msg/CameraInfo; this node '
                     'subscribes sensor_msgs/msg/Image'), newest()
    finally:
        other.close()
    img = harness.node.create_publisher(
        Image, topic, QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
    s = synthetic_scene(64, 48)
    for i in range(10):
        img.publish(conv.image_msg(header(i), s.rgb, 'rgb8'))
    assert _says(harness, 'best_effort, which a reliable subscription (input.reliability '
                 'reliable) never receives'), newest()
    assert diag.values(newest())['input_publishers'] == '1'
    assert node.cameras[0].stats.received == 0


def test_diagnostics_say_which_output_subscriber_can_never_receive(harness, tiny_metric):
    """output.reliability best_effort: a reliable subscriber (RViz's default) gets nothing.

    Alone, it leaves the frames unprocessed and the status says why; beside a best-effort
    subscriber the frames are published and the status still warns; once it leaves, 'ok'.
    """
    node = start(harness, **{'model.depth': str(tiny_metric), 'diagnostics.period': 0.2,
                             'output.reliability': 'best_effort'})
    harness.record('/diagnostics', DiagnosticArray)
    newest = harness.newest_status
    img, info = harness.publishers(NS)
    s = synthetic_scene(64, 48)
    topic = f'{NS}/depth/image'
    reliable = harness.node.create_subscription(Image, topic, lambda m: None, QoSProfile(
        depth=5, reliability=ReliabilityPolicy.RELIABLE))
    got = []
    stop = _Publishing(img, info, s)
    try:
        assert _says(harness, 'frames arrive but none were processed (a subscriber requests '
                     f'QoS these outputs do not offer (best_effort, volatile: '
                     f'output.reliability) and receives nothing: {topic} (reliable))'), newest()
        harness.node.create_subscription(Image, topic, got.append, QoSProfile(
            depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
        assert harness.wait(lambda: got, 10)
        assert _says(harness, f'receives nothing: {topic} (reliable)'), newest()
        assert newest().level == DiagnosticStatus.WARN
        harness.node.destroy_subscription(reliable)
        assert _back_to_ok(harness), newest()
    finally:
        stop()
    assert node.cameras[0].stats.processed > 0


def test_diagnostics_name_a_clock_this_node_does_not_follow(harness, tiny_metric):
    """Frames stamped on a /clock the node ignores: the status says to set use_sim_time.

    A bag played with --clock and a node with use_sim_time false: frames far behind its clock.
    Without a /clock publisher the same frames are 'ok' (a driver stamping with its boot time).
    """
    start(harness, **{'model.depth': str(tiny_metric), 'diagnostics.period': 0.2})
    harness.record('/diagnostics', DiagnosticArray)
    harness.record_outputs(NS, ['depth/image'])
    newest = harness.newest_status
    img, info = harness.publishers(NS)
    stop = _Publishing(img, info, synthetic_scene(64, 48))  # stamped 1000 s + i
    try:
        assert harness.wait(lambda: harness.get(f'{NS}/depth/image'), 20)
        assert _back_to_ok(harness), newest()
        clock = harness.node.create_publisher(Clock, '/clock', 10)
        assert _says(harness, "s behind this node's clock (frame_age_p50_ms) and /clock is "
                     'published (a bag played with --clock, a simulator) while use_sim_time '
                     'is false: set use_sim_time true for this node'), newest()
        assert newest().level == DiagnosticStatus.WARN
        harness.node.destroy_publisher(clock)
        assert _back_to_ok(harness), newest()
    finally:
        stop()


def test_diagnostics_say_when_nothing_publishes_camera_info(harness, tiny_metric):
    """Points wanted, no calibration: the status names the topic and whether anyone publishes it.

    A remapped image with camera_info left on its old name is the usual cause on a robot.
    """
    node = start(harness, **{'model.depth': str(tiny_metric), 'diagnostics.period': 0.2})
    harness.record('/diagnostics', DiagnosticArray)
    harness.record_outputs(NS, ['points', 'depth/image'])
    newest = harness.newest_status
    img = harness.node.create_publisher(Image, f'{NS}/image', 5)
    s = synthetic_scene(64, 48)
    stop = _Publishing(img, None, s)
    said = f'points not published (none: no camera_info received on {NS}/camera_info'
    try:
        assert _says(harness, said + ': nothing publishes it)', 20), newest()
        assert newest().level == DiagnosticStatus.WARN
        assert diag.values(newest())['camera_info_publishers'] == '0'
        silent = harness.node.create_publisher(CameraInfo, f'{NS}/camera_info', 5)
        assert _says(harness, said + ')'), newest()  # one is there, nothing came yet
        assert diag.values(newest())['camera_info_publishers'] == '1'
        harness.node.destroy_publisher(silent)
    finally:
        stop()
    assert harness.get(f'{NS}/depth/image') and not harness.get(f'{NS}/points')
    assert node.cameras[0].stats.processed > 0


def test_diagnostics_say_why_a_subscribed_output_is_not_published(harness, tiny_metric):
    """A subscriber of an output its settings switch off: the status and the log say which.

    depth/confidence while depth.confidence is off, until it is set 'flip' live; depth/image of
    a relative checkpoint (no metres without a metric depth.mode).
    """
    from rclpy.parameter import Parameter
    node = start(harness, **{'model.depth': str(tiny_metric), 'diagnostics.period': 0.2})
    log = Recorder(node.get_logger())
    node.get_logger = lambda: log
    harness.record('/diagnostics', DiagnosticArray)
    harness.record_outputs(NS, ['depth/confidence', 'depth/image'])
    newest = harness.newest_status
    img, info = harness.publishers(NS)
    stop = _Publishing(img, info, synthetic_scene(64, 48))
    said = (f"subscribed but not published: {NS}/depth/confidence (depth.confidence is 'off' "
            "('flip' computes it))")
    try:
        assert _says(harness, said, 20), newest()
        assert newest().level == DiagnosticStatus.OK  # as set: a recorder of all topics too
        assert harness.get(f'{NS}/depth/image') and not harness.get(f'{NS}/depth/confidence')
        assert node.set_parameters([Parameter('depth.confidence', value='flip')])[0].successful
        assert harness.wait(lambda: harness.get(f'{NS}/depth/confidence'), 20)
        assert _back_to_ok(harness), newest()
    finally:
        stop()
    told = [w for w in log.warnings if 'has a subscriber but is not published' in w]
    assert told == [f"camera: {NS}/depth/confidence has a subscriber but is not published: "
                    "depth.confidence is 'off' ('flip' computes it)."], log.warnings


def test_diagnostics_say_a_relative_model_publishes_no_metres(harness, tiny_depth):
    """A relative checkpoint's depth/image subscribed (depth.mode auto): no metres, why."""
    start(harness, **{'model.depth': str(tiny_depth), 'diagnostics.period': 0.2})
    harness.record('/diagnostics', DiagnosticArray)
    harness.record_outputs(NS, ['depth/image', 'depth/relative'])
    newest = harness.newest_status
    img, info = harness.publishers(NS)
    stop = _Publishing(img, info, synthetic_scene(64, 48))
    try:
        assert _says(harness, f'subscribed but not published: {NS}/depth/image (no metres: the '
                     'depth model is relative', 20), newest()
        assert newest().level == DiagnosticStatus.OK
        assert 'unpublished' in diag.values(newest())
    finally:
        stop()
    assert harness.get(f'{NS}/depth/relative') and not harness.get(f'{NS}/depth/image')


def test_diagnostics_name_a_subscribed_output_whose_model_is_not_loaded(harness, tiny_metric):
    """A node run without a segmentation model, and a viewer of its segmentation/overlay.

    Alone, nothing is processed and the WARN says why; beside a depth subscriber it is named in
    an OK status; the log says it once.
    """
    node = start(harness, **{'model.depth': str(tiny_metric), 'diagnostics.period': 0.2})
    log = Recorder(node.get_logger())
    node.get_logger = lambda: log
    harness.record('/diagnostics', DiagnosticArray)
    newest = harness.newest_status
    img, info = harness.publishers(NS)
    overlay = f'{NS}/segmentation/overlay'
    harness.record(overlay, Image)
    stop = _Publishing(img, info, synthetic_scene(64, 48))
    said = f'{overlay} (no segmentation model: model.segmentation)'
    try:
        assert _says(harness, 'frames arrive but none were processed (nothing subscribes to an '
                     f'output this node computes; subscribed but not published: {said})',
                     20), newest()
        assert newest().level == DiagnosticStatus.WARN
        harness.record(f'{NS}/depth/image', Image)
        assert harness.wait(lambda: harness.get(f'{NS}/depth/image'), 20)
        assert _says(harness, f'subscribed but not published: {said}'), newest()
        assert newest().level == DiagnosticStatus.OK
        assert diag.values(newest())['unserved'] == said
    finally:
        stop()
    told = [w for w in log.warnings if 'nothing is published on it' in w]
    assert told == [f'{overlay} has a subscriber, but no segmentation model is loaded '
                    '(model.segmentation): nothing is published on it.'], log.warnings


class _Publishing:
    """Publish frames (and camera_info, unless None) of a scene at 20 Hz until called."""

    def __init__(self, img, info, scene):
        import threading
        self._stop = threading.Event()

        def run():
            i = 0
            while not self._stop.wait(0.05):
                i += 1
                h = header(i)
                if info is not None:
                    info.publish(conv.camera_info_from_intrinsics(scene.intrinsics, h))
                img.publish(conv.image_msg(h, scene.rgb, 'rgb8'))
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def __call__(self):
        self._stop.set()
        self._thread.join(5)


class Recorder:
    """Stands in for the node's logger: keeps warnings."""

    def __init__(self, real):
        self.real, self.warnings = real, []

    def warning(self, text):
        self.warnings.append(text)

    def __getattr__(self, name):
        return getattr(self.real, name)


def lost(count, total):
    """Return what rmw reports with a message_lost event (rmw_message_lost_status_t)."""
    return SimpleNamespace(total_count=total, total_count_change=count)


@pytest.mark.parametrize('reliability, profile', [
    ('best_effort', None), ('best_effort', 'read'),
    ('best_effort', 'FASTDDS_DEFAULT_PROFILES_FILE'), ('reliable', None)])
def test_lost_frames_are_counted_and_a_large_best_effort_loss_warns_once(
        harness, tiny_metric, monkeypatch, reliability, profile):
    """The node's message_lost handler, fed as rmw feeds it: counter, one warning, no noise.

    profile: none named; one named through the variable this Fast DDS reads; one named through
    FASTDDS_DEFAULT_PROFILES_FILE alone (Fast DDS 2, Humble and Jazzy, ignores it).
    """
    for var in fastdds.PROFILE_VARS:
        monkeypatch.delenv(var, raising=False)
    major = fastdds.fastdds_major()
    if profile:
        var = fastdds.reading_vars(major)[0] if profile == 'read' else profile
        monkeypatch.setenv(var, '/opt/robot/fastdds.xml')
    in_effect = fastdds.profile_in_effect(os.environ, major)
    node = start(harness, **{'model.depth': str(tiny_metric), 'input.reliability': reliability})
    cam = node.cameras[0]
    expected = {'best_effort': ReliabilityPolicy.BEST_EFFORT,
                'reliable': ReliabilityPolicy.RELIABLE}[reliability]
    assert cam.sub_reliability[cam.image_topic] == expected
    log = Recorder(node.get_logger())
    node.get_logger = lambda: log
    img, _ = harness.publishers(NS, reliability=expected)
    assert harness.wait_subscribed(img)
    frame = synthetic_scene(640, 480).rgb  # 0.9 MB: beyond one UDP datagram
    # A window of mostly received frames: counted, no warning.
    for i in range(15):
        img.publish(conv.image_msg(header(i), frame, 'rgb8'))
        time.sleep(0.01)
    assert harness.wait(lambda: cam.stats.received == 15, 10)
    node.runtime.io.on_lost(cam, lost(5, 5))
    assert cam.stats.lost == 5 and not log.warnings
    # Then most frames lost: one warning naming the fix (best effort only); never again.
    for n in range(2, 6):
        node.runtime.io.on_lost(cam, lost(20, 5 + 20 * (n - 1)))
    assert cam.stats.lost == 85
    values = {kv.key: kv.value for st in node.diagnostics_status() for kv in st.values}
    assert values['frames_lost'] == '85'
    if reliability == 'best_effort':
        assert len(log.warnings) == 1, log.warnings
        text = log.warnings[0]
        if in_effect:  # the node runs with a profile already: the camera driver needs it too
            fix = ['runs with the Fast DDS profile /opt/robot/fastdds.xml',
                   'camera driver with it too']
        elif profile:  # named, but not the way this Fast DDS reads it
            assert major == 2
            fix = ['FASTDDS_DEFAULT_PROFILES_FILE=/opt/robot/fastdds.xml is set',
                   'not in effect', 'Set FASTRTPS_DEFAULT_PROFILES_FILE to the same file',
                   'for the camera driver too']
        else:
            fix = ['fastdds_large_frames.xml', 'large_frames:=true',
                   fastdds.reading_vars(major)[0]]
        for words in ['20 of the last 20 frames', cam.image_topic, 'best-effort'] + fix:
            assert words in text, text
    else:
        assert not log.warnings


def test_small_frames_or_a_few_losses_do_not_warn(harness, tiny_metric):
    node = start(harness, **{'model.depth': str(tiny_metric), 'input.reliability': 'best_effort'})
    cam = node.cameras[0]
    log = Recorder(node.get_logger())
    node.get_logger = lambda: log
    img, _ = harness.publishers(NS, reliability=ReliabilityPolicy.BEST_EFFORT)
    assert harness.wait_subscribed(img)
    img.publish(conv.image_msg(header(0), synthetic_scene(64, 48).rgb, 'rgb8'))  # 9 kB
    assert harness.wait(lambda: cam.stats.received == 1, 10)
    for n in range(5):
        node.runtime.io.on_lost(cam, lost(20, 20 * (n + 1)))
    assert cam.stats.lost == 100 and not log.warnings


def _cameras_without(monkeypatch, *hidden):
    """Load cameras.py afresh, as a private module, with the named rclpy modules missing."""
    import importlib.util
    import sys
    import warnings
    from dpt_ros.ros import cameras
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # Jazzy's rclpy.qos_event is a deprecated alias
        import rclpy.qos_event  # noqa: F401 - cached: it imports rclpy.event_handler on Jazzy
    for name in hidden:
        monkeypatch.setitem(sys.modules, name, None)  # `import` raises ImportError
    spec = importlib.util.spec_from_file_location('_cameras_without', cameras.__file__)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _SubscribingNode:
    def __init__(self):
        self.kwargs, self.debug = [], []

    def create_subscription(self, *args, **kwargs):
        self.kwargs.append(kwargs)
        return object()

    def get_logger(self):
        return SimpleNamespace(debug=self.debug.append)


def test_lost_frames_are_reported_through_humbles_qos_event_module(monkeypatch):
    """Humble's rclpy has rclpy.qos_event only (rclpy.event_handler is Iron on).

    Frames lost in transport are then counted through qos_event's SubscriptionEventCallbacks
    (message_lost); with neither module the subscription is made without events.
    """
    mod = _cameras_without(monkeypatch, 'rclpy.event_handler')
    import rclpy.qos_event  # the one _cameras_without cached
    assert mod.SubscriptionEventCallbacks is rclpy.qos_event.SubscriptionEventCallbacks
    node, qos, on_lost = _SubscribingNode(), QoSProfile(depth=1), (lambda info: None)
    mod.CameraIO(node, None)._create_subscription(Image, 'image', print, qos, on_lost)
    assert node.kwargs[0]['event_callbacks'].message_lost is on_lost

    mod = _cameras_without(monkeypatch, 'rclpy.event_handler', 'rclpy.qos_event')
    assert mod.SubscriptionEventCallbacks is None
    node = _SubscribingNode()
    mod.CameraIO(node, None)._create_subscription(Image, 'image', print, qos, on_lost)
    assert node.kwargs == [{}] and 'frames_lost stays 0' in node.debug[0]


class _AdvertisingNode:
    """Records the publishers made, what each publishes and which are destroyed."""

    def __init__(self):
        self.published, self.destroyed = {}, []

    def create_publisher(self, _msg_type, topic, _qos):
        self.published[topic] = []
        return SimpleNamespace(topic=topic, publish=self.published[topic].append)

    def destroy_publisher(self, pub):
        self.destroyed.append(pub.topic)

    def get_clock(self):
        return SimpleNamespace(now=lambda: SimpleNamespace(to_msg=lambda: 'stamp'))


def test_label_info_sits_beside_each_cameras_segmentation(monkeypatch):
    """With `cameras: [front, rear]`: front/segmentation/label_info and rear/..., like the rest.

    Issue: it was published once as segmentation/label_info, outside every camera's prefix,
    where a consumer of front/segmentation/image does not look. vision_msgs is faked: it is
    not installed everywhere.
    """
    import sys
    import types
    from dpt_ros.ros.cameras import Camera, CameraIO
    msgs = types.ModuleType('vision_msgs.msg')
    msgs.LabelInfo = lambda: SimpleNamespace(header=SimpleNamespace(stamp=None), class_map=[])
    msgs.VisionClass = SimpleNamespace
    monkeypatch.setitem(sys.modules, 'vision_msgs', types.ModuleType('vision_msgs'))
    monkeypatch.setitem(sys.modules, 'vision_msgs.msg', msgs)
    for names, topics in ((['front', 'rear'], ['front/segmentation/label_info',
                                               'rear/segmentation/label_info']),
                          ([''], ['segmentation/label_info'])):  # no `cameras`
        node = _AdvertisingNode()
        io = CameraIO(node, None)
        io.cameras = [Camera(n) for n in names]
        io._publish_label_info(['floor', 'wall'])
        assert list(node.published) == topics
        for sent in node.published.values():
            assert len(sent) == 1 and sent[0].header.stamp == 'stamp'
            assert [(c.class_id, c.class_name) for c in sent[0].class_map] == [
                (0, 'floor'), (1, 'wall')]
        io.unadvertise([])
        assert node.destroyed == topics
