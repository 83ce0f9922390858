# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Anchor decoding: depth images and clouds -> colour-image pixels, bad messages, pairing."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from dpt_ros.core import anchors as anc
from dpt_ros.core.conversions import image_fields
from dpt_ros.core.geometry import Intrinsics

INTR = Intrinsics(fx=100.0, fy=100.0, cx=31.5, cy=23.5, width=64, height=48)


def _header(stamp_ns=0, frame='cam'):
    return SimpleNamespace(stamp=SimpleNamespace(sec=stamp_ns // 10**9,
                                                 nanosec=stamp_ns % 10**9), frame_id=frame)


def _image(arr, encoding, stamp_ns=0, pad=0, bigendian=False, frame='cam'):
    if bigendian:
        arr = arr.astype(arr.dtype.newbyteorder('>'))
    f = image_fields(arr, encoding)
    data = f['data'].reshape(arr.shape[0], -1)
    if pad:
        data = np.concatenate([data, np.zeros((arr.shape[0], pad), np.uint8)], 1)
    return SimpleNamespace(height=f['height'], width=f['width'], encoding=encoding,
                           is_bigendian=int(bigendian), step=f['step'] + pad,
                           data=data.tobytes(), header=_header(stamp_ns, frame))


def _cloud(xyz, frame='cam', stamp_ns=0, dtype='<f4', extra=0, names='xyz'):
    n = xyz.shape[0]
    size = np.dtype(dtype).itemsize
    step = xyz.shape[1] * size + extra
    rec = np.zeros((n, step), np.uint8)
    raw = np.ascontiguousarray(xyz.astype(dtype)).view(np.uint8).reshape(n, -1)
    rec[:, :xyz.shape[1] * size] = raw
    kind = 7 if size == 4 else 8
    fields = [SimpleNamespace(name=c, offset=i * size, datatype=kind, count=1)
              for i, c in enumerate(names)]
    return SimpleNamespace(height=1, width=n, fields=fields, is_bigendian=False,
                           point_step=step, row_step=step * n, data=rec.tobytes(),
                           header=_header(stamp_ns, frame))


def test_registered_depth_16uc1_and_32fc1():
    mm = np.zeros((48, 64), np.uint16)
    mm[10, 20], mm[30, 5] = 1500, 2750
    a = anc.from_depth_image(_image(mm, '16UC1', pad=6), (64, 48), image_frame='cam')
    assert sorted(zip(a.u.tolist(), a.v.tolist(), a.z.tolist())) == \
        [(5.0, 30.0, pytest.approx(2.75)), (20.0, 10.0, pytest.approx(1.5))]
    assert a.received == 2
    m = np.full((48, 64), np.nan, np.float32)
    m[1, 2], m[3, 4], m[5, 6] = 0.8, 0.0, -1.0  # 0 and negative are no reading
    b = anc.from_depth_image(_image(m, '32FC1', stamp_ns=2_500_000_000, bigendian=True),
                             (64, 48), image_frame='cam')
    assert (b.u.tolist(), b.v.tolist(), b.z.tolist()) == ([2.0], [1.0], [pytest.approx(0.8)])
    assert b.stamp == 2.5


def test_other_resolution_resampled_with_its_camera_info():
    half = Intrinsics(fx=50.0, fy=50.0, cx=15.75, cy=11.75, width=32, height=24)
    z = np.zeros((24, 32), np.float32)
    z[6, 8] = 2.0
    a = anc.from_depth_image(_image(z, '32FC1'), (64, 48), INTR, half, image_frame='cam')
    # Same optical frame, other intrinsics: the ray through depth pixel (8, 6).
    assert a.u[0] == pytest.approx((8 - 15.75) / 50 * 100 + 31.5)
    assert a.v[0] == pytest.approx((6 - 11.75) / 50 * 100 + 23.5)
    assert a.z[0] == pytest.approx(2.0)
    with pytest.raises(anc.AnchorError, match='anchors/camera_info'):
        anc.from_depth_image(_image(z, '32FC1'), (64, 48), INTR, None, image_frame='cam')


