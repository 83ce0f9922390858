# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The node in-process (own Context) on real rclpy and DDS: outputs, parameters, bad input."""

import time

import cv2
import numpy as np
import pytest

from dpt_ros.core import conversions as conv
from dpt_ros.core.outputs import BY_NAME, OUTPUTS
from dpt_ros.tools.sample import synthetic_scene

from rosutil import backproject_check, header, stamp_of  # noqa: I100

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402, I100
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from dpt_ros.ros.node import DptNode  # noqa: E402

NS = '/cam'


def frames(data):
    """Return a synthetic frame, then a TUM and an ICL-NUIM frame from data (test/data)."""
    from dpt_ros.core.geometry import Intrinsics
    s = synthetic_scene(160, 120)
    out = [('synthetic', s.rgb, s.intrinsics)]
    intr = Intrinsics(525.0, 525.0, 319.5, 239.5, 640, 480)
    for p in [data / 'tum' / 'TUM_color.png', data / 'icl_livingroom' / 'color_00000.jpg']:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        assert bgr is not None, p
        out.append((p.name, bgr[:, :, ::-1].copy(), intr))
    return out


def test_every_output_metric_and_segmentation(harness, tiny_metric, tiny_seg, rgbd_data):
    node = harness.start_node(NS, **{'model.depth': str(tiny_metric),
                                     'model.segmentation': str(tiny_seg), 'model.device': 'cpu'})
    harness.record_outputs(NS)
    pubs = harness.publishers(NS)
    assert harness.wait_subscribed(pubs[0])
    labels = node.get_parameter('segmentation.class_names').value
    assert list(labels) == ['floor', 'wall', 'ceiling', 'object', 'person']
    for i, (name, rgb, intr) in enumerate(frames(rgbd_data)):
        h = header(i)
        pubs[1].publish(conv.camera_info_from_intrinsics(intr, h))
        harness.wait(lambda: node.cameras[0].camera_info is not None, 5)
        pubs[0].publish(conv.image_msg(h, rgb, 'rgb8'))
        stamp = conv.stamp_ns(h)
        # A metric model has no depth/relative; depth/confidence needs depth.confidence flip.
        got = {t: harness.wait_stamp(f'{NS}/{t}', stamp) for t in (
            o.topic for o in OUTPUTS if o.name not in ('relative', 'confidence'))}
        height, width = rgb.shape[:2]
        for topic, msg in got.items():
            assert msg.header.frame_id == h.frame_id, topic
            assert (msg.height, msg.width) == (height, width), topic
        assert got['depth/image'].encoding == '32FC1'
        assert got['depth/colored'].encoding == 'rgb8'
        assert got['segmentation/image'].encoding == 'mono8'
        assert got['segmentation/overlay'].encoding == 'rgb8'
        depth = conv.image_to_array(got['depth/image'])
        assert np.isfinite(depth).mean() > 0.5, name
        finite = depth[np.isfinite(depth)]
        assert finite.min() >= 0.1 and finite.max() <= 20.0
        info = got['depth/camera_info']
        assert list(info.k) == pytest.approx([intr.fx, 0, intr.cx, 0, intr.fy, intr.cy, 0, 0, 1])
        err = backproject_check(got['points'], depth, info)
        assert err < 1e-3, f'{name}: points differ from depth back-projection by {err} m'
        labels_img = conv.image_to_array(got['segmentation/image'])
        assert labels_img.max() < 5
        assert not harness.get(f"{NS}/{BY_NAME['relative'].topic}")  # metric model


def test_relative_model_publishes_relative_only(harness, tiny_depth):
    harness.start_node(NS, **{'model.depth': str(tiny_depth), 'model.device': 'cpu'})
    harness.record_outputs(NS)
    pubs = harness.publishers(NS)
    assert harness.wait_subscribed(pubs[0])
    s = synthetic_scene(96, 72)
    h = header(1)
    pubs[1].publish(conv.camera_info_from_intrinsics(s.intrinsics, h))
    pubs[0].publish(conv.image_msg(h, s.rgb, 'bgr8'))
    rel = harness.wait_stamp(f'{NS}/depth/relative', conv.stamp_ns(h))
    assert rel.encoding == '32FC1' and (rel.height, rel.width) == (72, 96)
    harness.wait_stamp(f'{NS}/depth/colored', conv.stamp_ns(h))
    # Relative inverse depth is never published as metres, and points need metres.
    assert not harness.get(f'{NS}/depth/image')
    assert not harness.get(f'{NS}/points')
    # Without a segmentation model no segmentation topic is advertised; depth.mode is live,
    # so every depth topic is.
    advertised = {name for name, _ in harness.node.get_publisher_names_and_types_by_node(
        'dpt', NS)}
    assert {f'{NS}/depth/image', f'{NS}/points', f'{NS}/depth/relative'} <= advertised
    assert not {n for n in advertised if n.startswith(f'{NS}/segmentation')}, advertised


