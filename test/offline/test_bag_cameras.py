# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""dpt_bag with several cameras: topics per camera, batches across cameras, sources, errors."""

import dataclasses
import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest

from dpt_ros.core import conversions as conv
from dpt_ros.core.config import Config
from dpt_ros.core.conversions import Frame, IMAGE_TYPE
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.offline import runs as bag_runs
from dpt_ros.offline.bag import batches
from dpt_ros.offline.cli import EXIT_NOTHING_RAN, main
from dpt_ros.tools.sample import synthetic_scene

from bagutil import (read_bag, stamp_ns, Stream, synthetic_frames,  # noqa: I100
                     write_streams)

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
# A metric depth model's outputs (normals from depth only when normals.source says depth).
OUTPUTS = ('depth/image', 'depth/camera_info', 'points', 'depth/colored')


def rig(root='/drivers', image='image_raw', info='camera_info', rear_info='every',
        cameras=('front', 'rear', 'side')):
    """Three cameras: front 64x48 at 10 Hz, rear 64x48 at 5 Hz, side 96x72 at 7.5 Hz.

    Each sees its own view with its own focal length, so a mix-up of frames or calibrations
    between cameras changes the outputs.
    """
    spec = {'front': (64, 48, 8, 100), 'rear': (64, 48, 4, 200), 'side': (96, 72, 6, 133)}
    out = []
    for name in cameras:
        w, h, n, period = spec[name]
        k = list(spec).index(name)
        views = [synthetic_scene(w, h, t=0.35 * i + 1.3 * k) for i in range(n)]
        frames = [(v.rgb, dataclasses.replace(v.intrinsics, fx=v.intrinsics.fx * (1 + 0.2 * k),
                                              fy=v.intrinsics.fy * (1 + 0.2 * k)),
                   T0 + k * 7 * MS + i * period * MS) for i, v in enumerate(views)]
        out.append(Stream(frames, f'{root}/{name}/{image}', f'{root}/{name}/{info}',
                          info=rear_info if name == 'rear' else 'every',
                          frame_id=f'{name}_optical_frame'))
    return out


@pytest.fixture
def params(tmp_path, tiny_metric):
    p = tmp_path / 'params.yaml'
    p.write_text('/**:\n  ros__parameters:\n    model:\n'
                 f'      depth: {tiny_metric}\n      device: cpu\n')
    return p


@pytest.fixture
def spy(monkeypatch):
    """Record every forward of the serial runner: frame sizes, sources, stamps."""
    calls = []

    class Spy(bag_runs.Pipeline):
        def process_batch(self, frames, intrs, want, anchors=None, sources=None, stamps=None,
                          cfg=None):
            calls.append(SimpleNamespace(shapes=[f.pixels.shape for f in frames],
                                         sources=list(sources), stamps=list(stamps)))
            return super().process_batch(frames, intrs, want, anchors, sources, stamps, cfg)
    monkeypatch.setattr(bag_runs, 'Pipeline', Spy)
    return calls


def run(*args):
    return main([str(a) for a in args] + ['--quiet'])


def image_topics(streams):
    return [a for s in streams for a in ('--image-topic', s.image_topic)]


def test_each_camera_writes_under_its_namespace_batched_by_size(tmp_path, params, spy, capsys):
    streams = rig()
    src = tmp_path / 'rig'
    stamps = write_streams(src, streams)
    dst = tmp_path / 'out'
    assert run(src, dst, '--params-file', params, *image_topics(streams)) == 0
    assert 'camera drivers/side: /drivers/side/image_raw -> /drivers/side/..., 6 frames' \
        in capsys.readouterr().out
    bag = read_bag(dst)
    names = [s.image_topic.split('/')[2] for s in streams]
    assert set(bag) == {f'/drivers/{c}/{o}' for c in names for o in OUTPUTS}
    for c, want in zip(names, stamps):
        for o in OUTPUTS:
            msgs = bag[f'/drivers/{c}/{o}']
            assert [stamp_ns(m) for _, m in msgs] == want, (c, o)  # each its own frames, once
            assert {m.header.frame_id for _, m in msgs} == {f'{c}_optical_frame'}
        h, w = streams[names.index(c)].frames[0][0].shape[:2]
        assert {(m.width, m.height) for _, m in bag[f'/drivers/{c}/depth/image']} == {(w, h)}
    # Stored in log-time order (as recorded), whichever forward a frame went through.
    with sqlite3.connect(dst / 'out.db3') as db:
        times = [t for t, in db.execute('SELECT timestamp FROM messages ORDER BY id')]
    assert len(times) == 18 * len(OUTPUTS) and times == sorted(times)
    # One forward for front and rear frames (same size), side (another size) always alone.
    mixed = [c for c in spy if {'drivers/front', 'drivers/rear'} <= set(c.sources)]
    assert mixed and all(len(c.shapes) <= 4 for c in spy)
    for c in spy:
        assert len(set(c.shapes)) == 1
        assert ('drivers/side' in c.sources) == (c.shapes[0] == (72, 96, 3))
    # Each camera is its own source, with its own image stamps in time order (depth.temporal
    # and fitted mode follow each camera on its own, as in the node).
    for c, want in zip(names, stamps):
        got = [t for call in spy for s, t in zip(call.sources, call.stamps)
               if s == f'drivers/{c}']
        assert got == [s / 1e9 for s in want], c
    assert sum(len(c.shapes) for c in spy) == 18