@pytest.mark.parametrize('msg, words', [
    (_image(np.ones((4, 4, 3), np.uint8), 'rgb8'), ['rgb8', '16UC1']),
    (_image(np.zeros((48, 64), np.uint16), '16UC1'), ['no valid depth']),
    (_image(np.full((48, 64), np.nan, np.float32), '32FC1'), ['no valid depth']),
    (SimpleNamespace(height=48, width=64, encoding='16UC1', is_bigendian=0, step=128,
                     data=b'\x00' * 100, header=_header()), ['100 bytes']),
])
def test_bad_depth_messages_name_the_problem(msg, words):
    with pytest.raises(anc.AnchorError) as info:
        anc.from_depth_image(msg, (64, 48), image_frame='cam')
    for w in words:
        assert w in str(info.value)


def test_cloud_projection_drops_behind_and_outside():
    xyz = np.array([[0.0, 0.0, 2.0],     # centre
                    [0.2, -0.1, 1.0],    # (51.5, 13.5)
                    [0.0, 0.0, -1.0],    # behind
                    [5.0, 0.0, 1.0],     # outside
                    [np.nan, 0.0, 1.0]])
    a = anc.from_points(_cloud(xyz, extra=4), INTR, 'cam')
    assert a.received == 4
    assert np.allclose(np.c_[a.u, a.v, a.z], [[31.5, 23.5, 2.0], [51.5, 13.5, 1.0]])
    b = anc.from_points(_cloud(xyz, dtype='<f8'), INTR, 'cam')
    assert b.z.size == 2


def test_fisheye_with_zero_distortion_projects_equidistant():
    """Anchors of a raw fisheye land on the pixels whose points they are, D = 0 or not."""
    f = 800.0 / math.pi  # 45 degrees off axis lies 200 px from the principal point
    for d in ((0.0, 0.0, 0.0, 0.0), (), (1e-9, 0.0, 0.0, 0.0)):
        intr = Intrinsics(fx=f, fy=f, cx=319.0, cy=239.0, width=640, height=480,
                          distortion_model='equidistant', d=d)
        a = anc.from_points(_cloud(np.array([[2.0, 0.0, 2.0]])), intr, 'cam')
        assert (a.u[0], a.v[0]) == pytest.approx((519.0, 239.0), abs=1e-3), d


def test_cloud_through_the_extrinsic():
    # A lidar frame: x forward, y left, z up; pose in the optical frame (x right, y down,
    # z forward) is the rotation taking lidar x -> optical z, lidar y -> optical -x.
    rot = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], float)
    ext = anc.extrinsic_matrix('0.1 0 0 0.5 -0.5 0.5 0.5')  # that rotation as qx qy qz qw
    assert np.allclose(ext[:3, :3], rot) and np.allclose(ext[:3, 3], [0.1, 0, 0])
    lidar = np.array([[2.0, -0.1, 0.0]])  # 2 m ahead, 0.1 m right
    a = anc.from_points(_cloud(lidar, frame='lidar'), INTR, 'cam', ext)
    assert a.z[0] == pytest.approx(2.0)
    assert a.u[0] == pytest.approx((0.1 + 0.1) / 2.0 * 100 + 31.5)
    with pytest.raises(anc.AnchorError, match="'lidar'.*anchors.extrinsic"):
        anc.from_points(_cloud(lidar, frame='lidar'), INTR, 'cam')
    # A cloud already in the image's frame is used as it is, extrinsic or not (as a depth
    # image in the image's frame is): moving it would put it 0.1 m off, silently.
    optical = np.array([[0.2, -0.1, 1.0]])
    same = anc.from_points(_cloud(optical, frame='cam'), INTR, 'cam', ext)
    assert same.z.size == 1
    assert np.allclose(np.c_[same.u, same.v, same.z], [[51.5, 13.5, 1.0]])


@pytest.mark.parametrize('cloud_frame, image_frame, refused', [
    ('', 'cam', True), ('cam', '', True), ('', '', False)])