def test_bad_input_never_stops_the_node(harness, tiny_metric):
    node = harness.start_node(NS, **{'model.depth': str(tiny_metric), 'model.device': 'cpu'})
    harness.record_outputs(NS, ['depth/image', 'points'])
    img_pub, info_pub = harness.publishers(NS)
    assert harness.wait_subscribed(img_pub)
    s = synthetic_scene(64, 48)
    good_info = conv.camera_info_from_intrinsics(s.intrinsics)

    def good(i, info=True):
        h = header(i)
        if info:
            info_pub.publish(conv.camera_info_from_intrinsics(s.intrinsics, h))
        img_pub.publish(conv.image_msg(h, s.rgb, 'rgb8'))
        return harness.wait_stamp(f'{NS}/depth/image', conv.stamp_ns(h))

    # No camera_info yet: depth is published, points are not.
    good(0, info=False)
    assert not harness.get(f'{NS}/points')
    assert node.cameras[0].notes['points'] == \
        f'none: no camera_info received on {NS}/camera_info'  # /diagnostics

    def bad_image(kind):
        msg = conv.image_msg(header(50), s.rgb, 'rgb8')
        if kind == 'encoding':
            msg.encoding = '32FC1'  # a depth image remapped onto `image` by mistake
        elif kind == 'length':
            msg.data = msg.data[:-7]
        elif kind == 'zero':
            msg.height = msg.width = msg.step = 0
            msg.data = []
        elif kind == 'step':
            msg.step = 10
        elif kind == 'sliver':  # decodable, but the network would resize it to no rows
            msg = conv.image_msg(header(50), np.zeros((1, 4000, 3), np.uint8), 'rgb8')
        return msg

    for i, kind in enumerate(('encoding', 'length', 'zero', 'step', 'sliver'), start=1):
        img_pub.publish(bad_image(kind))
        # Counted and warned about (not silently dropped), then the next good frame works.
        assert harness.wait(lambda: node.cameras[0].stats.errors >= i, 10), kind
        good(i)
    # An empty frame_id is kept (outputs carry the input's header) and warned about once.
    assert not node.runtime.once.told(('no_frame_id', ''))
    img_pub.publish(conv.image_msg(header(6, frame_id=''), s.rgb, 'rgb8'))
    depth = harness.wait_stamp(f'{NS}/depth/image', conv.stamp_ns(header(6)))
    assert depth.header.frame_id == '' and node.runtime.once.told(('no_frame_id', ''))
    # A raw Bayer mosaic (a machine-vision driver's image_raw) is demosaiced, not refused.
    bayer = conv.image_msg(header(5), np.ascontiguousarray(s.rgb[..., 1]), 'mono8')
    bayer.encoding = 'bayer_rggb8'
    img_pub.publish(bayer)
    depth = harness.wait_stamp(f'{NS}/depth/image', conv.stamp_ns(header(5)))
    assert (depth.height, depth.width) == (48, 64)
    # Unusable camera_info: zero / NaN focal length, size different from the image.
    for i, change in enumerate(('zero', 'nan', 'size'), start=10):
        info = conv.camera_info_from_intrinsics(s.intrinsics, header(i))
        k = list(info.k)
        if change == 'zero':
            k[0] = 0.0
        elif change == 'nan':
            k[4] = float('nan')
        else:
            info.width, info.height = 640, 480
        info.k = k
        p = list(info.p)
        p[0], p[5] = k[0], k[4]  # rectified input (the default) reads P
        info.p = p
        info_pub.publish(info)
        cam = node.cameras[0]
        harness.wait(lambda: cam.camera_info is not None and
                     conv.stamp_ns(cam.camera_info.header) == conv.stamp_ns(info.header), 5)
        img_pub.publish(conv.image_msg(info.header, s.rgb, 'rgb8'))
        harness.wait_stamp(f'{NS}/depth/image', conv.stamp_ns(info.header))
        assert not any(stamp_of(m) == conv.stamp_ns(info.header)
                       for m in harness.get(f'{NS}/points')), change
    # And a good frame with good camera_info gets points again.
    info_pub.publish(good_info)
    good(20)
    harness.wait_stamp(f'{NS}/points', conv.stamp_ns(header(20)))
    assert node.cameras[0].notes['points'] == 'published'
    assert node.runtime.worker.alive
    assert node.cameras[0].stats.errors == 5
    # Each refused as a bad frame, alone: none failed a forward (it would take its batch along).
    assert 'internal' not in node.runtime.warn.counts


def test_compressed_transport_follows_image_remap(harness, tiny_metric):
    ctx_args = ['--ros-args', '-r', 'image:=/camera/color/image_raw']
    overrides = [Parameter('model.depth', value=str(tiny_metric)),
                 Parameter('model.device', value='cpu'),
                 Parameter('input.transport', value='compressed')]
    node = DptNode('dpt', context=harness.ctx, namespace=NS, parameter_overrides=overrides,
                   cli_args=ctx_args)
    harness.add_node(node)
    harness.start()
    harness.record_outputs(NS, ['depth/image'])
    pub = harness.node.create_publisher(CompressedImage, '/camera/color/image_raw/compressed', 5)
    assert harness.wait_subscribed(pub)
    s = synthetic_scene(80, 60)
    ok, jpeg = cv2.imencode('.jpg', s.rgb[:, :, ::-1])
    garbage = CompressedImage(header=header(0), format='jpeg', data=b'\xff\xd8 not a jpeg')
    pub.publish(garbage)
    msg = CompressedImage(header=header(1), format='jpeg', data=jpeg.tobytes())
    pub.publish(msg)
    d = harness.wait_stamp(f'{NS}/depth/image', conv.stamp_ns(msg.header))
    assert (d.height, d.width) == (60, 80)


