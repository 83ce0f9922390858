# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The node in-process (own Context) on real rclpy and DDS: outputs, parameters, bad input."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from dpt_ros.core import conversions as conv
from dpt_ros.core.config import Config
from dpt_ros.core.outputs import BY_NAME, OUTPUTS
from dpt_ros.tools.sample import synthetic_scene

from rosutil import backproject_check, Harness, header, stamp_of  # noqa: I100

from rcl_interfaces.msg import ParameterType  # noqa: E402, I100
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.exceptions import ParameterUninitializedException  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402

from dpt_ros.ros.node import DptNode  # noqa: E402

NS = '/cam'


def start(harness, node_name='dpt', **params):
    """Start a DptNode in the harness Context under NS with parameter overrides; spin both."""
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    node = DptNode(node_name, context=harness.ctx, namespace=NS, parameter_overrides=overrides)
    harness.add_node(node)
    harness.start()
    return node


@pytest.fixture
def harness():
    h = Harness()
    yield h
    h.close()


def wait_stamp(harness, topic, stamp, timeout=20.0):
    """Wait for a message with this stamp on topic; return it."""
    ok = harness.wait(lambda: any(stamp_of(m) == stamp for m in harness.get(topic)), timeout)
    assert ok, f'no {topic} with stamp {stamp}; got {[stamp_of(m) for m in harness.get(topic)]}'
    return next(m for m in harness.get(topic) if stamp_of(m) == stamp)


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
    node = start(harness, **{'model.depth': str(tiny_metric), 'model.segmentation': str(tiny_seg),
                             'model.device': 'cpu'})
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
        got = {t: wait_stamp(harness, f'{NS}/{t}', stamp) for t in (
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
    start(harness, **{'model.depth': str(tiny_depth), 'model.device': 'cpu'})
    harness.record_outputs(NS)
    pubs = harness.publishers(NS)
    assert harness.wait_subscribed(pubs[0])
    s = synthetic_scene(96, 72)
    h = header(1)
    pubs[1].publish(conv.camera_info_from_intrinsics(s.intrinsics, h))
    pubs[0].publish(conv.image_msg(h, s.rgb, 'bgr8'))
    rel = wait_stamp(harness, f'{NS}/depth/relative', conv.stamp_ns(h))
    assert rel.encoding == '32FC1' and (rel.height, rel.width) == (72, 96)
    wait_stamp(harness, f'{NS}/depth/colored', conv.stamp_ns(h))
    # Relative inverse depth is never published as metres, and points need metres.
    assert not harness.get(f'{NS}/depth/image')
    assert not harness.get(f'{NS}/points')
    # Without a segmentation model no segmentation topic is advertised; depth.mode is live,
    # so every depth topic is.
    advertised = {name for name, _ in harness.node.get_publisher_names_and_types_by_node(
        'dpt', NS)}
    assert {f'{NS}/depth/image', f'{NS}/points', f'{NS}/depth/relative'} <= advertised
    assert not {n for n in advertised if n.startswith(f'{NS}/segmentation')}, advertised


def call_set(harness, node_name, params):
    """Set parameters through the node's service, as `ros2 param set` does."""
    cli = harness.node.create_client(SetParameters, f'{NS}/{node_name}/set_parameters')
    assert cli.wait_for_service(timeout_sec=10)
    req = SetParameters.Request()
    req.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in params.items()]
    fut = cli.call_async(req)
    assert harness.wait(fut.done, 10)
    return fut.result().results


def test_parameters_validated_and_live(harness, tiny_metric):
    start(harness, **{'model.depth': str(tiny_metric), 'model.device': 'cpu'})
    harness.record_outputs(NS, ['depth/image', 'points'])
    pubs = harness.publishers(NS)
    assert harness.wait_subscribed(pubs[0])
    s = synthetic_scene(128, 96)

    def frame(i):
        h = header(i)
        pubs[1].publish(conv.camera_info_from_intrinsics(s.intrinsics, h))
        pubs[0].publish(conv.image_msg(h, s.rgb, 'rgb8'))
        return (wait_stamp(harness, f'{NS}/depth/image', conv.stamp_ns(h)),
                wait_stamp(harness, f'{NS}/points', conv.stamp_ns(h)))

    d0, p0 = frame(0)
    depth0 = conv.image_to_array(d0)
    assert np.nanmax(depth0) > 1.0
    # Refused with the reason; nothing changes.
    for bad, word in (({'depth.max': -3.0}, 'depth.max'), ({'depth.encoding': '8UC3'}, '32FC1'),
                      ({'depth.min': 50.0}, 'depth.min'), ({'points.stride': 0}, 'stride'),
                      ({'model.depth': '/elsewhere'}, 'read-only'),
                      ({'depth.colormap': 'rainbow'}, 'inferno')):
        res = call_set(harness, 'dpt', bad)
        assert not res[0].successful, bad
        assert word in res[0].reason, (bad, res[0].reason)
    # Live: applied from the next frame, no reload.
    res = call_set(harness, 'dpt', {'depth.max': 1, 'points.stride': 4,
                                    'depth.encoding': '16UC1'})
    assert all(r.successful for r in res), [r.reason for r in res]
    d1, p1 = frame(1)
    assert d1.encoding == '16UC1'
    mm = conv.image_to_array(d1)
    assert mm.max() <= 1000 and (mm == 0).sum() > (~np.isfinite(depth0)).sum()
    assert (p1.height, p1.width) == (96 // 4, 128 // 4)


def test_bad_input_never_stops_the_node(harness, tiny_metric):
    node = start(harness, **{'model.depth': str(tiny_metric), 'model.device': 'cpu'})
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
        return wait_stamp(harness, f'{NS}/depth/image', conv.stamp_ns(h))

    # No camera_info yet: depth is published, points are not.
    good(0, info=False)
    assert not harness.get(f'{NS}/points')

    def bad_image(kind):
        msg = conv.image_msg(header(50), s.rgb, 'rgb8')
        if kind == 'encoding':
            msg.encoding = 'bayer_rggb8'
        elif kind == 'length':
            msg.data = msg.data[:-7]
        elif kind == 'zero':
            msg.height = msg.width = msg.step = 0
            msg.data = []
        elif kind == 'step':
            msg.step = 10
        return msg

    for i, kind in enumerate(('encoding', 'length', 'zero', 'step'), start=1):
        img_pub.publish(bad_image(kind))
        # Counted and warned about (not silently dropped), then the next good frame works.
        assert harness.wait(lambda: node.cameras[0].stats.errors >= i, 10), kind
        good(i)
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
        wait_stamp(harness, f'{NS}/depth/image', conv.stamp_ns(info.header))
        assert not any(stamp_of(m) == conv.stamp_ns(info.header)
                       for m in harness.get(f'{NS}/points')), change
    # And a good frame with good camera_info gets points again.
    info_pub.publish(good_info)
    good(20)
    wait_stamp(harness, f'{NS}/points', conv.stamp_ns(header(20)))
    assert node._worker.is_alive()
    assert node.cameras[0].stats.errors == 4


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
    d = wait_stamp(harness, f'{NS}/depth/image', conv.stamp_ns(msg.header))
    assert (d.height, d.width) == (60, 80)


def test_outputs_without_subscribers_are_not_computed(harness, tiny_metric, tiny_seg):
    node = start(harness, **{'model.depth': str(tiny_metric), 'model.segmentation': str(tiny_seg),
                             'model.device': 'cpu'})
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
    wait_stamp(harness, f'{NS}/depth/colored', conv.stamp_ns(header(1)))
    assert asked[-1] == {'depth_colored'}


def test_node_defaults_match_yaml_and_table(harness, tiny_depth):
    """Declared defaults == config/dpt.yaml == the parameter table (no overrides given)."""
    from dpt_ros.core.params import config_from_params_file, param_table
    from dpt_ros.core.pipeline import Pipeline
    root = Path(__file__).resolve().parents[2]
    cfg = Config().replace({'model.depth': str(tiny_depth), 'model.device': 'cpu'})
    node = DptNode('dpt', context=harness.ctx, pipeline=Pipeline(cfg))
    harness.add_node(node)
    yaml_cfg = config_from_params_file(root / 'config' / 'dpt.yaml')
    assert yaml_cfg == Config()
    for spec in param_table():
        if spec.type is tuple:  # an empty list: rclpy has no typed empty array, 'not set'
            assert spec.default == ()
            with pytest.raises(ParameterUninitializedException):
                node.get_parameter(spec.name)
            assert node.describe_parameter(spec.name).type == \
                ParameterType.PARAMETER_STRING_ARRAY
        else:
            assert node.get_parameter(spec.name).value == spec.default, spec.name
        desc = node.describe_parameter(spec.name)
        assert desc.description.startswith(spec.description), spec.name
        assert desc.read_only == spec.read_only, spec.name
        if spec.range is not None:
            rng = desc.floating_point_range or desc.integer_range
            assert rng and (rng[0].from_value, rng[0].to_value) == spec.range, spec.name
    assert ParameterType.PARAMETER_DOUBLE == node.describe_parameter('depth.max').type
