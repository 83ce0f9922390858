# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""depth.mode fitted through the real node over DDS: anchor topics, metres, hold, diagnostics.

The depth model is the evaluation's oracle without noise (an exact affine map of the true
inverse depth of a dpt_ros.tools.sample scene, new per frame), so metres fitted to true anchors
must equal the scene's truth.
"""

import math
from pathlib import Path
import re
import subprocess
import sys
import time

import numpy as np

from dpt_ros.core import conversions as conv
from dpt_ros.core.anchors import extrinsic_matrix
from dpt_ros.core.config import Config
from dpt_ros.core.conversions import Frame
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.tools.evaluation import make_sequence, oracle_model, OracleDepth
from dpt_ros.tools.sample import synthetic_scene
from dpt_ros.tools.toolkit import write_params_file

from compresseddepthutil import compressed_depth  # noqa: I100
from rosutil import backproject_check, Harness, NodeProcess, stamp_of

from builtin_interfaces.msg import Time  # noqa: E402, I100
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rcl_interfaces.msg import Log  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from dpt_ros.ros import diagnostics as diag  # noqa: E402

NS = '/cam'
W, H = 96, 72
T0 = 1000.0  # image stamps in seconds, far from wall time (as a bag under sim time)
PERIOD = 0.1
CORRUPT = (0.1, 0.4, 0.25, 0.6)  # x0, x1, y0, y1: wrong in the unmirrored view only


def stamped(i, frame_id='camera_color_optical_frame'):
    """Return the header of frame i: 0.1 s apart from T0."""
    ns = int(round((T0 + PERIOD * i) * 1e9))
    return Header(frame_id=frame_id, stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9))


def start(harness, scenes, params, corrupt=None, cameras=(), lifecycle=False, ns=NS):
    """Start a node whose depth model is the noiseless oracle of these scenes; spin both."""
    oracle = OracleDepth(noise=0.0, lowfreq=0.0, symmetric=True, corrupt=corrupt)
    for s in scenes:
        oracle.register(s.rgb, s.depth)
    h, w = scenes[0].depth.shape
    cfg = Config().replace({'model.depth': 'oracle', 'model.device': 'cpu'})
    pipe = Pipeline(cfg, log=lambda m: None, depth_model=oracle_model(oracle, h, w))
    harness.record('/rosout', Log, QoSProfile(depth=1000))
    harness.record('/diagnostics', DiagnosticArray)
    params = dict({'model.depth': 'oracle', 'model.device': 'cpu'}, **params)
    return harness.start_node(ns, cameras=cameras, lifecycle=lifecycle, pipeline=pipe, **params)


def pick_pixels(scene, n, rng):
    """Return n random pixel indices (row-major) of the scene."""
    return rng.choice(scene.depth.size, n, replace=False)


def depth_anchors(scene, hdr, rng, n=300, factor=1.0, encoding='16UC1'):
    """Make a sparse depth image registered to the scene: n true depths (times factor)."""
    z = np.zeros(scene.depth.shape, np.float32)
    pick = pick_pixels(scene, n, rng)
    z.flat[pick] = scene.depth.flat[pick] * factor
    if encoding == '16UC1':
        return conv.image_msg(hdr, np.rint(z * 1000).astype(np.uint16), '16UC1')
    return conv.image_msg(hdr, np.where(z > 0, z, np.nan).astype(np.float32), '32FC1')


def cloud(hdr, xyz):
    """Make a dense PointCloud2 (x, y, z float32) from (N, 3) points."""
    pts = np.zeros((xyz.shape[0], 4), np.float32)
    pts[:, :3] = xyz
    return conv.pointcloud_msg(hdr, pts, 1, xyz.shape[0], False)


def true_points(scene, rng, n=300):
    """Return n true scene points in the camera optical frame."""
    intr = scene.intrinsics
    pick = pick_pixels(scene, n, rng)
    v, u = np.divmod(pick, scene.depth.shape[1])
    z = scene.depth.flat[pick].astype(np.float64)
    return np.stack([(u - intr.cx) / intr.fx * z, (v - intr.cy) / intr.fy * z, z], 1)


def region_mask(shape, box):
    h, w = shape
    x0, x1, y0, y1 = box
    m = np.zeros(shape, bool)
    m[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)] = True
    return m


class Rig:
    """Publishers of one camera (image, camera_info, anchors) and a frame-by-frame driver."""

    def __init__(self, harness, node, cam='', source='depth_image',
                 anchor_reliability=ReliabilityPolicy.RELIABLE):
        self.harness, self.node = harness, node
        self.prefix = f'{NS}/{cam}/' if cam else f'{NS}/'
        self.cam = next(c for c in node.cameras if c.name == cam)
        qos = QoSProfile(depth=5)
        self.image = harness.node.create_publisher(Image, self.prefix + 'image', qos)
        self.info = harness.node.create_publisher(CameraInfo, self.prefix + 'camera_info', qos)
        anchor_qos = QoSProfile(depth=5, reliability=anchor_reliability)
        kind, topic = {'points': (PointCloud2, 'anchors/points'),
                       'compressedDepth': (CompressedImage, 'anchors/depth/compressedDepth')
                       }.get(source, (Image, 'anchors/depth'))
        self.anchors = harness.node.create_publisher(kind, self.prefix + topic, anchor_qos)
        self.anchor_info = harness.node.create_publisher(
            CameraInfo, self.prefix + 'anchors/camera_info', qos)
        for t in ('depth/image', 'depth/relative', 'points', 'depth/confidence'):
            harness.record(self.prefix + t, PointCloud2 if t == 'points' else Image)
        assert harness.wait_subscribed(self.image) and harness.wait_subscribed(self.anchors), \
            'the node did not subscribe to image and anchors'

    def calibrate(self, scene):
        """Publish camera_info once and wait until the node has it."""
        self.info.publish(conv.camera_info_from_intrinsics(scene.intrinsics, stamped(0)))
        assert self.harness.wait(lambda: self.cam.camera_info is not None, 10)

    def anchor(self, msg):
        """Publish one anchor message and wait until the node holds it."""
        n = self.cam.anchors.messages
        self.anchors.publish(msg)
        assert self.harness.wait(lambda: self.cam.anchors.messages > n, 10), 'anchor lost'

    def frame(self, scene, hdr):
        """Publish an image and wait until the node has processed it; return its stamp."""
        n = self.cam.stats.processed
        self.image.publish(conv.image_msg(hdr, scene.rgb, 'rgb8'))
        assert self.harness.wait(lambda: self.cam.stats.processed > n, 30), 'frame not served'
        return conv.stamp_ns(hdr)

    def got(self, topic, stamp, timeout=5.0):
        """Return the output of this stamp on topic (waiting for it), or None."""
        self.harness.wait(lambda: any(stamp_of(m) == stamp
                                      for m in self.harness.get(self.prefix + topic)), timeout)
        return next((m for m in self.harness.get(self.prefix + topic)
                     if stamp_of(m) == stamp), None)

    def stamps(self, topic):
        return {stamp_of(m) for m in self.harness.get(self.prefix + topic)}


def diagnostics(harness, camera=''):
    """Return (level, message, values) of the newest node (or named camera) status."""
    for arr in reversed(harness.get('/diagnostics')):
        st = diag.status_of(arr.status, camera)
        if st is not None:
            return st.level, st.message, diag.values(st)
    return None


def wait_diagnostics(harness, pred, camera='', timeout=10.0):
    """Wait for a status whose values satisfy pred; return it."""
    found = []

    def check():
        d = diagnostics(harness, camera)
        if d is not None and pred(d[2]):
            found[:] = [d]
            return True
        return False
    assert harness.wait(check, timeout), f'no matching /diagnostics: {diagnostics(harness)}'
    return found[0]


def logged(harness, text, level=Log.WARN):
    return [m.msg for m in harness.get('/rosout') if text in m.msg and m.level == level]


def test_depth_image_anchors_give_true_metres_points_and_confidence(harness):
    scenes = make_sequence(4, W, H)
    node = start(harness, scenes, {'depth.mode': 'fitted', 'anchors.source': 'depth_image',
                                   'depth.confidence': 'flip'}, corrupt=CORRUPT)
    rig = Rig(harness, node)
    rig.calibrate(scenes[0])
    rng = np.random.default_rng(0)
    bad = region_mask((H, W), CORRUPT)
    for i, s in enumerate(scenes):
        hdr = stamped(i)
        # A RealSense aligned depth: 16UC1 millimetres, 0 = no reading, stamped as the image.
        rig.anchor(depth_anchors(s, hdr, rng))
        stamp = rig.frame(s, hdr)
        dmsg = rig.got('depth/image', stamp)
        assert dmsg is not None, f'frame {i}: no depth/image'
        assert dmsg.encoding == '32FC1' and (dmsg.height, dmsg.width) == (H, W)
        assert dmsg.header.frame_id == hdr.frame_id
        depth = conv.image_to_array(dmsg)
        err = np.abs(depth / s.depth - 1)
        # Metres equal the truth where the model is right (the anchors in the corrupted
        # region are the fit's outliers), and the corrupted region is visibly wrong.
        assert np.isfinite(depth).all()
        assert np.median(err[~bad]) < 2e-3 and np.percentile(err[~bad], 99) < 0.01, i
        assert np.median(err[bad]) > 0.2, i
        conf = conv.image_to_array(rig.got('depth/confidence', stamp))
        assert conf.dtype == np.float32 and conf.min() >= 0 and conf.max() <= 1
        low = conf < 0.5
        assert (low & bad).sum() / (low | bad).sum() >= 0.5, i  # the flip finds the region
        assert conf[~bad].mean() > 0.9
        pmsg = rig.got('points', stamp)
        pts = conv.read_points(pmsg)
        assert pts.shape == (H, W)
        # points.min_confidence 0.5 (default) drops the doubtful points, keeps the rest.
        assert np.isnan(pts['z'][low]).all() and np.allclose(pts['z'][~low], depth[~low])
        kept = np.where(low, np.nan, depth)
        assert backproject_check(pmsg, kept, conv.camera_info_from_intrinsics(
            s.intrinsics)) < 1e-4
    level, _, v = wait_diagnostics(harness, lambda v: v.get('frames_with_anchors') == '4')
    assert level == DiagnosticStatus.OK
    assert v['anchors_topic'] == f'{NS}/anchors/depth' and v['anchor_messages'] == '4'
    assert v['anchors_received'] == '300' and v['anchors_used'] == '300'
    assert 0.7 * 300 < int(v['anchors_inliers']) < 300  # the corrupted region's are out
    assert float(v['residual_absrel']) < 2e-3
    assert math.isfinite(float(v['scale'])) and math.isfinite(float(v['shift']))
    assert v['fit_state'] == 'fitted' and v['fit_held'] == 'false'
    assert float(v['fit_age_s']) == 0.0 and v['metric_suspended'] == 'false'
    assert v['frames_without_anchors'] == '0' and v['frames_with_bad_anchors'] == '0'


def _compressed(msg, codec):
    """Return the compressedDepth message of a depth anchor Image."""
    z = conv.image_to_array(msg)
    stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
    plain = compressed_depth(z, msg.encoding, codec, stamp, msg.header.frame_id)
    return CompressedImage(header=msg.header, format=plain.format, data=bytes(plain.data))


def test_compressed_depth_anchors_give_the_same_metres(harness):
    """A depth camera recorded with image_transport's compressedDepth (PNG and RVL)."""
    scenes = make_sequence(4, W, H)
    node = start(harness, scenes, {'depth.mode': 'fitted', 'anchors.source': 'depth_image',
                                   'anchors.transport': 'compressedDepth'})
    rig = Rig(harness, node, source='compressedDepth')
    rig.calibrate(scenes[0])
    rng = np.random.default_rng(0)
    for i, s in enumerate(scenes):
        hdr = stamped(i)
        encoding, codec = [('16UC1', 'png'), ('32FC1', 'rvl'), ('16UC1', 'rvl'),
                           ('32FC1', 'png')][i]
        rig.anchor(_compressed(depth_anchors(s, hdr, rng, encoding=encoding), codec))
        stamp = rig.frame(s, hdr)
        depth = conv.image_to_array(rig.got('depth/image', stamp))
        # 32FC1 through compressedDepth is quantized inverse depth (a step of z / 10100).
        assert np.median(np.abs(depth / s.depth - 1)) < 2e-3, (i, encoding, codec)
    level, _, v = wait_diagnostics(harness, lambda v: v.get('frames_with_anchors') == '4')
    assert level == DiagnosticStatus.OK
    assert v['anchors_topic'] == f'{NS}/anchors/depth/compressedDepth'
    assert v['frames_with_bad_anchors'] == '0' and v['fit_state'] == 'fitted'