def test_an_empty_frame_id_on_one_side_is_refused(cloud_frame, image_frame, refused):
    # Nothing to check the registration by: refused, not taken as registered.
    xyz = np.array([[0.2, -0.1, 1.0]])
    depth = np.zeros((48, 64), np.float32)
    depth[10, 20] = 1.5
    if not refused:
        assert anc.from_points(_cloud(xyz, frame=cloud_frame), INTR, image_frame).z.size == 1
        assert anc.from_depth_image(_image(depth, '32FC1', frame=cloud_frame), (64, 48),
                                    image_frame=image_frame).z.size == 1
        return
    with pytest.raises(anc.AnchorError, match='no frame_id.*cannot be checked'):
        anc.from_points(_cloud(xyz, frame=cloud_frame), INTR, image_frame)
    with pytest.raises(anc.AnchorError, match='no frame_id.*cannot be checked'):
        anc.from_depth_image(_image(depth, '32FC1', frame=cloud_frame), (64, 48),
                             image_frame=image_frame)


@pytest.mark.parametrize('msg, intr, words', [
    (_cloud(np.ones((3, 2)), names='xy'), INTR, ['no z field']),
    (_cloud(np.full((3, 3), np.nan)), INTR, ['no finite point']),
    (_cloud(np.ones((2, 3))), None, ['camera_info']),
])
def test_bad_clouds_name_the_problem(msg, intr, words):
    with pytest.raises(anc.AnchorError) as info:
        anc.from_points(msg, intr, 'cam')
    for w in words:
        assert w in str(info.value)


def test_short_cloud_data_is_refused():
    msg = _cloud(np.ones((4, 3)))
    msg.data = msg.data[:20]
    with pytest.raises(anc.AnchorError, match='bytes'):
        anc.from_points(msg, INTR, 'cam')


def test_subsample_and_pairing_by_stamp():
    a = anc.Anchors(np.arange(100.0), np.zeros(100), np.ones(100), 100, 0.0)
    s = anc.subsample(a, 10, np.random.default_rng(0))
    assert s.z.size == 10 and s.received == 100 and len(set(s.u.tolist())) == 10
    buf = anc.AnchorBuffer(size=4)
    for t in (1.0, 1.1, 1.2, 1.3, 1.4):
        buf.add(SimpleNamespace(header=_header(int(t * 1e9)), t=t))
    assert len(buf) == 4  # bounded
    assert buf.nearest(int(1.26e9), 0.1).t == 1.3
    assert buf.nearest(int(0.95e9), 0.1) is None  # 1.0 fell out, 1.1 is too far
    assert buf.nearest(int(2.0e9), 0.1) is None
    buf.add(SimpleNamespace(header=_header(int(0.1e9)), t=0.1))  # a looping bag
    assert len(buf) == 1 and buf.nearest(int(0.12e9), 0.1).t == 0.1


