# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""dpt_bag with the dense outputs: normals and semantic clouds written, a prompted model."""

import numpy as np

from dpt_ros.core import conversions as conv
from dpt_ros.core import normals as nm
from dpt_ros.core.config import Config
from dpt_ros.core.conversions import Frame
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.offline.cli import main
from dpt_ros.tools.sample import synthetic_sequence

from bagutil import (header, read_bag, stamp_ns, STORE, Stream, synthetic_frames,  # noqa: I100
                     write_bag, write_streams)

NS = '/camera/color'
ANCHORS = '/camera/aligned_depth_to_color/image_raw'


def run(src, dst, params, *more):
    return main([str(src), str(dst), '--params-file', str(params), '--quiet', *more])


def params_file(tmp_path, text):
    p = tmp_path / 'params.yaml'
    p.write_text('/**:\n  ros__parameters:\n' + text)
    return p


def test_normals_and_semantic_clouds_are_written_as_the_node_publishes_them(tmp_path,
                                                                            checkpoints):
    tips = checkpoints('tiny-tipsv2')
    params = params_file(tmp_path, f'    model: {{depth: {tips}, segmentation: {tips}, '
                         'device: cpu}\n    points: {normals: true}\n')
    frames = synthetic_frames(3)
    src, dst = tmp_path / 'in', tmp_path / 'out'
    stamps = write_bag(src, frames)
    assert run(src, dst, params) == 0
    bag = read_bag(dst)
    for topic in ('normals/image', 'normals/colored', 'points', 'segmentation/image',
                  'depth/image'):
        assert [stamp_ns(m) for _, m in bag.get(f'{NS}/{topic}', [])] == stamps, topic
    pipe = Pipeline(Config().replace({'model.depth': str(tips), 'model.segmentation': str(tips),
                                      'model.device': 'cpu', 'points.normals': True}),
                    log=lambda _m: None)
    for (rgb, intr, _), (_, n), (_, cloud), (_, lab) in zip(
            frames, bag[f'{NS}/normals/image'], bag[f'{NS}/points'],
            bag[f'{NS}/segmentation/image']):
        assert n.encoding == '32FC3'
        live = pipe.process(Frame(rgb, 'rgb8'), intr, {'normals'}).arrays['normals']
        normals = conv.image_to_array(n)
        # The bag runs frames in batches: a batched forward differs from a single one in the
        # last float bits, and normalising a short raw normal can grow that to ~3e-4 on a few
        # pixels (seen on one x86 CPU). 1e-3 is 0.06 degrees; another frame's normals or
        # wrong ones are off by tenths.
        assert np.allclose(normals, live, atol=1e-3)
        pts = conv.read_points(cloud)
        assert pts.dtype.names == ('x', 'y', 'z', 'rgb') + nm.NORMAL_FIELDS + ('label',)
        assert np.array_equal(pts['label'], conv.image_to_array(lab).astype(np.uint32))
        assert np.array_equal(np.stack([pts[f] for f in nm.NORMAL_FIELDS], -1), normals)


def _anchor_image(depth, stamp, rng):
    """Make a sparse 32FC1 depth image registered to the frame: 300 true depths."""
    z = np.full(depth.shape, np.nan, np.float32)
    pick = rng.choice(np.flatnonzero(np.isfinite(depth)), 300, replace=False)
    z.flat[pick] = depth.flat[pick]
    h, w = depth.shape
    data = np.ascontiguousarray(z).reshape(h, -1).view(np.uint8)
    return STORE.types['sensor_msgs/msg/Image'](
        header=header(stamp), height=h, width=w, encoding='32FC1', is_bigendian=0,
        step=data.shape[1], data=data.ravel())


def test_prompt_depth_anything_takes_the_bags_anchors_and_gives_no_depth_without(
        tmp_path, checkpoints):
    pda = checkpoints('tiny-prompt-depth-anything')
    params = params_file(tmp_path, f'    model: {{depth: {pda}, device: cpu}}\n'
                         '    anchors: {source: depth_image, max_age: 0.05}\n'
                         '    depth: {max: 9.99}\n')
    frames = synthetic_frames(4)
    scenes = synthetic_sequence(4, 96, 72)
    rng = np.random.default_rng(1)
    # Anchors for frames 0, 1 and 3: frame 2 has none within anchors.max_age.
    more = [(ANCHORS, 'sensor_msgs/msg/Image', stamp, _anchor_image(s.depth, stamp, rng))
            for k, (s, (_, _, stamp)) in enumerate(zip(scenes, frames)) if k != 2]
    src, dst = tmp_path / 'in', tmp_path / 'out'
    stamps = write_streams(src, [Stream(frames)], more=more)[0]
    assert run(src, dst, params, '--anchors-topic', ANCHORS, '--batch', '2') == 0
    bag = read_bag(dst)
    got = [stamp_ns(m) for _, m in bag[f'{NS}/depth/image']]
    assert got == [stamps[0], stamps[1], stamps[3]]
    assert all(np.isfinite(conv.image_to_array(m)).mean() > 0.5
               for _, m in bag[f'{NS}/depth/image'])