def _lidar_pose():
    """Return (extrinsic text, R, t): a lidar (x forward, z up) beside the optical frame."""
    # Columns: the lidar's x, y, z axes in the optical frame (z forward, x right, y down).
    r = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    t = np.array([0.1, -0.05, 0.02])
    qw = 0.5 * math.sqrt(1 + np.trace(r))
    q = [(r[2, 1] - r[1, 2]) / (4 * qw), (r[0, 2] - r[2, 0]) / (4 * qw),
         (r[1, 0] - r[0, 1]) / (4 * qw), qw]
    text = ' '.join(f'{v:.9f}' for v in (*t, *q))
    assert np.allclose(extrinsic_matrix(text)[:3, :3], r, atol=1e-6)
    return text, r, t


def test_lidar_cloud_anchors_best_effort_with_extrinsic_and_bad_clouds(harness):
    scenes = make_sequence(6, W, H)
    text, r, t = _lidar_pose()
    node = start(harness, scenes, {'depth.mode': 'fitted', 'anchors.source': 'points',
                                   'anchors.extrinsic': text, 'anchors.hold': 10.0})
    # Lidar drivers publish best effort: the node must still receive the cloud.
    rig = Rig(harness, node, source='points', anchor_reliability=ReliabilityPolicy.BEST_EFFORT)
    rig.calibrate(scenes[0])
    rng = np.random.default_rng(1)

    def lidar_cloud(s, hdr):
        p_opt = true_points(s, rng)
        # Points behind the camera and outside the image must be ignored, not fitted.
        behind = np.array([[0.5, 0.2, -2.0], [0.0, 0.0, -5.0]])
        outside = np.array([[50.0, 0.0, 2.0], [0.0, -40.0, 3.0]])
        p_opt = np.concatenate([p_opt, behind, outside])
        return cloud(Header(frame_id='lidar', stamp=hdr.stamp), (p_opt - t) @ r)

    good = [0, 1, 4, 5]
    for i, s in enumerate(scenes):
        hdr = stamped(i)
        if i == 2:  # a cloud without x/y/z (an intensity-only scan)
            msg = cloud(Header(frame_id='lidar', stamp=hdr.stamp), np.ones((10, 3)))
            msg.fields = [f for f in msg.fields if f.name != 'y']
        elif i == 3:  # garbage: fields promise more bytes than the cloud carries
            msg = lidar_cloud(s, hdr)
            msg.data = msg.data[:-13]
        else:
            msg = lidar_cloud(s, hdr)
        rig.anchor(msg)
        stamp = rig.frame(s, hdr)
        if i in good:
            depth = conv.image_to_array(rig.got('depth/image', stamp))
            err = np.abs(depth / s.depth - 1)
            assert np.median(err) < 2e-3 and np.percentile(err, 99) < 0.01, i
            assert conv.read_points(rig.got('points', stamp)).shape == (H, W)
    # The bad clouds were warned about, named, and their frames held the last fit.
    assert logged(harness, 'no y field') and logged(harness, 'bytes of data')
    assert {stamp_of(m) for m in harness.get(f'{NS}/depth/image')} >= \
        {conv.stamp_ns(stamped(i)) for i in range(6)}
    _, _, v = wait_diagnostics(harness, lambda v: v.get('frames_with_anchors') == '4')
    assert v['frames_with_bad_anchors'] == '2' and v['anchors_topic'] == f'{NS}/anchors/points'
    # received: the cloud's finite points; used: those in front of the camera and inside.
    assert v['anchors_received'] == '304' and v['anchors_used'] == '300'


