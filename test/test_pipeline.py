# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The pipeline object: requested outputs only, timings, batches, live settings, warnings."""

import numpy as np
import pytest

from dpt_ros.config import Config
from dpt_ros.conversions import Frame
from dpt_ros.geometry import Intrinsics
from dpt_ros.pipeline import Outputs, Pipeline, STAGES
from dpt_ros.sample import synthetic_sequence


@pytest.fixture(scope='module')
def pipe(checkpoints):
    cfg = Config().replace({'model.depth': str(checkpoints('tiny-depth-anything')),
                            'model.segmentation': str(checkpoints('tiny-seg')),
                            'model.device': 'cpu'})
    return Pipeline(cfg, log=lambda m: None)


FIELDS = {'relative': 'relative', 'depth': 'depth', 'colored': 'depth_colored',
          'points': 'points', 'labels': 'labels', 'seg_colored': 'seg_colored',
          'overlay': 'overlay'}


def test_only_requested_outputs(pipe):
    s = synthetic_sequence(1, 96, 72)[0]
    for name, attr in FIELDS.items():
        want = Outputs(**{k: k == name for k in FIELDS})
        r = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics, want)
        got = {a for a in FIELDS.values() if getattr(r, a) is not None}
        expected = set() if name == 'relative' else {attr}  # metric model: no relative output
        assert got == expected, name
    r = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics, Outputs())
    assert set(STAGES) <= set(r.timings) and all(v >= 0 for v in r.timings.values())
    assert r.points.shape == (96 * 72, 4) and r.points_shape == (72, 96)
    assert r.depth.dtype == np.float32 and r.labels.dtype == np.uint8


def test_batch_equals_single_frames(pipe):
    seq = synthetic_sequence(3, 80, 60)
    frames = [Frame(s.rgb, 'rgb8') for s in seq]
    batch = pipe.process_batch(frames, [s.intrinsics for s in seq])
    for f, s, b in zip(frames, seq, batch):
        one = pipe.process(f, s.intrinsics)
        assert np.allclose(one.depth, b.depth, equal_nan=True, rtol=1e-4, atol=1e-5)
        assert (one.labels == b.labels).mean() > 0.999


def test_bad_layout_and_wrong_intrinsics(pipe):
    s = synthetic_sequence(1, 64, 48)[0]
    with pytest.raises(ValueError, match='layout'):
        pipe.process(Frame(s.rgb, 'bayer'), s.intrinsics)
    wrong = Intrinsics(fx=50, fy=50, cx=10, cy=10, width=320, height=240)
    r = pipe.process(Frame(s.rgb, 'rgb8'), wrong)
    assert r.points is None and r.depth is not None
    assert any('320x240' in w for w in r.warnings)


def test_live_update_applies_next_frame(pipe):
    s = synthetic_sequence(1, 64, 48)[0]
    before = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics).depth
    old = pipe.config
    try:
        limit = float(np.nanpercentile(before, 50))
        pipe.update(old.replace({'depth.max': limit}))
        after = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics).depth
        assert np.nanmax(after) <= limit
        assert np.isnan(after).sum() > np.isnan(before).sum()
    finally:
        pipe.update(old)


def test_mono_and_bgr_inputs(pipe):
    s = synthetic_sequence(1, 64, 48)[0]
    rgb = pipe.process(Frame(s.rgb, 'rgb8'), None, Outputs(points=False)).depth
    bgr = pipe.process(Frame(np.ascontiguousarray(s.rgb[:, :, ::-1]), 'bgr8'), None,
                       Outputs(points=False)).depth
    assert np.allclose(rgb, bgr, equal_nan=True)
    mono = pipe.process(Frame(s.rgb[:, :, :1].copy(), 'mono8'), None, Outputs(points=False))
    assert mono.depth.shape == (48, 64)