def test_anchor_input_pairs_decodes_counts_and_subsamples():
    from dpt_ros.core.config import AnchorsConfig
    cfg = AnchorsConfig(max_age=0.05, max_points=50)
    inp = anc.AnchorInput('depth_image')
    z = np.full((48, 64), 1.5, np.float32)
    inp.add(_image(z, '32FC1', stamp_ns=1_000_000_000))
    inp.add(_image(np.zeros((4, 4, 3), np.uint8), 'rgb8', stamp_ns=2_000_000_000))
    a = inp.for_frame(1_020_000_000, (64, 48), INTR, 'cam', cfg)
    assert a.received == 48 * 64 and a.z.size == 50 and np.allclose(a.z, 1.5)
    assert inp.for_frame(1_500_000_000, (64, 48), INTR, 'cam', cfg) is None  # none near
    with pytest.raises(anc.AnchorError, match='rgb8'):
        inp.for_frame(2_000_000_000, (64, 48), INTR, 'cam', cfg)
    assert (inp.messages, inp.bad) == (2, 1)
    # Another resolution: its camera_info comes on anchors/camera_info.
    from dpt_ros.core.conversions import camera_info_from_intrinsics
    half = Intrinsics(fx=50.0, fy=50.0, cx=15.75, cy=11.75, width=32, height=24)
    inp.add(_image(np.full((24, 32), 2.0, np.float32), '32FC1', stamp_ns=3_000_000_000))
    with pytest.raises(anc.AnchorError, match='anchors/camera_info'):
        inp.for_frame(3_000_000_000, (64, 48), INTR, 'cam', cfg)
    pytest.importorskip('sensor_msgs', reason='CameraInfo messages need sensor_msgs')
    inp.set_info(camera_info_from_intrinsics(half))
    b = inp.for_frame(3_000_000_000, (64, 48), INTR, 'cam', cfg)
    assert b.received == 32 * 24 and b.u.min() >= -0.5 and b.u.max() <= 63.5
    pts = anc.AnchorInput('points')
    pts.add(_cloud(np.array([[0.0, 0.0, 2.0]]), frame='lidar'))
    c = pts.for_frame(0, (64, 48), INTR, 'cam', AnchorsConfig(extrinsic='0 0 0 0 0 0 1'))
    assert c.z.tolist() == [2.0]


def test_a_dense_message_gets_the_same_anchor_subset_whatever_was_decoded_before():
    """The node skips frames under load, dpt_bag takes every one: both fit the same anchors."""
    from dpt_ros.core.config import AnchorsConfig
    cfg = AnchorsConfig(max_age=0.05, max_points=50)
    z = np.random.default_rng(4).uniform(0.5, 5.0, (48, 64)).astype(np.float32)

    def msg(i):
        return _image(z * (1 + i), '32FC1', stamp_ns=1_000_000_000 + i * 100_000_000)

    every, skipping = anc.AnchorInput('depth_image'), anc.AnchorInput('depth_image')
    for i in range(4):
        every.add(msg(i))
        a = every.for_frame(1_000_000_000 + i * 100_000_000, (64, 48), INTR, 'cam', cfg)
    skipping.add(msg(3))  # only the last message was decoded
    b = skipping.for_frame(1_300_000_000, (64, 48), INTR, 'cam', cfg)
    assert a.z.size == 50 and np.array_equal(a.u, b.u) and np.array_equal(a.v, b.v)
    assert np.array_equal(a.z, b.z)
    # and another message's subset is another one (a seed per message, not one for all)
    assert not np.array_equal(every.for_frame(1_000_000_000, (64, 48), INTR, 'cam', cfg).u,
                              a.u)


def test_anchor_input_reuses_the_decoded_message_and_counts_frames():
    from dpt_ros.core.config import AnchorsConfig
    cfg = AnchorsConfig(max_age=0.05, max_points=50)
    inp = anc.AnchorInput('depth_image')
    inp.add(_image(np.full((48, 64), 1.5, np.float32), '32FC1', stamp_ns=1_000_000_000))
    a = inp.for_frame(1_000_000_000, (64, 48), INTR, 'cam', cfg)
    # A camera faster than its anchors: the next frame pairs the same message, decoded once.
    assert inp.for_frame(1_030_000_000, (64, 48), INTR, 'cam', cfg) is a
    # Another image size or setting decodes again.
    assert inp.for_frame(1_030_000_000, (64, 48), INTR, 'cam',
                         AnchorsConfig(max_age=0.05, max_points=20)).z.size == 20
    inp.add(_image(np.full((48, 64), 2.5, np.float32), '32FC1', stamp_ns=1_060_000_000))
    b = inp.for_frame(1_060_000_000, (64, 48), INTR, 'cam', cfg)
    assert b is not a and np.allclose(b.z, 2.5)
    assert inp.for_frame(2_000_000_000, (64, 48), INTR, 'cam', cfg) is None
    # Fields that make no sense together are an AnchorError, never another exception.
    broken = _image(np.ones((48, 64), np.float32), '32FC1', stamp_ns=3_000_000_000)
    broken.data = None
    inp.add(broken)
    with pytest.raises(anc.AnchorError, match='undecodable'):
        inp.for_frame(3_000_000_000, (64, 48), INTR, 'cam', cfg)
    assert (inp.messages, inp.paired, inp.unpaired, inp.bad) == (3, 4, 1, 1)