def _pose_text(r, t):
    """Return 'x y z qx qy qz qw' of rotation r (columns: the frame's axes) at t."""
    qw = 0.5 * math.sqrt(1 + np.trace(r))
    q = [(r[2, 1] - r[1, 2]) / (4 * qw), (r[0, 2] - r[2, 0]) / (4 * qw),
         (r[1, 0] - r[0, 1]) / (4 * qw), qw]
    text = ' '.join(f'{v:.9f}' for v in (*t, *q))
    assert np.allclose(extrinsic_matrix(text)[:3, :3], r, atol=1e-6)
    return text


def test_one_lidar_two_cameras_each_through_its_own_extrinsic(harness):
    """anchors.camera_extrinsics: one cloud on both anchors topics, true metres in both cameras.

    The rear camera looks the other way (its pose: the front's turned half a turn about the
    lidar's z); with anchors.extrinsic alone it would take the front's points for its own.
    """
    # The rear camera sees a room 1.6 times as deep: the front's anchors cannot pass as its own.
    front, rear = synthetic_scene(W, H), synthetic_scene(W, H, t=1.5)
    rear.depth = rear.depth * np.float32(1.6)
    scenes = {'front': front, 'rear': rear}
    text, r, t = _lidar_pose()
    r_rear, t_rear = r @ np.diag([-1.0, -1.0, 1.0]), np.array([-0.1, -0.05, -0.3])
    rear_text = _pose_text(r_rear, t_rear)
    poses = {'front': (r, t), 'rear': (r_rear, t_rear)}
    node = start(harness, [front, rear], {
        'depth.mode': 'fitted', 'anchors.source': 'points', 'anchors.extrinsic': text,
        'anchors.camera_extrinsics': [f'rear: {rear_text}'], 'batch.max_size': 2,
        'batch.max_wait_ms': 200.0, 'depth.temporal': False, 'anchors.hold': 0.0,
        'anchors.hold_frames': 0}, cameras=('front', 'rear'))  # each frame its own fit
    assert node.get_parameter('anchors.camera_extrinsics').value == [f'rear: {rear_text}']
    rigs = {c: Rig(harness, node, c, source='points') for c in scenes}
    for c, rig in rigs.items():
        rig.calibrate(scenes[c])
    rng = np.random.default_rng(5)

    def sweep(i):
        """Publish a lidar scan of each camera's true points (lidar frame), then the frames."""
        hdr = stamped(i)
        lidar = np.concatenate([(true_points(scenes[c], rng) - poses[c][1]) @ poses[c][0]
                                for c in scenes])
        for rig in rigs.values():
            rig.anchor(cloud(Header(frame_id='lidar', stamp=hdr.stamp), lidar))
        for c in rigs:
            rigs[c].image.publish(conv.image_msg(hdr, scenes[c].rgb, 'rgb8'))
        return conv.stamp_ns(hdr)
    for i in range(3):
        stamp = sweep(i)
        for c, rig in rigs.items():
            msg = rig.got('depth/image', stamp, timeout=30.0)
            assert msg is not None, (c, i)
            err = np.abs(conv.image_to_array(msg) / scenes[c].depth - 1)
            assert np.median(err) < 2e-3 and np.percentile(err, 99) < 0.01, (c, i)
    for c in scenes:
        _, _, v = wait_diagnostics(harness, lambda v: v.get('frames_with_anchors') == '3',
                                   camera=c)
        # Each camera used its own 300 points: the other's lie behind it.
        assert v['anchors_received'] == '600' and v['anchors_used'] == '300', c
        assert v['fit_state'] == 'fitted' and v['frames_with_bad_anchors'] == '0', c
    # Live, as anchors.extrinsic: without rear's entry its anchors are the front's points,
    # projected into rear as if it looked forward: no true metres there any more.
    assert node.set_parameters([Parameter('anchors.camera_extrinsics',
                                          Parameter.Type.STRING_ARRAY, [])])[0].successful
    stamp = sweep(3)
    got = rigs['front'].got('depth/image', stamp, timeout=30.0)
    assert np.median(np.abs(conv.image_to_array(got) / front.depth - 1)) < 2e-3
    assert rigs['rear'].got('depth/relative', stamp, timeout=30.0) is not None
    wrong = rigs['rear'].got('depth/image', stamp, timeout=1.0)
    assert wrong is None or np.nanmedian(np.abs(conv.image_to_array(wrong) / rear.depth
                                                - 1)) > 0.2
    # A bad entry is refused with its reason; the settings in force stay.
    res = node.set_parameters([Parameter('anchors.camera_extrinsics',
                                         Parameter.Type.STRING_ARRAY, ['back: 0 0 0 0 0 0 1'])])
    assert not res[0].successful and "'back' is not one of cameras" in res[0].reason
    assert node.get_parameter('anchors.camera_extrinsics').value == []


