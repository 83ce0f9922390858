# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Our messages through what robots already run: cv_bridge and sensor_msgs_py.

Both ship with ROS 2 (apt) but not as wheels, so these tests skip, with the reason, where they
are not importable (as in CI); on a robot they run.
"""

import numpy as np
import pytest

from dpt_ros.core import conversions as conv
from dpt_ros.core.config import Config
from dpt_ros.core.conversions import Frame
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.tools.sample import synthetic_scene

pytest.importorskip('sensor_msgs.msg', reason='sensor_msgs (ROS 2) is not installed')

RNG = np.random.default_rng(11)


def cv_bridge():
    """Return a CvBridge, or skip: cv_bridge comes with ROS 2, not with pip."""
    mod = pytest.importorskip('cv_bridge', reason='cv_bridge (ros-<distro>-cv-bridge) is not '
                              'installed; it comes with ROS 2, not from PyPI')
    return mod.CvBridge()


@pytest.fixture(scope='module')
def pc2():
    """Return sensor_msgs_py.point_cloud2, or skip."""
    return pytest.importorskip(
        'sensor_msgs_py.point_cloud2', reason='sensor_msgs_py (ros-<distro>-sensor-msgs-py) is '
        'not installed; it comes with ROS 2, not from PyPI')


def our_images():
    """Return (encoding, array) pairs as dpt_ros publishes them: depth, viewers, labels."""
    depth = RNG.uniform(0.2, 9.0, (37, 53)).astype(np.float32)
    depth[3:9, 4:20] = np.nan
    return [
        ('32FC1', conv.depth_to_encoded(depth, '32FC1')),
        ('16UC1', conv.depth_to_encoded(depth, '16UC1')),
        ('rgb8', RNG.integers(0, 256, (37, 53, 3)).astype(np.uint8)),
        ('mono8', RNG.integers(0, 150, (37, 53)).astype(np.uint8)),
        ('mono16', RNG.integers(0, 300, (37, 53)).astype(np.uint16)),
    ]


@pytest.mark.parametrize('encoding, arr', our_images(), ids=lambda v: getattr(v, 'shape', v))
def test_our_images_read_back_through_cv_bridge(encoding, arr):
    bridge = cv_bridge()
    msg = conv.image_msg(None, arr, encoding)
    back = bridge.imgmsg_to_cv2(msg, desired_encoding='passthrough')
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert np.array_equal(back, arr, equal_nan=arr.dtype.kind == 'f')


@pytest.mark.parametrize('encoding, channels, dtype', [
    ('rgb8', 3, np.uint8), ('bgr8', 3, np.uint8), ('rgba8', 4, np.uint8),
    ('bgra8', 4, np.uint8), ('mono8', 1, np.uint8), ('mono16', 1, np.uint16),
    ('32FC1', 1, np.float32)])
def test_cv_bridge_images_decode_in_dpt_ros(encoding, channels, dtype):
    """What a driver or a user publishes with cv2_to_imgmsg is what we decode."""
    bridge = cv_bridge()
    shape = (29, 41) if channels == 1 else (29, 41, channels)
    if dtype is np.float32:
        arr = RNG.uniform(0.1, 5.0, shape).astype(np.float32)
    else:
        arr = RNG.integers(0, np.iinfo(dtype).max, shape).astype(dtype)
    msg = bridge.cv2_to_imgmsg(arr, encoding=encoding)
    if encoding == '32FC1':
        assert np.array_equal(conv.image_to_array(msg), arr)
        return
    frame = conv.decode_image(msg)
    assert frame.layout == encoding
    assert np.array_equal(frame.pixels.reshape(arr.shape), arr)


@pytest.fixture(scope='module')
def cloud_result(pc2, checkpoints):
    """Return a real pipeline result: an organized cloud with NaN where depth is invalid."""
    pipe = Pipeline(Config().replace({'model.depth': str(checkpoints('tiny-depth-anything')),
                                      'model.device': 'cpu', 'depth.max': 9.99}),
                    log=lambda m: None)
    s = synthetic_scene(64, 48)
    r = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics)
    nan = np.isnan(r.arrays.get('points')[:, 2])
    assert 0 < nan.sum() < nan.size  # both valid and invalid points: the check means something
    return r


@pytest.mark.parametrize('organized', [True, False])
def test_our_clouds_read_back_through_sensor_msgs_py(pc2, cloud_result, organized):
    pts = cloud_result.arrays.get('points')
    h, w = cloud_result.points_shape
    if not organized:
        pts = pts[np.isfinite(pts[:, 2])]
        h, w = 1, pts.shape[0]
    msg = conv.pointcloud_msg(None, pts, h, w, rgb=True)
    xyz = pc2.read_points_numpy(msg, field_names=('x', 'y', 'z'), skip_nans=False)
    assert xyz.shape == (h * w, 3)  # every point, in row order (no width/height mix-up)
    assert np.array_equal(xyz, pts[:, :3], equal_nan=True)
    both = pc2.read_points_numpy(msg, field_names=('x', 'y', 'z', 'rgb'), skip_nans=True)
    finite = np.isfinite(pts[:, :3]).all(axis=1)
    assert np.array_equal(both, pts[finite])
    assert np.array_equal(both[:, 3].view(np.uint32), pts[finite, 3].view(np.uint32))
    rgb = conv.unpack_rgb(both[:, 3])
    assert rgb.std() > 0  # real colours, not zeros
    structured = pc2.read_points(msg, skip_nans=True)
    assert np.array_equal(structured['rgb'].view(np.uint32), pts[finite, 3].view(np.uint32))


def test_cloud_without_rgb_reads_back(pc2, cloud_result):
    h, w = cloud_result.points_shape
    msg = conv.pointcloud_msg(None, cloud_result.arrays.get('points'), h, w, rgb=False)
    assert [f.name for f in msg.fields] == ['x', 'y', 'z']
    xyz = pc2.read_points_numpy(msg, skip_nans=False)
    assert np.array_equal(xyz, cloud_result.arrays.get('points')[:, :3], equal_nan=True)