def test_dense_depth_image_subsampled_before_decoding_the_rest():
    rng = np.random.default_rng(0)
    mm = rng.integers(500, 5000, (48, 64)).astype(np.uint16)
    mm[rng.random((48, 64)) < 0.3] = 0
    a = anc.from_depth_image(_image(mm, '16UC1'), (64, 48), max_points=100, rng=rng,
                             image_frame='cam')
    assert a.received == int((mm > 0).sum()) and a.z.size == 100
    u, v = a.u.astype(int), a.v.astype(int)
    assert len(set(zip(u.tolist(), v.tolist()))) == 100  # distinct pixels
    assert np.allclose(a.z, mm[v, u] / 1000.0) and (mm[v, u] > 0).all()
    half = Intrinsics(fx=50.0, fy=50.0, cx=15.75, cy=11.75, width=32, height=24)
    b = anc.from_depth_image(_image(mm[::2, ::2].copy(), '16UC1'), (64, 48), INTR, half,
                             max_points=40, rng=rng, image_frame='cam')
    assert b.received == int((mm[::2, ::2] > 0).sum()) and b.z.size == 40


def test_depth_image_of_another_frame_is_refused_naming_both_frames():
    from dpt_ros.core.config import AnchorsConfig
    z = np.zeros((48, 64), np.float32)
    z[10, 20] = 2.0
    msg = _image(z, '32FC1')
    msg.header.frame_id = 'camera_depth_optical_frame'  # a RealSense depth/image_rect_raw
    words = "'camera_depth_optical_frame'.*'camera_color_optical_frame'.*anchors.extrinsic"
    with pytest.raises(anc.AnchorError, match=words):
        anc.from_depth_image(msg, (64, 48), INTR, None,
                             image_frame='camera_color_optical_frame')
    # What the node and dpt_bag call: refused and counted, whatever the size says.
    inp = anc.AnchorInput('depth_image')
    inp.add(msg)
    with pytest.raises(anc.AnchorError, match=words):
        inp.for_frame(0, (64, 48), INTR, 'camera_color_optical_frame', AnchorsConfig())
    assert inp.bad == 1 and inp.paired == 0
    # With the extrinsic, the depth camera's own calibration is needed as well.
    with pytest.raises(anc.AnchorError, match="frame 'camera_depth_optical_frame'.*anchors/"):
        anc.from_depth_image(msg, (64, 48), INTR, None, image_frame='camera_color_optical_frame',
                             extrinsic=anc.extrinsic_matrix('0 0 0 0 0 0 1'))
    # Registered (aligned_depth_to_color: the colour frame): pixel for pixel, an extrinsic
    # meant for other anchors notwithstanding.
    msg.header.frame_id = 'camera_color_optical_frame'
    for ext in (None, anc.extrinsic_matrix('0.5 0 0 0 0 0 1')):
        a = anc.from_depth_image(msg, (64, 48), INTR, None, extrinsic=ext,
                                 image_frame='camera_color_optical_frame')
        assert (a.u.tolist(), a.v.tolist(), a.z.tolist()) == ([20.0], [10.0], [2.0])