def test_one_camera_alone_gives_the_same_bytes(tmp_path, params):
    """With temporal filtering off, a camera's outputs do not depend on the other cameras."""
    streams = rig()
    src = tmp_path / 'rig'
    write_streams(src, streams)
    assert run(src, tmp_path / 'all', '--params-file', params, *image_topics(streams)) == 0
    every = read_bag(tmp_path / 'all')
    for s in streams:
        alone = tmp_path / s.image_topic.replace('/', '_')
        assert run(src, alone, '--params-file', params, '--image-topic', s.image_topic) == 0
        one = read_bag(alone)
        ns = s.image_topic.rsplit('/', 1)[0]
        assert set(one) == {f'{ns}/{o}' for o in OUTPUTS}
        for topic, msgs in one.items():
            mine = every[topic]
            assert [stamp_ns(m) for _, m in msgs] == [stamp_ns(m) for _, m in mine]
            if topic.endswith('depth/image'):
                for (_, a), (_, b) in zip(msgs, mine):
                    da, db = conv.image_to_array(a), conv.image_to_array(b)
                    if s.image_topic.endswith('side/image_raw'):
                        # Alone in its size, side runs in the same batches: the same bytes.
                        assert np.array_equal(da, db, equal_nan=True)
                    # front and rear share forwards: the same up to float rounding.
                    assert np.allclose(da, db, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_cameras_named_like_the_node(tmp_path, params, capsys):
    """--cameras (or `cameras` in the params file): C/image, C/camera_info, outputs under C."""
    streams = rig(root='/robot', image='image', cameras=('front', 'side'))
    src = tmp_path / 'rig'
    stamps = write_streams(src, streams)
    dst = tmp_path / 'out'
    assert run(src, dst, '--params-file', params, '--cameras', 'front,side',
               '--namespace', '/robot') == 0
    bag = read_bag(dst)
    assert set(bag) == {f'/robot/{c}/{o}' for c in ('front', 'side') for o in OUTPUTS}
    assert [stamp_ns(m) for _, m in bag['/robot/side/points']] == stamps[1]
    # Remapped: the cameras' topics have other names in the bag (driver names).
    drivers = rig(cameras=('front', 'side'))
    src2 = tmp_path / 'drivers'
    write_streams(src2, drivers)
    p2 = tmp_path / 'cams.yaml'
    p2.write_text(params.read_text() + '    cameras: [left, right]\n')
    dst2 = tmp_path / 'out2'
    assert run(src2, dst2, '--params-file', p2, *image_topics(drivers)) == 0
    bag2 = read_bag(dst2)
    assert [stamp_ns(m) for _, m in bag2['/left/depth/image']] == stamps[0]
    assert [stamp_ns(m) for _, m in bag2['/right/points']] == stamps[1]  # its own camera_info
    # The camera names alone do not find driver-named topics: the bag fails with the reason.
    assert run(src2, tmp_path / 'out3', '--params-file', p2) == 1
    err = capsys.readouterr().err
    assert "camera 'left': no image topic /left/image" in err and '--image-topic' in err


def test_a_camera_without_camera_info_gets_depth_only(tmp_path, params, capsys):
    streams = rig(rear_info='none')
    src = tmp_path / 'rig'
    stamps = write_streams(src, streams)
    dst = tmp_path / 'out'
    assert run(src, dst, '--params-file', params, *image_topics(streams), '--every', 2) == 0
    err = capsys.readouterr().err
    assert "camera 'drivers/rear' (/drivers/rear/image_raw): no CameraInfo topic" in err
    bag = read_bag(dst)
    # Never another camera's calibration: rear has depth, no points, no depth/camera_info.
    assert [stamp_ns(m) for _, m in bag['/drivers/rear/depth/image']] == stamps[1][::2]
    assert '/drivers/rear/points' not in bag and '/drivers/rear/depth/camera_info' not in bag
    assert [stamp_ns(m) for _, m in bag['/drivers/front/points']] == stamps[0][::2]
    assert [stamp_ns(m) for _, m in bag['/drivers/side/points']] == stamps[2][::2]


def test_a_bag_missing_a_camera_fails_alone(tmp_path, params, capsys):
    fleet = tmp_path / 'fleet'
    fleet.mkdir()
    for name in ('a', 'b'):
        write_streams(fleet / name, rig(cameras=('front', 'rear')))
    write_streams(fleet / 'c', rig(cameras=('front',)))
    root = tmp_path / 'out'
    streams = rig(cameras=('front', 'rear'))
    assert run(fleet, root, '--params-file', params, *image_topics(streams)) == 1
    summary = __import__('json').loads((root / bag_runs.SUMMARY).read_text())
    by_bag = {b['bag']: b for b in summary['bags']}
    assert {k: b['status'] for k, b in by_bag.items()} == {'a': 'done', 'b': 'done',
                                                           'c': 'failed'}
    assert "topic '/drivers/rear/image_raw' is not in the bag" in by_bag['c']['reason']
    assert [c['name'] for c in by_bag['a']['cameras']] == ['drivers/front', 'drivers/rear']
    assert by_bag['a']['cameras'][1]['frames'] == 4 and by_bag['a']['frames'] == 12
    assert 'dpt_bag: c: error:' in capsys.readouterr().err


def test_option_errors(tmp_path, params, capsys):
    streams = rig(cameras=('front', 'rear'))
    src = tmp_path / 'rig'
    write_streams(src, streams)
    two = image_topics(streams)
    assert run(src, tmp_path / 'o1', '--params-file', params) == 1
    assert 'give --image-topic once per camera' in capsys.readouterr().err
    assert run(src, tmp_path / 'o2', '--params-file', params, *two, '--camera-info-topic',
               '/drivers/front/camera_info') == EXIT_NOTHING_RAN
    assert '--camera-info-topic is given 1 times for 2 --image-topic values' in \
        capsys.readouterr().err
    assert run(src, tmp_path / 'o3', '--params-file', params, *two, '--namespace',
               '/x') == EXIT_NOTHING_RAN
    assert 'name the cameras' in capsys.readouterr().err
    assert run(src, tmp_path / 'o4', '--params-file', params, '--cameras', 'a,b', '--image-topic',
               streams[0].image_topic) == EXIT_NOTHING_RAN
    assert '--image-topic is given 1 times for 2 cameras (a, b)' in capsys.readouterr().err
    # Two image topics of one namespace would write the same output topics.
    same = [Stream(synthetic_frames(2, 48, 36), '/cam/image_raw', '/cam/camera_info'),
            Stream(synthetic_frames(2, 48, 36), '/cam/image_rect', '/cam/rect_info')]
    src2 = tmp_path / 'same'
    write_streams(src2, same)
    assert run(src2, tmp_path / 'o5', '--params-file', params, *image_topics(same)) == 1
    assert 'would both write their outputs under /cam' in capsys.readouterr().err
    assert not any((tmp_path / f'o{i}').exists() for i in range(1, 6))


def _frame(camera, w, h):
    return SimpleNamespace(camera=camera, group=((h, w, 3), 'rgb8'))


def test_batches_group_by_size_keep_each_camera_in_order_and_bound_the_wait():
    # Cameras 0 and 1 share a size; camera 2 has its own; camera 1 changes size at k == 6.
    seq = [(0, 64), (1, 64), (2, 96), (0, 64), (1, 64), (0, 64), (1, 80), (0, 64), (2, 96),
           (0, 64), (0, 64), (0, 64), (0, 64), (0, 64), (0, 64), (0, 64)]
    frames = [_frame(c, w, w * 3 // 4) for c, w in seq]
    out = [[i for i, _ in b] for b in batches(iter(frames), 3, window=6)]
    assert sorted(i for b in out for i in b) == list(range(len(seq)))  # each frame once
    assert out[0] == [0, 1, 3]                                  # full: cameras 0 and 1 together
    for b in out:
        assert len({frames[i].group for i in b}) == 1 and len(b) <= 3
    order = [i for b in out for i in b]
    for cam in range(3):  # each camera's frames reach the pipeline in order
        mine = [i for i in order if seq[i][0] == cam]
        assert mine == sorted(mine), cam
    # Camera 1's 64-wide frame 4 goes before its 80-wide frame 6 (size change).
    assert order.index(4) < order.index(6)
    # A frame waits at most `window` later frames: camera 2's frame 2 leaves by frame 8.
    start = {i: k for k, b in enumerate(out) for i in b}
    assert max(b[-1] for b in out[:start[2] + 1]) <= 2 + 6
    assert [len(b) for b in batches(iter(frames[:5]), 8, window=100)] == [4, 1]
    # One frame per camera (a prompted model): a camera's next frame sends its waiting group.
    one = [[i for i, _ in b] for b in batches(iter(frames), 3, window=6, one_per_camera=True)]
    assert sorted(i for b in one for i in b) == list(range(len(seq)))
    assert one[:2] == [[0, 1], [3, 4]] and [10] in one and [11] in one
    order = [i for b in one for i in b]
    for cam in range(3):
        mine = [i for i in order if seq[i][0] == cam]
        assert mine == sorted(mine), cam
    for b in one:
        assert len({seq[i][0] for i in b}) == len(b) and len({frames[i].group for i in b}) == 1
        assert len(b) <= 3


SCALE = {0: 0.01, 1: 0.03}  # metres = 1 / (SCALE[k] * (1 + 0.1 i) * d + 0.05), per camera


def fitted_truth(tiny_depth, streams):
    """Yield (camera index, its frame (rgb, intrinsics, stamp), relative d, true metres).

    The metres a camera's anchors will give frame i: 1 / (SCALE[k] * (1 + 0.1 i) * d + 0.05),
    d the checkpoint's relative output: each camera its own scale, drifting frame by frame.
    """
    pipe = Pipeline(Config().replace({'model.depth': str(tiny_depth), 'model.device': 'cpu',
                                      'depth.temporal': False}), log=lambda m: None)
    for k, s in enumerate(streams):
        for i, frame in enumerate(s.frames):
            rel = pipe.process(Frame(frame[0], 'rgb8'), None, {'relative'}).arrays['relative']
            yield k, frame, rel, 1.0 / (SCALE[k] * (1 + 0.1 * i) * rel + 0.05)


def assert_metres(bag, topic, truth, k, frames):
    """Every depth/image of camera k on topic holds the true metres of its frame."""
    got = bag[topic]
    assert len(got) == frames, topic
    for _, m in got:
        assert np.allclose(conv.image_to_array(m), truth[(k, stamp_ns(m))], rtol=2e-3,
                           equal_nan=True), (topic, stamp_ns(m))


def test_each_camera_is_fitted_to_its_own_anchors(tmp_path, tiny_depth, capsys):
    """depth.mode fitted, two cameras batched together: each frame fits its camera's anchors."""
    from test_bag_anchors import _anchor_image
    streams = rig(cameras=('front', 'rear'))
    rng = np.random.default_rng(0)
    anchors, truth = [], {}
    for k, (_, _, stamp), rel, z in fitted_truth(tiny_depth, streams):
        s = streams[k]
        truth[(k, stamp)] = z
        msg = _anchor_image(rel, 0, stamp, rng)
        msg.header.frame_id = s.frame_id  # registered to its camera, as aligned depth is
        valid = np.isfinite(conv.image_to_array(msg))
        depth = np.where(valid, z, np.nan).astype(np.float32)
        msg.data = np.ascontiguousarray(depth).view(np.uint8).ravel()
        anchors.append((s.image_topic.rsplit('/', 1)[0] + '/anchors/depth', IMAGE_TYPE,
                        stamp + 20 * MS, msg))
    src = tmp_path / 'rig'
    write_streams(src, streams, more=anchors)
    other = tmp_path / 'other_names'  # rear's anchors under another name
    write_streams(other, streams, more=[(t.replace('rear/anchors', 'rear'), *m)
                                        for t, *m in anchors])
    params = tmp_path / 'fitted.yaml'
    params.write_text('/**:\n  ros__parameters:\n    model:\n'
                      f'      depth: {tiny_depth}\n      device: cpu\n'
                      '    depth: {mode: fitted, max: 10000.0, min: 0.0, temporal: false}\n'
                      '    anchors: {source: depth_image, max_age: 0.05}\n')
    # Each camera's anchors/depth, as the node subscribes them, or named per camera.
    named = ('--anchors-topic', '/drivers/front/anchors/depth', '--anchors-topic',
             '/drivers/rear/depth')
    for bag_in, named in ((src, ()), (other, named)):
        dst = tmp_path / f'out_{bag_in.name}'
        assert run(bag_in, dst, '--params-file', params, *image_topics(streams), *named) == 0
        rear = named[-1] if named else '/drivers/rear/anchors/depth'
        assert "camera 'drivers/rear' (/drivers/rear/image_raw): 4 of 4 frames paired with " \
            f'anchors on {rear}' in capsys.readouterr().err
        bag = read_bag(dst)
        for k, s in enumerate(streams):
            assert_metres(bag, s.image_topic.rsplit('/', 1)[0] + '/depth/image', truth, k,
                          len(s.frames))
    assert run(other, tmp_path / 'o', '--params-file', params, *image_topics(streams)) == 1
    assert 'no /drivers/rear/anchors/depth' in capsys.readouterr().err


def _lidar_cloud(xyz, stamp):
    """Return a rosbags PointCloud2 (x, y, z float32) in the frame lidar."""
    from bagutil import header, STORE
    T = STORE.types
    data = np.ascontiguousarray(xyz, np.float32)
    fields = [T['sensor_msgs/msg/PointField'](name=n, offset=4 * k, datatype=7, count=1)
              for k, n in enumerate('xyz')]
    return T['sensor_msgs/msg/PointCloud2'](
        header=header(stamp, 'lidar'), height=1, width=len(data), fields=fields,
        is_bigendian=False, point_step=12, row_step=12 * len(data),
        data=data.view(np.uint8).ravel(), is_dense=True)


def test_one_lidar_two_cameras_each_through_its_own_extrinsic(tmp_path, tiny_depth, capsys):
    """anchors.camera_extrinsics: one lidar topic for both cameras, true metres in each."""
    from dpt_ros.core.anchors import extrinsic_matrix
    streams = rig(root='/robot', image='image', cameras=('front', 'rear'))
    # The lidar (x forward, z up) in each optical frame; rear looks along the lidar's -x.
    poses = {0: '0.1 -0.05 0.02 0.5 -0.5 0.5 0.5', 1: '-0.1 -0.05 -0.3 -0.5 -0.5 0.5 -0.5'}
    ext = {k: extrinsic_matrix(p) for k, p in poses.items()}
    assert np.allclose(ext[1][:3, :3] @ [-1, 0, 0], [0, 0, 1])
    rng = np.random.default_rng(0)
    clouds, truth = [], {}
    for k, (_, intr, stamp), _, z in fitted_truth(tiny_depth, streams):
        truth[(k, stamp)] = z
        v, u = np.divmod(rng.choice(z.size, 300, replace=False), z.shape[1])
        zz = z[v, u].astype(np.float64)
        optical = np.c_[(u - intr.cx) / intr.fx * zz, (v - intr.cy) / intr.fy * zz, zz]
        lidar = (optical - ext[k][:3, 3]) @ ext[k][:3, :3]
        clouds.append(('/lidar/points', 'sensor_msgs/msg/PointCloud2', stamp + 20 * MS,
                       _lidar_cloud(lidar, stamp)))
    src = tmp_path / 'rig'
    write_streams(src, streams, more=clouds)
    params = tmp_path / 'fitted.yaml'
    base = ('/**:\n  ros__parameters:\n    cameras: [front, rear]\n    model:\n'
            f'      depth: {tiny_depth}\n      device: cpu\n'
            '    depth: {mode: fitted, max: 10000.0, min: 0.0, temporal: false}\n'
            '    anchors:\n      source: points\n      max_age: 0.05\n'
            f"      extrinsic: '{poses[0]}'\n")
    params.write_text(base + f"      camera_extrinsics: ['rear: {poses[1]}']\n")
    lidar = ('--anchors-topic', '/lidar/points', '--anchors-topic', '/lidar/points')
    dst = tmp_path / 'out'
    assert run(src, dst, '--params-file', params, '--namespace', '/robot', *lidar) == 0
    err = capsys.readouterr().err
    assert "camera 'rear' (/robot/rear/image): 4 of 4 frames paired with anchors on " \
        '/lidar/points' in err, err
    bag = read_bag(dst)
    for k, c in enumerate(('front', 'rear')):
        assert_metres(bag, f'/robot/{c}/depth/image', truth, k, len(streams[k].frames))
    # With anchors.extrinsic alone, rear takes the front's pose: its points lie behind it.
    alone = tmp_path / 'alone.yaml'
    alone.write_text(base)
    assert run(src, tmp_path / 'out_alone', '--params-file', alone, '--namespace', '/robot',
               *lidar) == 0
    capsys.readouterr()
    bag = read_bag(tmp_path / 'out_alone')
    assert len(bag['/robot/front/depth/image']) == len(streams[0].frames)
    assert '/robot/rear/depth/image' not in bag or not any(
        np.allclose(conv.image_to_array(m), truth[(1, stamp_ns(m))], rtol=2e-3,
                    equal_nan=True) for _, m in bag['/robot/rear/depth/image'])