def test_bad_clouds_of_changing_point_counts_are_one_kind_of_problem(harness):
    # A lidar blocked for hours sends a scan of no finite point, its count new each scan: the
    # warning names the count, and its throttle must keep one kind, not one per scan.
    scenes = make_sequence(2, W, H)
    node = start(harness, scenes, {'depth.mode': 'fitted', 'anchors.source': 'points'})
    rig = Rig(harness, node, source='points')
    rig.calibrate(scenes[0])
    for i in range(6):
        hdr = stamped(i)
        rig.anchor(cloud(Header(frame_id='camera_color_optical_frame', stamp=hdr.stamp),
                         np.full((100 + i, 3), np.nan)))
        rig.frame(scenes[i % 2], hdr)
    assert harness.wait(lambda: logged(harness, 'has no finite point'), 5)
    assert node.cameras[0].anchors.bad == 6
    kinds = [k for k in node.runtime.warn.counts if str(k).startswith('anchors:')]
    assert len(kinds) == 1 and node.runtime.warn.counts[kinds[0]] == 6, kinds


def test_bad_depth_anchors_are_warned_and_images_keep_coming(harness):
    s = synthetic_scene(W, H)
    node = start(harness, [s], {'depth.mode': 'fitted', 'anchors.source': 'depth_image',
                                'anchors.hold': 100.0})
    rig = Rig(harness, node)
    rig.calibrate(s)
    rng = np.random.default_rng(2)
    i = 0
    rig.anchor(depth_anchors(s, stamped(i), rng))
    assert rig.got('depth/image', rig.frame(s, stamped(i))) is not None

    def bad(kind, hdr):
        if kind == 'encoding':  # a colour image on the anchor topic
            return conv.image_msg(hdr, s.rgb, 'rgb8')
        if kind == 'size':  # another resolution, and no anchors/camera_info for it
            return depth_anchors(synthetic_scene(48, 36), hdr, rng, n=100)
        if kind == 'nan':
            return conv.image_msg(hdr, np.full((H, W), np.nan, np.float32), '32FC1')
        msg = depth_anchors(s, hdr, rng)  # garbage: the data does not fill the image
        msg.data = bytes(rng.integers(0, 256, 1001, dtype=np.uint8))
        return msg

    texts = {'encoding': "encoding 'rgb8' is not supported", 'size': 'needs anchors/camera_info',
             'nan': 'has no valid depth', 'garbage': 'bytes; expected'}
    for kind in texts:
        i += 1
        rig.anchor(bad(kind, stamped(i)))
        stamp = rig.frame(s, stamped(i))
        # The frame is still served: relative depth, and metres held from the last good fit.
        assert rig.got('depth/relative', stamp) is not None, kind
        assert rig.got('depth/image', stamp) is not None, kind
    for kind, text in texts.items():
        assert harness.wait(lambda: logged(harness, text), 5), f'{kind}: no warning'
    # Throttled: the same problem again within the period is not logged again.
    i += 1
    rig.anchor(bad('nan', stamped(i)))
    rig.frame(s, stamped(i))
    i += 1
    rig.anchor(depth_anchors(s, stamped(i), rng))
    assert rig.got('depth/image', rig.frame(s, stamped(i))) is not None
    assert len(logged(harness, texts['nan'])) == 1
    assert node.cameras[0].anchors.bad == 5 and node.runtime.worker.alive
    _, _, v = wait_diagnostics(harness, lambda v: v.get('frames_with_bad_anchors') == '5')
    assert v['fit_state'] == 'fitted'