def test_depth_image_of_another_camera_through_the_extrinsic():
    # A depth camera 5 cm left of and 1 cm below the colour camera, yawed 10 degrees, with a
    # wider view and another size, sees a tilted plane n . X = 2 m (colour optical frame).
    depth_cam = Intrinsics(fx=60.0, fy=60.0, cx=39.5, cy=29.5, width=80, height=60)
    yaw = np.radians(10.0)
    ext = anc.extrinsic_matrix(f'-0.05 0.01 0 0 {np.sin(yaw / 2)} 0 {np.cos(yaw / 2)}')
    rot, t = ext[:3, :3], ext[:3, 3]
    assert np.allclose(rot @ [0, 0, 1], [np.sin(yaw), 0, np.cos(yaw)])
    n = np.array([0.2, -0.1, 1.0]) / np.linalg.norm([0.2, -0.1, 1.0])
    vv, uu = np.mgrid[0:60, 0:80]
    rays = np.stack([(uu - 39.5) / 60.0, (vv - 29.5) / 60.0, np.ones((60, 80))], -1)
    # The point s * ray (depth frame) is R s ray + t (colour frame); on the plane at s = z.
    z = ((2.0 - n @ t) / (rays @ rot.T @ n)).astype(np.float32)
    msg = _image(z, '32FC1')
    msg.header.frame_id = 'camera_depth_optical_frame'
    a = anc.from_depth_image(msg, (64, 48), INTR, depth_cam,
                             image_frame='camera_color_optical_frame', extrinsic=ext)
    assert a.received == 80 * 60 and 1000 < a.z.size < 0.3 * 80 * 60  # a wider view
    assert a.u.min() > -0.5 and a.u.max() < 63.5 and a.v.min() > -0.5 and a.v.max() < 47.5
    # Each anchor lies on the plane along its own colour pixel's ray: z = 2 / (n . ray).
    ray = np.stack([(a.u - INTR.cx) / INTR.fx, (a.v - INTR.cy) / INTR.fy, np.ones(a.z.size)], 1)
    assert np.allclose(a.z, 2.0 / (ray @ n), rtol=1e-5)
    # Pixel for pixel (what was done before) would put them elsewhere.
    naive = z[:48, :64]
    assert np.abs(naive - 2.0 / (np.stack([(uu[:48, :64] - INTR.cx) / INTR.fx,
                                           (vv[:48, :64] - INTR.cy) / INTR.fy,
                                           np.ones((48, 64))], -1) @ n)).max() > 0.05


def test_a_frame_waits_only_for_an_anchor_that_would_be_nearer_and_come_first():
    ms = 1_000_000
    depth = np.ones((48, 64), np.float32)

    def stream(*stamps_ms):
        inp = anc.AnchorInput('depth_image')
        for t in stamps_ms:
            inp.add(_image(depth, '32FC1', stamp_ns=t * ms))
        return inp
    assert anc.AnchorInput('depth_image').pending(0, 1.0) is False  # no stream yet
    # The stream's period not known yet (one message): wait, as for any stream.
    assert stream(1000).pending(1033 * ms, 1.0)
    # A 10 Hz lidar, the camera's period not known yet (its first frame): wait only when the
    # next anchor (due at 1300) is nearer than the last (1200).
    assert not stream(1000, 1100, 1200).pending(1233 * ms, 1.0)  # 67 ms off, the last 33
    assert stream(1000, 1100, 1200).pending(1267 * ms, 1.0)      # 33 ms off, the last 67
    assert not stream(1000, 1100, 1200).pending(1200 * ms, 1.0)  # one stamped at it is in
    # ... under a 30 Hz camera: the frame at 1267 would be replaced by the one at 1300
    # before the anchor came, so it pairs with the last one now and is not lost.
    lidar = stream(1000, 1100, 1200)
    for t in (1201, 1234):
        lidar.pending(t * ms, 1.0)
    assert not lidar.pending(1267 * ms, 1.0)
    # Anchors stamped as the images (an aligned depth image): every frame waits for its own.
    aligned = stream(1000, 1033, 1066)
    for t in (1033, 1066):
        aligned.pending(t * ms, 1.0)
    assert aligned.pending(1099 * ms, 1.0)
    # Images stamped far ahead of their anchors (clocks not in step): the next anchor could
    # not pair within max_age either, so no frame waits for it.
    assert stream(1000, 1100, 1200).pending(1267 * ms, 1.0, 0.1)
    assert not stream(1000, 1100, 1200).pending(101_200 * ms, 1.0, 0.1)
    # A stream running late (a loaded node: its anchors 0.2-0.5 s behind the newest image on
    # Kilted) catches up: the frame waits for its own anchor as before.
    fast = stream(*range(1000, 1201, 67))
    assert fast.pending(1668 * ms, 1.0, 0.1)  # 0.47 s behind
    assert not fast.pending(2400 * ms, 1.0, 0.1)  # 1.2 s behind: max_age + 1 s


