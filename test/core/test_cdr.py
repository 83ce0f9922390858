# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""CDR bytes path: rclpy deserializes our bytes to exactly the message the message path builds."""

import time

import numpy as np
import pytest

from dpt_ros.core import cdr
from dpt_ros.core import conversions as conv
from dpt_ros.core import outputs
from dpt_ros.core.geometry import Intrinsics
from dpt_ros.core.outputs import EncodeOptions, Result

serialization = pytest.importorskip('rclpy.serialization',
                                    reason='rclpy (ROS 2) is not installed')
msgs = pytest.importorskip('sensor_msgs.msg', reason='sensor_msgs (ROS 2) is not installed')
Time = pytest.importorskip('builtin_interfaces.msg').Time
Header = pytest.importorskip('std_msgs.msg').Header

from rosutil import same  # noqa: E402, I100

RNG = np.random.default_rng(3)
# Frame ids of every length mod 4 (the header's string sets the alignment of what follows).
FRAME_IDS = ['', 'c', 'ca', 'cam', 'camera_color_optical_frame', 'x' * 301]


def header(frame_id, sec=1_700_000_123, nanosec=456_789_012):
    return Header(frame_id=frame_id, stamp=Time(sec=sec, nanosec=nanosec))


def check(msg_type, fields, hdr, info=None):
    """Our bytes deserialize to the message path's message; return the bytes."""
    expected = conv.fields_to_msg(msg_type, fields, hdr, info)
    ours = cdr.fields_to_cdr(msg_type, fields, hdr, info)
    assert isinstance(ours, bytes)
    got = serialization.deserialize_message(ours, conv.msg_class(msg_type))
    same(got, expected)
    # As long as what rclpy writes (its padding bytes are not zeroed, so not compared).
    assert len(ours) == len(serialization.serialize_message(expected))
    # The chunks the node copies into its publishers' buffers: the same bytes, after
    # whatever a longer message left in the buffer.
    chunks = cdr.fields_to_serialized(msg_type, fields, hdr, info)
    assert chunks.nbytes == len(ours)
    buffer = bytearray(b'\xee' * (len(ours) + 5))
    assert chunks.write_into(buffer) == len(ours)
    assert bytes(buffer[:len(ours)]) == ours and buffer[len(ours):] == b'\xee' * 5
    with pytest.raises(ValueError, match='buffer of'):
        chunks.write_into(bytearray(len(ours) - 1))
    return ours


def full_result(h, w, labels_dtype=np.uint8, rgb=True, dense=False, extra=()):
    """Build a pipeline Result with every output set (random content, NaN in depth and cloud).

    extra: the cloud's columns after x y z rgb (normals, label, padding).
    """
    r = Result(h, w)
    depth = RNG.uniform(0.2, 9.0, (h, w)).astype(np.float32)
    depth[RNG.random((h, w)) < 0.2] = np.nan
    pts = RNG.normal(size=(h * w, 4 + len(extra))).astype(np.float32)
    if 'label' in extra:
        pts[:, 4 + extra.index('label')] = RNG.integers(0, 150, h * w).astype(
            np.uint32).view(np.float32)
    pts[RNG.random(h * w) < 0.2, :3] = np.nan
    if dense:
        pts = pts[np.isfinite(pts[:, 2])]
        r.points_shape = (1, len(pts))
    else:
        r.points_shape = (h, w)
    r.points_rgb = rgb
    r.points_extra = tuple(extra)
    normals = RNG.normal(size=(h, w, 3)).astype(np.float32)
    normals[RNG.random((h, w)) < 0.2] = np.nan
    r.arrays = {
        'normals': normals, 'normals_colored': RNG.integers(0, 256, (h, w, 3), dtype=np.uint8),

        'relative': RNG.random((h, w)).astype(np.float32), 'depth': depth, 'points': pts,
        'depth_colored': RNG.integers(0, 256, (h, w, 3), dtype=np.uint8),
        'labels': RNG.integers(0, np.iinfo(labels_dtype).max, (h, w)).astype(labels_dtype),
        'seg_colored': RNG.integers(0, 256, (h, w, 3), dtype=np.uint8),
        'overlay': RNG.integers(0, 256, (h, w, 3), dtype=np.uint8),
        'confidence': RNG.random((h, w)).astype(np.float32)}
    return r


def encoded(result, depth_encoding='32FC1'):
    """Return {output name: (message type, fields)} for every output of a Result."""
    return {o.name: (o.msg_type, f)
            for o, f in outputs.encode(result, EncodeOptions(depth_encoding, camera_info=True))}


def camera_info(w, h):
    info = conv.camera_info_from_intrinsics(Intrinsics(fx=500.5, fy=501.25, cx=w / 2 - 0.5,
                                                       cy=h / 2 + 0.25, width=w, height=h))
    return info