def test_no_anchors_past_hold_stops_metres_once_and_they_come_back(harness):
    """The anchor stream really stops: metres stop after the hold's seconds and frames."""
    s = synthetic_scene(W, H)
    node = start(harness, [s], {'depth.mode': 'fitted', 'anchors.source': 'depth_image',
                                'anchors.hold': 0.25, 'anchors.max_age': 0.05,
                                'use_sim_time': True})
    rig = Rig(harness, node)
    clock = harness.node.create_publisher(Clock, '/clock', 10)
    rig.calibrate(s)
    rng = np.random.default_rng(3)
    with_anchors = {0, 1, 2, 9, 10}
    stamps = []
    for i in range(12):
        hdr = stamped(i)
        clock.publish(Clock(clock=hdr.stamp))  # a bag played with --clock
        if i in with_anchors:
            rig.anchor(depth_anchors(s, hdr, rng, encoding='32FC1'))
        stamps.append(rig.frame(s, hdr))
        assert rig.got('depth/relative', stamps[-1]) is not None, i  # never stops
        if i == 6:
            level, msg, v = wait_diagnostics(
                harness, lambda v: v.get('metric_suspended') == 'true')
            assert level == DiagnosticStatus.WARN and 'anchors' in msg
            assert v['fit_state'] == 'no anchors'
    # 3 and 4 are held (0.1 and 0.2 s after the last fit), 5 too (past anchors.hold, but the
    # third frame: anchors.hold_frames 3); 6 to 8 are past both.
    time.sleep(0.5)
    got = rig.stamps('depth/image')
    assert [i for i, st in enumerate(stamps) if st in got] == [0, 1, 2, 3, 4, 5, 9, 10, 11]
    assert [i for i, st in enumerate(stamps) if st in rig.stamps('points')] == \
        [0, 1, 2, 3, 4, 5, 9, 10, 11]
    assert len(logged(harness, 'publishing no metres')) == 1
    assert logged(harness, 'no usable anchors for 0.4 s and 4 frames')
    assert logged(harness, 'anchors are back', Log.INFO)
    _, _, v = wait_diagnostics(harness, lambda v: v.get('frames_without_anchors') == '7')
    assert v['metric_suspended'] == 'false' and v['fit_held'] == 'true'  # 11: held again
    assert abs(float(v['fit_age_s']) - 0.1) < 1e-3
    # The anchors stopped: metres stopped as they should, not a drop-out.
    assert v['metre_dropouts'] == '0'


def sparse_depth(scene, hdr, pick, z):
    """Make a 32FC1 anchor depth image with depths z at the pixels pick, NaN elsewhere."""
    img = np.full(scene.depth.shape, np.nan, np.float32)
    img.flat[pick] = z
    return conv.image_msg(hdr, img, '32FC1')


def test_refused_and_degenerate_fits_are_stated_in_diagnostics(harness):
    s = synthetic_scene(W, H)
    node = start(harness, [s], {'depth.mode': 'fitted', 'anchors.source': 'depth_image',
                                'anchors.hold': 0.25, 'anchors.hold_frames': 0,
                                'anchors.max_age': 0.05})
    rig = Rig(harness, node)
    rig.calibrate(s)
    rng = np.random.default_rng(6)

    def unrelated(hdr):  # the anchors: uniform 1-8 m at random pixels
        return sparse_depth(s, hdr, pick_pixels(s, 2000, rng), rng.uniform(1.0, 8.0, 2000))

    def wall(hdr):  # true depths, every one on the 7 m back wall of a 2.6-7 m scene
        pick = rng.choice(np.flatnonzero(s.depth.ravel() > 6.9), 300, replace=False)
        return sparse_depth(s, hdr, pick, s.depth.flat[pick])

    stamps = []
    for i, make in enumerate([lambda h: depth_anchors(s, h, rng), unrelated, unrelated,
                              unrelated, wall, lambda h: depth_anchors(s, h, rng)]):
        rig.anchor(make(stamped(i)))
        stamps.append(rig.frame(s, stamped(i)))
        if i == 1:  # refused, the last fit held (anchors.hold 0.25 s)
            level, _, v = wait_diagnostics(harness, lambda v: v.get('fit_state', '').startswith(
                'refused: '))
            assert v['fit_held'] == 'true' and v['metric_suspended'] == 'false'
            assert 'anchors.min_inlier_fraction' in v['fit_state'] and level == DiagnosticStatus.OK
            assert int(v['anchors_inliers']) < 0.3 * int(v['anchors_used'])
        if i == 3:  # refused past the hold: no metres, WARN, and why
            level, msg, v = wait_diagnostics(harness, lambda v: v.get('metric_suspended') ==
                                             'true')
            assert level == DiagnosticStatus.WARN and 'refused' in msg
            assert v['fit_state'].startswith('refused: ')
        if i == 4:
            level, msg, v = wait_diagnostics(harness, lambda v: v.get('fit_state') ==
                                             'degenerate')
            assert level == DiagnosticStatus.WARN and msg.startswith('no metres (degenerate)')
    time.sleep(0.5)
    got = rig.stamps('depth/image')
    assert [i for i, st in enumerate(stamps) if st in got] == [0, 1, 2, 5]
    assert len(rig.stamps('depth/relative')) == 6
    assert len(logged(harness, 'anchors refused; holding the last fit')) == 1
    assert len(logged(harness, 'anchors refused; publishing no metres')) == 1
    assert len(logged(harness, 'degenerate anchors')) == 1
    _, _, v = wait_diagnostics(harness, lambda v: v.get('fit_state') == 'fitted')


