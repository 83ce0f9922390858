# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""dpt_bag with depth.mode fitted: anchors read from the bag, paired by stamp, held, lost."""

import numpy as np
import pytest

from dpt_ros.core import conversions as conv
from dpt_ros.core.config import Config
from dpt_ros.core.conversions import Frame
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.offline.cli import main

from bagutil import (camera_info, header, image, IMAGE_TOPIC, INFO_TOPIC,  # noqa: I100
                     read_bag, stamp_ns, STORE, synthetic_frames)

NS = '/camera/color'
ANCHORS = '/camera/aligned_depth_to_color/image_raw'
T0 = 1_700_000_000_000_000_000
PERIOD = 100_000_000


def _scale(i):
    """Return the true map of frame i: metres = 1 / (s * d + b), new for every frame."""
    return 0.01 * (1 + 0.1 * i), 0.05


def _anchor_image(rel, i, stamp, rng, encoding='32FC1'):
    """Make a sparse 32FC1 depth image whose 300 valid pixels follow frame i's true map."""
    s, b = _scale(i)
    z = np.full(rel.shape, np.nan, np.float32)
    h, w = rel.shape
    pick = rng.choice(h * w, 300, replace=False)
    z.reshape(-1)[pick] = 1.0 / (s * rel.reshape(-1)[pick] + b)
    T = STORE.types
    if encoding != '32FC1':  # a bad message: right size, wrong encoding
        z = np.zeros((h, w, 3), np.uint8)
    data = np.ascontiguousarray(z).reshape(h, -1).view(np.uint8)
    return T['sensor_msgs/msg/Image'](header=header(stamp), height=h, width=w,
                                      encoding=encoding, is_bigendian=0,
                                      step=data.shape[1], data=data.ravel())


@pytest.fixture
def fitted_bag(tmp_path, tiny_depth):
    """Write a bag with images, camera_info and anchors logged 20 ms after their image.

    No anchors for frames 6 and 7; frame 3's anchor message has a wrong encoding.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    frames = synthetic_frames(10, period=PERIOD, t0=T0)
    pipe = Pipeline(Config().replace({'model.depth': str(tiny_depth), 'model.device': 'cpu',
                                      'depth.temporal': False}), log=lambda m: None)
    rels = [pipe.process(Frame(rgb, 'rgb8'), None, {'relative'}).arrays['relative']
            for rgb, _, _ in frames]
    rng = np.random.default_rng(0)
    src = tmp_path / 'in'
    with Writer(src, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        ci = w.add_connection(IMAGE_TOPIC, 'sensor_msgs/msg/Image', typestore=STORE)
        cc = w.add_connection(INFO_TOPIC, 'sensor_msgs/msg/CameraInfo', typestore=STORE)
        ca = w.add_connection(ANCHORS, 'sensor_msgs/msg/Image', typestore=STORE)
        for i, ((rgb, intr, stamp), rel) in enumerate(zip(frames, rels)):
            w.write(cc, stamp, STORE.serialize_cdr(camera_info(intr, stamp),
                                                   'sensor_msgs/msg/CameraInfo'))
            w.write(ci, stamp + 1000, STORE.serialize_cdr(image(rgb, stamp, False),
                                                          'sensor_msgs/msg/Image'))
            if i not in (6, 7):
                msg = _anchor_image(rel, i, stamp, rng, 'rgb8' if i == 3 else '32FC1')
                w.write(ca, stamp + 20_000_000, STORE.serialize_cdr(msg, 'sensor_msgs/msg/Image'))
    params = tmp_path / 'params.yaml'
    params.write_text('/**:\n  ros__parameters:\n    model:\n'
                      f'      depth: {tiny_depth}\n      device: cpu\n'
                      '    depth: {mode: fitted, max: 10000.0, min: 0.0, temporal: false}\n'
                      '    anchors: {source: depth_image, hold: 0.15, max_age: 0.05}\n')
    return src, params, frames, rels


def test_bag_fits_each_frame_to_its_own_anchors(tmp_path, fitted_bag, capsys):
    src, params, frames, rels = fitted_bag
    dst = tmp_path / 'out'
    assert main([str(src), str(dst), '--params-file', str(params), '--image-topic',
                 IMAGE_TOPIC, '--batch', '3', '--quiet']) == 0
    cap = capsys.readouterr()
    assert '7 of 10 frames paired with anchors on ' + ANCHORS in cap.err
    assert 'anchors 1' in cap.out  # the bad anchor message, counted
    bag = read_bag(dst)
    got = {stamp_ns(m): conv.image_to_array(m) for _, m in bag[f'{NS}/depth/image']}
    # Frame 3 (bad anchors) and 6 are held, 7 is past anchors.hold: no metres, never guessed.
    published = [i for i, (_, _, stamp) in enumerate(frames) if stamp in got]
    assert published == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    for i in (0, 1, 2, 4, 5, 8, 9):  # fitted on their own anchors (a mix-up would show)
        s, b = _scale(i)
        want = 1.0 / (s * rels[i] + b)
        assert np.allclose(got[frames[i][2]], want, rtol=2e-3, equal_nan=True), i
    assert len(bag[f'{NS}/points']) == 9 and len(bag[f'{NS}/depth/relative']) == 10


def test_bag_anchor_topic_auto_and_errors(tmp_path, fitted_bag, capsys):
    src, params, _, _ = fitted_bag
    # Two Image topics: one must be named, the anchors are then the other one.
    assert main([str(src), str(tmp_path / 'o1'), '--params-file', str(params),
                 '--quiet']) == 1
    assert 'choose one with --image-topic' in capsys.readouterr().err
    assert main([str(src), str(tmp_path / 'o2'), '--params-file', str(params),
                 '--anchors-topic', ANCHORS, '--quiet']) == 0
    assert '7 of 10 frames paired' in capsys.readouterr().err
    assert main([str(src), str(tmp_path / 'o3'), '--params-file', str(params),
                 '--image-topic', IMAGE_TOPIC, '--anchors-topic', '/nope', '--quiet']) == 1
    assert "topic '/nope' is not in the bag" in capsys.readouterr().err
    # Without anchors.source the anchor topic is not read: relative output only.
    plain = tmp_path / 'plain.yaml'
    plain.write_text(params.read_text().replace('mode: fitted', 'mode: auto')
                     .replace('source: depth_image', 'source: none'))
    assert main([str(src), str(tmp_path / 'o4'), '--params-file', str(plain),
                 '--image-topic', IMAGE_TOPIC, '--quiet']) == 0
    bag = read_bag(tmp_path / 'o4')
    assert f'{NS}/depth/image' not in bag and len(bag[f'{NS}/depth/relative']) == 10