def test_outputs_without_subscribers_are_not_computed(harness, tiny_metric, tiny_seg):
    node = harness.start_node(NS, **{'model.depth': str(tiny_metric),
                                     'model.segmentation': str(tiny_seg), 'model.device': 'cpu'})
    asked = []
    real = node.pipeline.process_batch

    def spy(frames, intrs, want, **kwargs):
        asked.append(want)
        return real(frames, intrs, want, **kwargs)
    node.pipeline.process_batch = spy
    pubs = harness.publishers(NS)
    assert harness.wait_subscribed(pubs[0])
    s = synthetic_scene(64, 48)
    pubs[1].publish(conv.camera_info_from_intrinsics(s.intrinsics, header(0)))
    pubs[0].publish(conv.image_msg(header(0), s.rgb, 'rgb8'))
    assert harness.wait(lambda: node.cameras[0].stats.received >= 1, 10)
    harness.wait(lambda: False, 0.5)
    assert asked == []  # nobody listens: no inference at all
    harness.record_outputs(NS, ['depth/colored'])
    pub = node.cameras[0].pubs['depth_colored']
    assert harness.wait(lambda: pub.get_subscription_count() > 0, 10)
    pubs[0].publish(conv.image_msg(header(1), s.rgb, 'rgb8'))
    harness.wait_stamp(f'{NS}/depth/colored', conv.stamp_ns(header(1)))
    assert asked[-1] == {'depth_colored'}


class _Stream:
    """Publish frames of a scene, one every `every` seconds, until a condition holds."""

    def __init__(self, harness, pub, scene, every):
        self.harness, self.pub, self.scene, self.every, self.i = harness, pub, scene, every, 0

    def __call__(self, pred, timeout=30.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.i += 1
            self.pub.publish(conv.image_msg(header(self.i), self.scene.rgb, 'rgb8'))
            if self.harness.wait(pred, self.every):
                return True
        return False


def test_diagnostics_warn_when_the_last_listener_leaves_a_streaming_camera(harness, tiny_metric):
    """Frames keep coming, nothing is processed any more: not 'ok' (what a period saw)."""
    node = harness.start_node(NS, **{'model.depth': str(tiny_metric), 'model.device': 'cpu',
                                     'diagnostics.period': 0.2})
    harness.record('/diagnostics', DiagnosticArray)
    pubs = harness.publishers(NS)
    assert harness.wait_subscribed(pubs[0])
    s = synthetic_scene(64, 48)
    listener = harness.node.create_subscription(Image, f'{NS}/depth/colored',
                                                lambda m: None, 10)
    pub = node.cameras[0].pubs['depth_colored']
    assert harness.wait(lambda: pub.get_subscription_count() > 0, 10)
    stream_until = _Stream(harness, pubs[0], s, 0.1)
    newest = harness.newest_status

    def after(n, level):
        return lambda: len(harness.get('/diagnostics')) > n and newest().level == level

    assert stream_until(lambda: node.cameras[0].stats.processed >= 2)
    n = len(harness.get('/diagnostics'))
    assert stream_until(after(n, DiagnosticStatus.OK)), newest()
    harness.node.destroy_subscription(listener)
    assert harness.wait(lambda: pub.get_subscription_count() == 0, 10)
    processed = node.cameras[0].stats.processed
    n = len(harness.get('/diagnostics'))
    assert stream_until(lambda: len(harness.get('/diagnostics')) > n + 2 and
                        'none were processed' in newest().message), newest()
    assert newest().level == DiagnosticStatus.WARN
    assert node.cameras[0].stats.processed == processed


def test_diagnostics_say_when_the_camera_goes_silent_and_ok_once_it_is_back(
        harness, tiny_metric):
    """A camera that stops sending: nothing is published, so not 'ok'; back: 'ok' again."""
    node = harness.start_node(NS, **{'model.depth': str(tiny_metric), 'model.device': 'cpu',
                                     'diagnostics.period': 0.2})
    harness.record('/diagnostics', DiagnosticArray)
    harness.record_outputs(NS, ['depth/image'])
    pubs = harness.publishers(NS)
    assert harness.wait_subscribed(pubs[0])
    s = synthetic_scene(64, 48)
    newest = harness.newest_status
    stream_until = _Stream(harness, pubs[0], s, 0.05)

    def ok():
        st = newest()
        return st is not None and st.level == DiagnosticStatus.OK and \
            node.cameras[0].stats.processed > 0
    assert stream_until(ok), newest()
    assert harness.wait(lambda: newest().message.startswith('no frames received for'), 10), \
        newest()
    assert newest().level == DiagnosticStatus.WARN
    assert stream_until(ok), newest()