def test_depth_anchors_in_the_depth_cameras_frame_are_refused(harness):
    # A RealSense depth/image_rect_raw: the depth optical frame, not the colour image's.
    s = synthetic_scene(W, H)
    node = start(harness, [s], {'depth.mode': 'fitted', 'anchors.source': 'depth_image'})
    rig = Rig(harness, node)
    rig.calibrate(s)
    rng = np.random.default_rng(7)
    for i in range(2):
        rig.anchor(depth_anchors(s, stamped(i, 'camera_depth_optical_frame'), rng))
        stamp = rig.frame(s, stamped(i))
        assert rig.got('depth/relative', stamp) is not None
    time.sleep(0.3)
    assert not rig.stamps('depth/image')
    text = ("anchor depth image is in frame 'camera_depth_optical_frame' but the image in "
            "'camera_color_optical_frame'")
    assert harness.wait(lambda: logged(harness, text), 5) and len(logged(harness, text)) == 1
    _, _, v = wait_diagnostics(harness, lambda v: v.get('frames_with_bad_anchors') == '2')
    assert v['frames_with_anchors'] == '0' and v['metric_suspended'] == 'true'
    # Registered to the colour camera (aligned_depth_to_color): used.
    rig.anchor(depth_anchors(s, stamped(2), rng))
    assert rig.got('depth/image', rig.frame(s, stamped(2))) is not None


def test_each_camera_fits_its_own_anchors(harness):
    front, rear = synthetic_scene(W, H), synthetic_scene(W, H, t=1.5)
    node = start(harness, [front, rear], {'depth.mode': 'fitted',
                                          'anchors.source': 'depth_image',
                                          'batch.max_size': 2, 'batch.max_wait_ms': 200.0},
                 cameras=('front', 'rear'))
    rigs = {c: Rig(harness, node, c) for c in ('front', 'rear')}
    scenes = {'front': front, 'rear': rear}
    for c, rig in rigs.items():
        rig.calibrate(scenes[c])
    rng = np.random.default_rng(4)
    # Only front has anchors: rear publishes no metres, whatever front's anchors say.
    hdr = stamped(0)
    rigs['front'].anchor(depth_anchors(front, hdr, rng))
    for c in rigs:
        rigs[c].image.publish(conv.image_msg(hdr, scenes[c].rgb, 'rgb8'))
    stamp = conv.stamp_ns(hdr)
    assert rigs['front'].got('depth/image', stamp) is not None
    assert rigs['rear'].got('depth/relative', stamp) is not None
    assert rigs['rear'].got('depth/image', stamp, timeout=1.0) is None
    # Both have anchors, rear's twice the truth (another scale): each follows its own.
    for i in (1, 2):
        hdr = stamped(i)
        rigs['front'].anchor(depth_anchors(front, hdr, rng))
        rigs['rear'].anchor(depth_anchors(rear, hdr, rng, factor=2.0))
        for c in rigs:
            rigs[c].image.publish(conv.image_msg(hdr, scenes[c].rgb, 'rgb8'))
        stamp = conv.stamp_ns(hdr)
        for c, factor in (('front', 1.0), ('rear', 2.0)):
            msg = rigs[c].got('depth/image', stamp, timeout=30.0)
            assert msg is not None, (c, i)
            depth = conv.image_to_array(msg)
            assert np.median(np.abs(depth / (factor * scenes[c].depth) - 1)) < 2e-3, (c, i)
    for c, paired in (('front', '3'), ('rear', '2')):
        _, _, v = wait_diagnostics(harness, lambda v: v.get('frames_with_anchors') == paired,
                                   camera=c)
        assert v['anchors_topic'] == f'{NS}/{c}/anchors/depth' and v['fit_state'] == 'fitted'
    node_values = diagnostics(harness)[2]
    assert 'anchors_topic' not in node_values  # per camera, not on the node's status


def test_anchor_subscriptions_follow_the_lifecycle(harness):
    from test_lifecycle import graph, Lifecycle
    s = synthetic_scene(W, H)
    node = start(harness, [s], {'depth.mode': 'fitted', 'anchors.source': 'depth_image'},
                 lifecycle=True)
    lc = Lifecycle(harness)
    anchors = {f'{NS}/anchors/depth', f'{NS}/anchors/camera_info'}

    def subscribed(present):
        return harness.wait(lambda: (anchors <= graph(harness)[1]) == present and
                            (present or not anchors & graph(harness)[1]), 10)
    assert lc.set('configure') and subscribed(False)
    assert lc.set('activate') and subscribed(True)
    assert node.cameras[0].anchors is not None
    assert lc.set('deactivate') and subscribed(False)
    assert node.cameras[0].anchors is None
    assert lc.set('activate') and subscribed(True)
    rig = Rig(harness, node)
    rig.calibrate(s)
    rig.anchor(depth_anchors(s, stamped(0), np.random.default_rng(5)))
    assert rig.got('depth/image', rig.frame(s, stamped(0))) is not None
    # anchors.source needs a restart: read-only, refused live.
    assert not node.set_parameters([Parameter('anchors.source', value='points')])[0].successful


