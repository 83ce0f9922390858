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
from compresseddepthutil import compressed_depth

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


def _relative(tiny_depth, frames):
    """Return the checkpoint's relative output of each frame (what the anchors are made for)."""
    pipe = Pipeline(Config().replace({'model.depth': str(tiny_depth), 'model.device': 'cpu',
                                      'depth.temporal': False}), log=lambda m: None)
    return [pipe.process(Frame(rgb, 'rgb8'), None, {'relative'}).arrays['relative']
            for rgb, _, _ in frames]


def _write(src, frames, extra, image_topic=IMAGE_TOPIC, info_topic=INFO_TOPIC):
    """Write images and camera_info, plus extra (topic, type, log time, message) messages."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    with Writer(src, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        ci = w.add_connection(image_topic, 'sensor_msgs/msg/Image', typestore=STORE)
        cc = w.add_connection(info_topic, 'sensor_msgs/msg/CameraInfo', typestore=STORE)
        conns = {}
        for topic, mtype, _, _ in extra:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, mtype, typestore=STORE)
        events = [(stamp, 0, i) for i, (_, _, stamp) in enumerate(frames)] + \
            [(t, 1, i) for i, (_, _, t, _) in enumerate(extra)]
        for t, kind, i in sorted(events):
            if kind:
                topic, mtype, _, msg = extra[i]
                w.write(conns[topic], t, STORE.serialize_cdr(msg, mtype))
                continue
            rgb, intr, stamp = frames[i]
            w.write(cc, stamp, STORE.serialize_cdr(camera_info(intr, stamp),
                                                   'sensor_msgs/msg/CameraInfo'))
            w.write(ci, stamp + 1000, STORE.serialize_cdr(image(rgb, stamp, False),
                                                          'sensor_msgs/msg/Image'))


def _params(tmp_path, tiny_depth, more=''):
    params = tmp_path / 'params.yaml'
    params.write_text('/**:\n  ros__parameters:\n    model:\n'
                      f'      depth: {tiny_depth}\n      device: cpu\n'
                      '    depth: {mode: fitted, max: 10000.0, min: 0.0, temporal: false}\n'
                      '    anchors: {source: depth_image, hold: 0.15, hold_frames: 0, '
                      f'max_age: 0.05{more}}}\n')
    return params


@pytest.fixture
def fitted_bag(tmp_path, tiny_depth):
    """Write a bag with images, camera_info and anchors logged 20 ms after their image.

    No anchors for frames 6 and 7; frame 3's anchor message has a wrong encoding.
    """
    frames = synthetic_frames(10, period=PERIOD, t0=T0)
    rels = _relative(tiny_depth, frames)
    rng = np.random.default_rng(0)
    src = tmp_path / 'in'
    _write(src, frames, [
        (ANCHORS, 'sensor_msgs/msg/Image', stamp + 20_000_000,
         _anchor_image(rel, i, stamp, rng, 'rgb8' if i == 3 else '32FC1'))
        for i, ((_, _, stamp), rel) in enumerate(zip(frames, rels)) if i not in (6, 7)])
    return src, _params(tmp_path, tiny_depth), frames, rels


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


DEPTH_CAM = '/camera/depth/image_rect_raw'
DEPTH_FRAME = 'camera_depth_optical_frame'


def _depth_bag(tmp_path, tiny_depth, frame_id):
    """Anchors from the depth camera's own topic and frame (a RealSense without alignment).

    The depth camera is calibrated like the colour one and sits where it does: with the
    identity extrinsic its pixels land on the same colour pixels.
    """
    frames = synthetic_frames(4, period=PERIOD, t0=T0)
    rels = _relative(tiny_depth, frames)
    rng = np.random.default_rng(1)
    extra = []
    for i, ((_, intr, stamp), rel) in enumerate(zip(frames, rels)):
        msg = _anchor_image(rel, i, stamp, rng)
        msg.header.frame_id = frame_id
        extra.append((DEPTH_CAM, 'sensor_msgs/msg/Image', stamp + 1000, msg))
        extra.append(('/camera/depth/camera_info', 'sensor_msgs/msg/CameraInfo', stamp,
                      camera_info(intr, stamp, frame_id)))
    src = tmp_path / 'in'
    _write(src, frames, extra)
    return src, frames, rels


def test_bag_refuses_depth_anchors_of_another_frame_unless_posed(tmp_path, tiny_depth, capsys):
    src, frames, rels = _depth_bag(tmp_path, tiny_depth, DEPTH_FRAME)
    args = [str(src), '--image-topic', IMAGE_TOPIC, '--anchors-topic', DEPTH_CAM, '--quiet']
    assert main([args[0], str(tmp_path / 'o1'), '--params-file',
                 str(_params(tmp_path, tiny_depth))] + args[1:]) == 0
    err = capsys.readouterr().err
    assert f"anchor depth image is in frame '{DEPTH_FRAME}' but the image in " \
        "'camera_color_optical_frame'" in err
    bag = read_bag(tmp_path / 'o1')
    assert f'{NS}/depth/image' not in bag and len(bag[f'{NS}/depth/relative']) == 4
    # Posed (here: the identity) and calibrated (its camera_info, found beside it): used.
    posed = _params(tmp_path, tiny_depth, ", extrinsic: '0 0 0 0 0 0 1'")
    assert main([args[0], str(tmp_path / 'o2'), '--params-file', str(posed)] + args[1:]) == 0
    assert '4 of 4 frames paired with anchors' in capsys.readouterr().err
    got = {stamp_ns(m): conv.image_to_array(m)
           for _, m in read_bag(tmp_path / 'o2')[f'{NS}/depth/image']}
    for i, (_, _, stamp) in enumerate(frames):
        s, b = _scale(i)
        assert np.allclose(got[stamp], 1.0 / (s * rels[i] + b), rtol=2e-3, equal_nan=True), i


def test_bag_with_unrelated_anchors_writes_no_metres_and_says_why(tmp_path, tiny_depth,
                                                                  capsys):
    frames = synthetic_frames(4, period=PERIOD, t0=T0)
    rng = np.random.default_rng(2)
    extra = []
    for _, _, stamp in frames:
        z = np.full((72, 96), np.nan, np.float32)
        z.flat[rng.choice(z.size, 300, replace=False)] = rng.uniform(1.0, 8.0, 300)
        data = z.view(np.uint8).reshape(72, -1)
        extra.append((ANCHORS, 'sensor_msgs/msg/Image', stamp + 1000, STORE.types[
            'sensor_msgs/msg/Image'](header=header(stamp), height=72, width=96,
                                     encoding='32FC1', is_bigendian=0, step=data.shape[1],
                                     data=data.ravel())))
    src = tmp_path / 'in'
    _write(src, frames, extra)
    assert main([str(src), str(tmp_path / 'out'), '--params-file',
                 str(_params(tmp_path, tiny_depth)), '--image-topic', IMAGE_TOPIC,
                 '--quiet']) == 0
    err = capsys.readouterr().err
    assert '4 of 4 frames paired' in err and 'anchors refused; publishing no metres' in err
    bag = read_bag(tmp_path / 'out')
    assert f'{NS}/depth/image' not in bag and len(bag[f'{NS}/depth/relative']) == 4


def test_bag_reads_compressed_depth_anchors(tmp_path, tiny_depth, capsys):
    """A RealSense bag recorded with compressedDepth: no --image-topic, no --anchors-topic."""
    frames = synthetic_frames(4, period=PERIOD, t0=T0)
    rels = _relative(tiny_depth, frames)
    rng = np.random.default_rng(0)
    extra = []
    for i, ((_, _, stamp), rel) in enumerate(zip(frames, rels)):
        img = _anchor_image(rel, i, stamp, rng)
        z = np.asarray(img.data).view(np.float32).reshape(img.height, img.width)
        codec = ('png', 'rvl')[i % 2]
        assert np.nanmax(z) < 50.0
        plain = compressed_depth(z, '32FC1', codec, frame_id=img.header.frame_id,
                                 depth_max=50.0)
        msg = STORE.types['sensor_msgs/msg/CompressedImage'](
            header=header(stamp), format=plain.format, data=plain.data)
        extra.append((ANCHORS + '/compressedDepth', 'sensor_msgs/msg/CompressedImage',
                      stamp + 20_000_000, msg))
    src = tmp_path / 'in'
    _write(src, frames, extra)
    params = _params(tmp_path, tiny_depth, ', transport: compressedDepth')
    dst = tmp_path / 'out'
    assert main([str(src), str(dst), '--params-file', str(params)]) == 0
    err = capsys.readouterr().err
    assert f'4 of 4 frames paired with anchors on {ANCHORS}/compressedDepth' in err, err
    got = {stamp_ns(m): conv.image_to_array(m) for _, m in read_bag(dst)[f'{NS}/depth/image']}
    assert len(got) == 4
    for i, (_, _, stamp) in enumerate(frames):
        s, b = _scale(i)
        want = 1.0 / (s * rels[i] + b)
        # Quantized inverse depth: one step is z / 10100 of z at most.
        assert np.nanmedian(np.abs(got[stamp] / want - 1)) < 2e-3, i
