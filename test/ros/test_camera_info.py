# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Rectified or raw input through the node over DDS: which intrinsics the points use."""

import cv2
import numpy as np

from dpt_ros.core import conversions as conv
from dpt_ros.core import outputs
from dpt_ros.tools.sample import synthetic_scene

from rosutil import backproject_check, header, stamp_of, stereo_right_camera_info  # noqa: I100

NS = '/stereo/right'
DEPTH, INFO, POINTS = (outputs.BY_NAME[n].topic for n in ('depth', 'depth_info', 'points'))


def run_one_frame(harness, tiny_metric, **params):
    """Start a node with these parameters, send one 640x480 frame; return its outputs."""
    node = harness.start_node(NS, **dict({'model.depth': str(tiny_metric),
                                          'model.device': 'cpu'}, **params))
    harness.record_outputs(NS, [DEPTH, INFO, POINTS])
    image_pub, info_pub = harness.publishers(NS)
    assert harness.wait_subscribed(image_pub)
    h = header(7)
    info = stereo_right_camera_info()
    info.header = h
    info_pub.publish(info)
    assert harness.wait(lambda: node.cameras[0].camera_info is not None, 10)
    image_pub.publish(conv.image_msg(h, synthetic_scene(640, 480).rgb, 'rgb8'))
    out = {}
    for topic in (DEPTH, INFO, POINTS):
        name = f'{NS}/{topic}'
        stamp = conv.stamp_ns(h)
        assert harness.wait(
            lambda: any(stamp_of(m) == stamp for m in harness.get(name)), 30), name
        out[topic] = harness.get(name)[-1]
    return out


def test_rectified_input_matches_depth_image_proc(harness, tiny_metric):
    """Default (image_rect): depth_image_proc on depth/image + depth/camera_info = points."""
    out = run_one_frame(harness, tiny_metric)
    depth = conv.image_to_array(out[DEPTH])
    info = out[INFO]
    assert list(info.p) == list(stereo_right_camera_info().p)
    assert np.isfinite(depth).mean() > 0.5
    err = backproject_check(out[POINTS], depth, info)
    assert err < 1e-4, f'points differ from depth_image_proc by {err} m'


def test_raw_input_undistorts_with_k_and_d(harness, tiny_metric):
    out = run_one_frame(harness, tiny_metric, **{'input.rectified': False})
    depth = conv.image_to_array(out[DEPTH]).astype(np.float64)
    pts = conv.read_points(out[POINTS])
    info = stereo_right_camera_info()
    k = np.array(info.k).reshape(3, 3)
    v, u = np.mgrid[0:480, 0:640].astype(np.float64)
    ok = np.isfinite(depth)
    assert ok.mean() > 0.5
    assert np.array_equal(np.isfinite(pts['z']), ok)
    assert np.array_equal(pts['z'][ok], depth[ok].astype(np.float32))
    # each point lies on its pixel's ray: K and D project it back onto that pixel
    xyz = np.stack([pts['x'][ok], pts['y'][ok], pts['z'][ok]], 1).astype(np.float64)
    uv, _ = cv2.projectPoints(xyz, np.zeros(3), np.zeros(3), k, np.array(info.d))
    assert np.abs(uv.reshape(-1, 2) - np.stack([u[ok], v[ok]], 1)).max() < 0.01
    # and that is not what depth_image_proc would compute from P: the two modes differ
    assert backproject_check(out[POINTS], depth, out[INFO]) > 0.01