def readme_wiring(marker):
    """Return the -r and -p arguments of a command in the docs' anchor wiring section."""
    from docsutil import section as doc_section
    section = doc_section('Wiring anchors on a robot')
    command = []
    for line in section[section.index(marker):].splitlines():
        command.append(line.split('#')[0].rstrip(' \\'))
        if not line.rstrip().endswith('\\'):
            break
    return re.findall(r'-([rp]) (\S+?):=(\S+)', ' '.join(command))


def test_realsense_wiring_of_the_readme_in_the_node_process(tmp_path, tiny_depth):
    """dpt_node started as the docs wire a RealSense: metres only once anchors arrive."""
    wiring = readme_wiring('ros2 run dpt_ros dpt_node')
    remaps = {a: b for kind, a, b in wiring if kind == 'r'}
    assert remaps['anchors/depth'] == '/camera/aligned_depth_to_color/image_raw'
    args = [x for kind, a, b in wiring for x in (f'-{kind}', f'{a}:={b}')]
    params = write_params_file(tmp_path / 'p.yaml', {'model.depth': str(tiny_depth),
                                                     'model.device': 'cpu'})
    node = NodeProcess(['--params-file', str(params)] + args)
    h = Harness().start()
    try:
        ns = remaps['__ns']
        for t in ('depth/image', 'depth/relative'):
            h.record(f'{ns}/{t}', Image)
        h.record('/diagnostics', DiagnosticArray)
        qos = QoSProfile(depth=5)
        img = h.node.create_publisher(Image, remaps['image'], qos)
        info = h.node.create_publisher(CameraInfo, remaps['camera_info'], qos)
        anchors = h.node.create_publisher(
            Image, remaps['anchors/depth'], QoSProfile(depth=5,
                                                       reliability=ReliabilityPolicy.BEST_EFFORT))
        assert h.wait_subscribed(img, 60) and h.wait_subscribed(anchors, 30), node.text()
        s = synthetic_scene(W, H)
        pipe = Pipeline(Config().replace({'model.depth': str(tiny_depth), 'model.device': 'cpu',
                                          'depth.temporal': False}), log=lambda m: None)
        rel = pipe.process(Frame(s.rgb, 'rgb8'), None, {'relative'}).arrays['relative']
        info.publish(conv.camera_info_from_intrinsics(s.intrinsics, stamped(0)))
        # No anchors yet: relative depth only, never guessed metres.
        img.publish(conv.image_msg(stamped(0), s.rgb, 'rgb8'))
        first = conv.stamp_ns(stamped(0))
        assert h.wait(lambda: any(stamp_of(m) == first
                                  for m in h.get(f'{ns}/depth/relative')), 30), node.text()
        # Anchors that follow the model's own output through a known map: the first fit is it.
        scale, shift = 0.02, 0.05
        z = np.zeros((H, W), np.float32)
        pick = np.random.default_rng(6).choice(H * W, 300, replace=False)
        z.flat[pick] = 1.0 / (scale * rel.flat[pick] + shift)
        anchors.publish(conv.image_msg(stamped(1), z, '32FC1'))
        assert h.wait(lambda: any(kv.key == 'anchor_messages' and kv.value == '1' for arr in
                                  h.get('/diagnostics') for st in arr.status
                                  for kv in st.values), 15), node.text()
        img.publish(conv.image_msg(stamped(1), s.rgb, 'rgb8'))
        second = conv.stamp_ns(stamped(1))
        assert h.wait(lambda: any(stamp_of(m) == second
                                  for m in h.get(f'{ns}/depth/image')), 30), node.text()
        assert not any(stamp_of(m) == first for m in h.get(f'{ns}/depth/image'))
        depth = conv.image_to_array(next(m for m in h.get(f'{ns}/depth/image')
                                         if stamp_of(m) == second))
        want = 1.0 / (scale * rel + shift)
        ok = np.isfinite(depth)
        assert ok.mean() > 0.9 and np.allclose(depth[ok], want[ok], rtol=2e-3)
        assert remaps['anchors/depth'] in node.text()  # the input line names it
        assert h.wait(lambda: any(kv.value == remaps['anchors/depth'] for arr in
                                  h.get('/diagnostics') for st in arr.status
                                  for kv in st.values if kv.key == 'anchors_topic'), 10)
    finally:
        h.close()
        assert node.stop() == 0


