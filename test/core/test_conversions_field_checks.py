# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Messages we build pass the field type checks Humble always runs (Jazzy: with an env var).

Humble's generated message classes assert every field's Python type on assignment (`if
__debug__`); Jazzy and Kilted do so only with ROS_PYTHON_CHECK_FIELDS=1, which conftest.py sets
for the whole suite. These tests pin the cases that passed unchecked before: a None header and
numpy scalars in CameraInfo.
"""

import os

import numpy as np
import pytest

from dpt_ros.core import conversions as conv
from dpt_ros.core.geometry import Intrinsics

msgs = pytest.importorskip('sensor_msgs.msg', reason='sensor_msgs (ROS 2) is not installed')
Header = pytest.importorskip('std_msgs.msg', reason='std_msgs is not installed').Header


def test_the_suite_runs_with_field_checks_on():
    assert os.environ.get('ROS_PYTHON_CHECK_FIELDS') == '1'
    with pytest.raises(AssertionError):
        msgs.Image().height = 2.5  # a float in a uint32 field: refused only when checks are on


def test_messages_built_without_a_header_keep_a_header():
    depth = np.full((3, 4), 2.0, np.float32)
    img = conv.image_msg(None, depth, '32FC1')
    pts = np.zeros((12, 4), np.float32)
    cloud = conv.pointcloud_msg(None, pts, 3, 4, rgb=False)
    info = conv.fields_to_msg(conv.INFO_TYPE, {}, None, conv.camera_info_from_intrinsics(
        Intrinsics(fx=5.0, fy=5.0, cx=2.0, cy=1.5, width=4, height=3)))
    for msg in (img, cloud, info):
        assert isinstance(msg.header, Header), type(msg).__name__
    header = Header(frame_id='cam')
    assert conv.image_msg(header, depth, '32FC1').header.frame_id == 'cam'


def test_camera_info_from_numpy_intrinsics_has_plain_types():
    # What geometry code hands over: numpy scalars, an integer principal point, float32 D.
    intr = Intrinsics(fx=np.float32(500.5), fy=np.float32(501.0), cx=320, cy=np.int64(240),
                      width=np.int64(640), height=np.int32(480), distortion_model='plumb_bob',
                      d=tuple(np.array([0.1, -0.2, 0.0, 0.0, 0.05], np.float32)))
    msg = conv.camera_info_from_intrinsics(intr, Header(frame_id='cam'))
    assert type(msg.width) is int and type(msg.height) is int
    assert (msg.width, msg.height) == (640, 480)
    assert list(msg.k) == pytest.approx([500.5, 0.0, 320.0, 0.0, 501.0, 240.0, 0.0, 0.0, 1.0])
    assert list(msg.p)[:3] == pytest.approx([500.5, 0.0, 320.0])
    assert list(msg.d) == pytest.approx([0.1, -0.2, 0.0, 0.0, 0.05], rel=1e-6)
    back = conv.intrinsics_from_camera_info(msg)
    assert (back.fx, back.cy, back.width) == (pytest.approx(500.5), 240.0, 640)
