# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""dpt_bag: offline processing of mcap / sqlite3 bags, read back and checked."""

import cv2
import numpy as np
import pytest

from dpt_ros import conversions as conv
from dpt_ros.bag import main, output_namespace
from dpt_ros.config import Config
from dpt_ros.conversions import Frame
from dpt_ros.geometry import Intrinsics
from dpt_ros.pipeline import Pipeline
from dpt_ros.sample import synthetic_sequence

from bagutil import (empty_bag, IMAGE_TOPIC, INFO_TOPIC, read_bag, stamp_ns,  # noqa: I100
                     write_bag)

NS = '/camera/color'


def synthetic_frames(n=5, w=96, h=72):
    return [(s.rgb, s.intrinsics, 1_700_000_000_000_000_000 + i * 100_000_000)
            for i, s in enumerate(synthetic_sequence(n, w, h))]


@pytest.fixture
def params(tmp_path, tiny_metric, tiny_seg):
    p = tmp_path / 'params.yaml'
    p.write_text('/**:\n  ros__parameters:\n    model:\n'
                 f'      depth: {tiny_metric}\n      segmentation: {tiny_seg}\n'
                 '      device: cpu\n    depth: {max: 20.0}\n')
    return p


def run(*args):
    return main([str(a) for a in args] + ['--quiet'])


def backprojection_error(cloud, depth, info):
    pts = conv.read_points(cloud)
    fx, fy, cx, cy = info.k[0], info.k[4], info.k[2], info.k[5]
    v, u = np.mgrid[0:depth.shape[0], 0:depth.shape[1]]
    ok = np.isfinite(depth)
    assert np.array_equal(ok, np.isfinite(pts['z']))
    ex = pts['x'][ok] - (u[ok] - cx) * depth[ok] / fx
    ey = pts['y'][ok] - (v[ok] - cy) * depth[ok] / fy
    return float(np.max(np.abs(np.concatenate([ex, ey, pts['z'][ok] - depth[ok]]))))


@pytest.mark.parametrize('storage, compressed', [('mcap', False), ('sqlite3', True)])
def test_bag_outputs_match_the_live_pipeline(tmp_path, params, storage, compressed,
                                             tiny_metric, tiny_seg, capsys):
    frames = synthetic_frames()
    src = tmp_path / 'in'
    stamps = write_bag(src, frames, storage=storage, compressed=compressed)
    dst = tmp_path / 'out'
    assert run(src, dst, '--params-file', params, '--storage', storage, '--batch', 3) == 0
    out = capsys.readouterr().out
    assert 'processed 5 frames' in out and 'frames/s' in out and 'forward' in out
    bag = read_bag(dst)
    for topic in ('depth/image', 'depth/camera_info', 'points', 'depth/colored',
                  'segmentation/image', 'segmentation/colored', 'segmentation/overlay'):
        msgs = bag.get(f'{NS}/{topic}', [])
        assert [stamp_ns(m) for _, m in msgs] == stamps, topic
        assert all(m.header.frame_id == 'camera_color_optical_frame' for _, m in msgs)
    # The same frames through the node's pipeline (one at a time, as the node runs them).
    src_msgs = read_bag(src)[IMAGE_TOPIC + ('/compressed' if compressed else '')]
    pipe = Pipeline(Config().replace({'model.depth': str(tiny_metric),
                                      'model.segmentation': str(tiny_seg),
                                      'model.device': 'cpu', 'depth.max': 20.0}),
                    log=lambda m: None)
    for (_, img), (_, dmsg), (_, cloud), (_, info), (_, lab) in zip(
            src_msgs, bag[f'{NS}/depth/image'], bag[f'{NS}/points'],
            bag[f'{NS}/depth/camera_info'], bag[f'{NS}/segmentation/image']):
        frame = conv.decode_compressed(img) if compressed else conv.decode_image(img)
        live = pipe.process(frame, conv.intrinsics_from_camera_info(info))
        depth = conv.image_to_array(dmsg)
        assert np.allclose(depth, live.arrays['depth'], rtol=1e-4, atol=1e-5, equal_nan=True)
        assert (conv.image_to_array(lab) == live.arrays['labels']).mean() > 0.999
        assert backprojection_error(cloud, depth, info) < 1e-4