def _rotation(q):
    """Rotation matrix of a unit quaternion (qx, qy, qz, qw)."""
    return anc.extrinsic_matrix('0 0 0 ' + ' '.join(str(v) for v in q))[:3, :3]


def test_one_lidar_two_cameras_each_anchored_through_its_own_pose():
    """anchors.camera_extrinsics: the front and the rear camera see one cloud at true pixels."""
    from dpt_ros.core.config import config_from_flat
    from dpt_ros.core.conversions import Frame
    from dpt_ros.core.frames import FrameIn
    # The lidar (x forward, y left, z up) 0.3 m above both; front looks along its x, rear
    # (turned half a turn about the lidar's z) along its -x.
    poses = {'front': ('0 -0.3 0.1', (0.5, -0.5, 0.5, 0.5)),
             'rear': ('0 -0.3 0.2', (-0.5, -0.5, 0.5, -0.5))}
    assert np.allclose(_rotation(poses['rear'][1]) @ [-1, 0, 0], [0, 0, 1])  # -x ahead
    cfg = config_from_flat({
        'cameras': ['front', 'rear'], 'depth.mode': 'fitted', 'anchors.source': 'points',
        'anchors.extrinsic': '0 -0.3 0.1 0.5 -0.5 0.5 0.5',  # front's, the rest's default
        'anchors.camera_extrinsics': [f'rear: {poses["rear"][0]} '
                                      + ' '.join(map(str, poses['rear'][1]))]}).anchors
    rng = np.random.default_rng(3)
    # Points around the robot: ahead of front and ahead of rear, in the lidar frame.
    lidar = np.c_[rng.uniform(2, 6, 200), rng.uniform(-1, 1, 200), rng.uniform(-0.5, 0.2, 200)]
    lidar = np.concatenate([lidar, lidar * [-1, 1, 1]])
    msg = _cloud(lidar, frame='lidar', stamp_ns=1_000_000_000)
    shared = anc.AnchorInput('points')
    shared.add(msg)
    for name, (t, q) in poses.items():
        pts = lidar @ _rotation(q).T + np.array(t.split(), float)
        ahead = pts[:, 2] > 0
        u = pts[ahead, 0] / pts[ahead, 2] * INTR.fx + INTR.cx
        v = pts[ahead, 1] / pts[ahead, 2] * INTR.fy + INTR.cy
        inside = (u > -0.5) & (u < 63.5) & (v > -0.5) & (v < 47.5)
        truth = np.c_[u[inside], v[inside], pts[ahead, 2][inside]]
        assert truth.shape[0] > 20, name
        own = anc.AnchorInput('points')
        own.add(msg)
        for inp in (own, shared):  # one input per camera (the node's), or one for both
            f = FrameIn(Frame(np.zeros((48, 64, 3), np.uint8), 'rgb8'),
                        _header(1_000_000_000, 'cam_' + name), camera=name, intrinsics=INTR)
            a = f.pair(inp, cfg)
            got = np.c_[a.u, a.v, a.z]
            assert got.shape == truth.shape, name
            assert np.allclose(got, truth.astype(np.float32), atol=1e-3), name
    # With one pose for both (anchors.extrinsic alone), rear's anchors are another camera's.
    alone = anc.AnchorInput('points')
    alone.add(msg)
    f = FrameIn(Frame(np.zeros((48, 64, 3), np.uint8), 'rgb8'),
                _header(1_000_000_000, 'cam_rear'), camera='rear', intrinsics=INTR)
    wrong = f.pair(alone, config_from_flat({'anchors.extrinsic': cfg.extrinsic}).anchors)
    got = np.c_[wrong.u, wrong.v, wrong.z]
    assert got.shape != truth.shape or not np.allclose(got, truth, atol=0.05)