def test_metres_do_not_blink_when_the_node_is_overloaded(harness):
    """Two cameras in another process, anchors with every frame, a model slower than them.

    Issue: whenever the node could not keep up, depth/image switched off and on every few
    seconds although the anchors never stopped. The model is the oracle (every fit of a frame
    to its anchors is accepted), slowed by an injected delay: what is left is timing.
    """
    cams = {'front': (640, 480, 15.0), 'rear': (320, 240, 5.0)}
    seconds = 70.0
    views = {c: make_sequence(4, w, h) for c, (w, h, _) in cams.items()}
    node = start(harness, views['front'] + views['rear'],
                 {'depth.mode': 'fitted', 'anchors.source': 'depth_image',
                  'anchors.hold': 0.5}, cameras=tuple(cams))
    real = node.pipeline.process_batch

    def slow(*args, **kwargs):
        time.sleep(0.3)  # a model slower than the cameras: the node drops most frames
        return real(*args, **kwargs)
    node.pipeline.process_batch = slow
    for c in cams:
        for t in ('depth/image', 'depth/relative'):
            harness.record(f'{NS}/{c}/{t}', Image, QoSProfile(depth=100))
    script = Path(__file__).with_name('anchored_camera.py')
    procs = [subprocess.Popen([sys.executable, str(script), f'{NS}/{c}', str(w), str(h),
                               str(hz), str(seconds)], stdout=subprocess.PIPE, text=True)
             for c, (w, h, hz) in cams.items()]
    try:
        for p in procs:
            assert 'sent' in p.communicate(timeout=seconds + 90)[0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    time.sleep(1.0)
    # A stop other than before the stream's first anchor ('no usable anchors yet').
    stops = [m for m in logged(harness, 'publishing no metres') if 'yet' not in m]
    for c in cams:
        metres = {stamp_of(m) for m in harness.get(f'{NS}/{c}/depth/image')}
        served = [stamp_of(m) for m in harness.get(f'{NS}/{c}/depth/relative')]
        assert len(served) >= 20 and metres, (c, len(served))
        # Metres on every frame the node published from the first with metres to the last
        # (before it, at most the first frame or two, if the first anchor came late).
        assert [s for s in served if s > min(metres) and s not in metres] == [], (c, stops)
        assert len([s for s in served if s < min(metres)]) <= 2, c
    assert stops == []
    for c in cams:
        _, _, v = wait_diagnostics(harness, lambda v: 'metre_dropouts' in v, camera=c)
        assert v['metre_dropouts'] == '0' and v['metric_suspended'] == 'false', (c, v)
        assert int(v['frames_dropped']) > 0  # overloaded: it served fewer than offered


def test_a_depth_mode_round_trip_never_publishes_the_relative_map_as_metres(harness):
    """depth.mode fitted -> relative_inverse -> fitted, set live while frames stream.

    The relative interlude aligns its own output over time; back in fitted, a frame without
    anchors must not take that alignment for a metric fit: no metres until anchors fit again,
    then the true metres.
    """
    scenes = make_sequence(4, W, H)
    node = start(harness, scenes, {'depth.mode': 'fitted', 'anchors.source': 'depth_image'})
    rig = Rig(harness, node)
    rig.calibrate(scenes[0])
    rng = np.random.default_rng(5)

    def mode(value):
        assert node.set_parameters([Parameter('depth.mode', value=value)])[0].successful

    i = 0
    for _ in range(3):  # metres fitted
        s = scenes[i % 4]
        rig.anchor(depth_anchors(s, stamped(i), rng, encoding='32FC1'))
        stamp = rig.frame(s, stamped(i))
        assert rig.got('depth/image', stamp) is not None, i
        i += 1
    mode('relative_inverse')
    for _ in range(3):
        stamp = rig.frame(scenes[i % 4], stamped(i))
        assert rig.got('depth/relative', stamp) is not None, i
        i += 1
    mode('fitted')
    s = scenes[i % 4]
    stamp = rig.frame(s, stamped(i))  # no anchors within max_age: held or none, never wrong
    assert rig.got('depth/relative', stamp) is not None
    dmsg = rig.got('depth/image', stamp, timeout=1.0)
    if dmsg is not None:
        err = np.abs(conv.image_to_array(dmsg) / s.depth - 1)
        assert np.nanmedian(err) < 0.01, f'wrong metres after the round trip: {np.nanmedian(err)}'
    i += 1
    s = scenes[i % 4]
    rig.anchor(depth_anchors(s, stamped(i), rng, encoding='32FC1'))
    stamp = rig.frame(s, stamped(i))
    dmsg = rig.got('depth/image', stamp)
    assert dmsg is not None
    err = np.abs(conv.image_to_array(dmsg) / s.depth - 1)
    assert np.nanmedian(err) < 0.01, np.nanmedian(err)


def test_a_camera_back_at_another_resolution_gets_its_anchors_metres(harness):
    """The camera restarts at another resolution, its aligned depth with it.

    Frames of two sizes cannot be aligned to each other: the last fit is not carried over
    (the model's scale is another one by then), so the new frames' good anchors give their
    metres at once instead of being gated against a map that is not theirs.
    """
    small, large = make_sequence(3, W, H), make_sequence(6, 2 * W, 2 * H)[3:]
    node = start(harness, small + large, {'depth.mode': 'fitted',
                                          'anchors.source': 'depth_image'})
    rig = Rig(harness, node)
    rng = np.random.default_rng(7)
    for k, views in enumerate((small, large)):
        rig.info.publish(conv.camera_info_from_intrinsics(views[0].intrinsics, stamped(0)))
        assert harness.wait(lambda: rig.cam.camera_info is not None and
                            rig.cam.camera_info.width == views[0].depth.shape[1], 10)
        for j, s in enumerate(views):
            i = 10 * k + j
            rig.anchor(depth_anchors(s, stamped(i), rng, encoding='32FC1'))
            stamp = rig.frame(s, stamped(i))
            dmsg = rig.got('depth/image', stamp)
            assert dmsg is not None, i
            err = np.abs(conv.image_to_array(dmsg) / s.depth - 1)
            assert np.nanmedian(err) < 0.01, (i, float(np.nanmedian(err)),
                                              node.pipeline.fit_report())


def test_images_stamped_far_ahead_of_their_anchors_do_not_wait_for_them(harness):
    """Clocks not in step: no anchor can pair, so frames go on at once (no metres, said so)."""
    s = synthetic_scene(W, H)
    node = start(harness, [s], {'depth.mode': 'fitted', 'anchors.source': 'depth_image',
                                'anchors.max_age': 5.0})
    rig = Rig(harness, node)
    rig.calibrate(s)
    rng = np.random.default_rng(2)
    for i in range(3):  # a live 10 Hz stream, its period known
        rig.anchor(depth_anchors(s, stamped(i), rng, encoding='32FC1'))
    t0 = time.monotonic()
    stamp = rig.frame(s, stamped(1000))  # 100 s ahead: far beyond anchors.max_age
    assert time.monotonic() - t0 < 3.0, 'the frame waited for an anchor that cannot pair'
    assert rig.got('depth/relative', stamp) is not None
    assert rig.got('depth/image', stamp, timeout=0.5) is None