def test_shared_frames_every_start_end_copy_inputs(tmp_path, params, shared_data):
    intr = Intrinsics(525.0, 525.0, 319.5, 239.5, 640, 480)
    paths = [shared_data / 'tum' / 'TUM_color.png',
             *sorted((shared_data / 'icl_livingroom').glob('color_*.jpg'))]
    frames = [(cv2.imread(str(p))[:, :, ::-1].copy(), intr, 10**18 + i * 10**9)
              for i, p in enumerate(paths)]
    src = tmp_path / 'real'
    stamps = write_bag(src, frames, storage='mcap', compressed=True)
    dst = tmp_path / 'out'
    assert run(src, dst, '--params-file', params, '--every', 2, '--copy-inputs',
               '--no-viewers') == 0
    bag = read_bag(dst)
    got = [stamp_ns(m) for _, m in bag[f'{NS}/depth/image']]
    assert got == stamps[::2]
    assert f'{NS}/depth/colored' not in bag
    assert len(bag[IMAGE_TOPIC + '/compressed']) == len(frames)
    assert len(bag[INFO_TOPIC]) == len(frames)
    dst2 = tmp_path / 'out2'
    assert run(src, dst2, '--params-file', params, '--start', 0.5, '--end', 2.5) == 0
    assert [stamp_ns(m) for _, m in read_bag(dst2)[f'{NS}/depth/image']] == stamps[1:3]


def test_errors(tmp_path, params, capsys):
    frames = synthetic_frames(3)
    src = tmp_path / 'in'
    write_bag(src, frames, extra_topics=True)
    dst = tmp_path / 'out'
    assert run(src, dst, '--params-file', params, '--image-topic', '/nope') == 2
    err = capsys.readouterr().err
    assert "'/nope' is not in the bag" in err and IMAGE_TOPIC in err and INFO_TOPIC in err
    empty = tmp_path / 'empty'
    empty_bag(empty)
    assert run(empty, dst, '--params-file', params) == 2
    assert 'empty' in capsys.readouterr().err
    dst.mkdir()
    assert run(src, dst, '--params-file', params) == 2
    assert '--force' in capsys.readouterr().err
    assert run(src, dst, '--params-file', params, '--force') == 0
    bad_params = tmp_path / 'bad.yaml'
    bad_params.write_text('/**:\n  ros__parameters:\n    depth: {max: -1.0}\n')
    assert run(src, tmp_path / 'o3', '--params-file', bad_params) == 2
    assert 'depth.max' in capsys.readouterr().err


def test_corrupt_messages_are_skipped_and_counted(tmp_path, params, capsys):
    frames = synthetic_frames(5)
    src = tmp_path / 'in'
    stamps = write_bag(src, frames, corrupt=[1, 3])
    dst = tmp_path / 'out'
    assert run(src, dst, '--params-file', params) == 0
    captured = capsys.readouterr()
    assert 'processed 3 frames' in captured.out and 'skipped' in captured.out
    assert 'warning' in captured.err
    got = [stamp_ns(m) for _, m in read_bag(dst)[f'{NS}/depth/image']]
    assert got == [stamps[0], stamps[2], stamps[4]]


def test_no_camera_info_writes_depth_without_points(tmp_path, params):
    src = tmp_path / 'in'
    write_bag(src, synthetic_frames(2), with_info=False)
    dst = tmp_path / 'out'
    assert run(src, dst, '--params-file', params) == 0
    bag = read_bag(dst)
    assert len(bag[f'{NS}/depth/image']) == 2
    assert f'{NS}/points' not in bag and f'{NS}/depth/camera_info' not in bag


def test_output_namespace():
    assert output_namespace('/camera/color/image_raw') == '/camera/color'
    assert output_namespace('/camera/color/image_raw/compressed') == '/camera/color'
    assert output_namespace('/image') == ''


def test_frame_is_decoded_like_the_node():
    """A rosbags Image decodes through the same decoder the node uses."""
    from bagutil import image
    rgb = synthetic_sequence(1, 32, 24)[0].rgb
    f = conv.decode_image(image(rgb, 5, False))
    assert isinstance(f, Frame) and np.array_equal(f.pixels, rgb)