@pytest.mark.parametrize('frame_id', FRAME_IDS)
@pytest.mark.parametrize('h, w, encoding, labels_dtype, rgb, dense, extra', [
    (480, 640, '32FC1', np.uint8, True, False, ('normal_x', 'normal_y', 'normal_z', 'label')),
    (5, 7, '16UC1', np.uint16, False, False, ()),      # odd sizes: rows of 7 / 21 bytes
    (3, 1, '32FC1', np.uint16, True, True, ('label', '', '', '')),
    (9, 13, '16UC1', np.uint8, False, True, ('normal_x', 'normal_y', 'normal_z', '')),
])
def test_every_output_deserializes_to_the_message_path(frame_id, h, w, encoding, labels_dtype,
                                                       rgb, dense, extra):
    result = full_result(h, w, labels_dtype, rgb, dense, extra)
    fields = encoded(result, encoding)
    assert set(fields) == outputs.ALL, 'every published output is covered'
    hdr = header(frame_id)
    info = camera_info(w, h)
    for topic, (msg_type, f) in fields.items():
        ours = check(msg_type, f, hdr, info)
        back = serialization.deserialize_message(ours, conv.msg_class(msg_type))
        assert back.header.frame_id == frame_id, topic
    assert fields['depth'][1]['encoding'] == encoding
    assert fields['labels'][1]['encoding'] == ('mono8' if labels_dtype == np.uint8 else 'mono16')
    cloud = fields['points'][1]
    assert [f[0] for f in cloud['fields']] == (['x', 'y', 'z', 'rgb'] if rgb else
                                               ['x', 'y', 'z']) + [n for n in extra if n]
    assert cloud['point_step'] == 16 + 4 * len(extra)
    assert fields['normals'][1]['encoding'] == '32FC3'


def test_empty_cloud_and_negative_stamp_and_unicode_frame():
    fields = conv.pointcloud_fields(np.zeros((0, 4), np.float32), 1, 0, True)
    check(conv.CLOUD_TYPE, fields, header('kamera_ß', sec=-2, nanosec=0))
    img = conv.image_fields(np.zeros((1, 1), np.uint8), 'mono8')
    check(conv.IMAGE_TYPE, img, header('é' * 3, sec=0, nanosec=999_999_999))


@pytest.mark.parametrize('d', [[], [0.1, -0.2, 0.001, 0.002, 0.0],
                               [0.1, -0.2, 0.001, 0.002, 0.01, 0.3, -0.1, 0.02]])
@pytest.mark.parametrize('frame_id', FRAME_IDS[:4])
def test_camera_info_with_roi_binning_and_distortion(d, frame_id):
    info = camera_info(1280, 720)
    info.d = d
    info.distortion_model = 'rational_polynomial' if len(d) == 8 else 'plumb_bob'
    info.binning_x, info.binning_y = 2, 1
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 8, 4, 640, 360
    info.roi.do_rectify = True
    check(conv.INFO_TYPE, {}, header(frame_id), info)


def test_big_endian_payload_flag_is_kept():
    arr = np.arange(12, dtype='>u2').reshape(3, 4)
    fields = conv.image_fields(arr, '16UC1')
    assert fields['is_bigendian'] == 1
    check(conv.IMAGE_TYPE, fields, header('cam'))


def test_unknown_type_is_refused():
    with pytest.raises(ValueError, match='no CDR writer'):
        cdr.fields_to_cdr('sensor_msgs/msg/Imu', {}, header('cam'))


@pytest.mark.ros
def test_published_bytes_arrive_as_the_message(tmp_path):
    """A real publisher sends our bytes; a real subscriber gets the message path's message."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    ctx = Context()
    rclpy.init(context=ctx)
    node = Node('dpt_cdr_test', context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    try:
        result = full_result(48, 64, np.uint16, rgb=True)
        fields = encoded(result)
        hdr = header('camera_optical')
        info = camera_info(64, 48)
        got = {}
        pubs = {}
        for name, (msg_type, _) in fields.items():
            topic = f'/cdr_test/{outputs.BY_NAME[name].topic}'
            pubs[name] = node.create_publisher(conv.msg_class(msg_type), topic, 2)
            node.create_subscription(conv.msg_class(msg_type), topic,
                                     lambda m, n=name: got.__setitem__(n, m), 2)
        end = time.monotonic() + 10
        while time.monotonic() < end and any(p.get_subscription_count() == 0
                                             for p in pubs.values()):
            ex.spin_once(timeout_sec=0.05)
        for topic, (msg_type, f) in fields.items():
            pubs[topic].publish(cdr.fields_to_cdr(msg_type, f, hdr, info))
        end = time.monotonic() + 10
        while time.monotonic() < end and len(got) < len(fields):
            ex.spin_once(timeout_sec=0.05)
        assert set(got) == set(fields)
        for topic, (msg_type, f) in fields.items():
            same(got[topic], conv.fields_to_msg(msg_type, f, hdr, info), topic)
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)


def test_the_benchmark_reads_the_header_of_serialized_messages():
    """read_header: the stamp and frame of a serialized message (dpt_bench reads only that)."""
    for fid in FRAME_IDS:
        h = header(fid, sec=1_800_000_001, nanosec=999_999_999)
        for msg in (msgs.Image(header=h, height=2, width=3, encoding='rgb8', step=9,
                               data=bytes(range(18))),
                    msgs.PointCloud2(header=h, height=1, width=0)):
            data = serialization.serialize_message(msg)
            got = cdr.read_header(data)
            assert (got.stamp.sec, got.stamp.nanosec, got.frame_id) == \
                (1_800_000_001, 999_999_999, fid)
            assert cdr.header_stamp_ns(data) == 1_800_000_001 * 10**9 + 999_999_999
