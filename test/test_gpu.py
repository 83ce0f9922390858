# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The GPU path gives what the CPU path gives (skipped without CUDA)."""

import numpy as np
import pytest

from dpt_ros.config import Config
from dpt_ros.conversions import Frame
from dpt_ros.pipeline import Pipeline
from dpt_ros.sample import synthetic_scene

pytestmark = pytest.mark.gpu


def run(ckpt, seg, device, precision='fp32', backend='torch'):
    cfg = Config().replace({'model.depth': str(ckpt), 'model.segmentation': str(seg),
                            'model.device': device, 'model.precision': precision,
                            'model.backend': backend})
    pipe = Pipeline(cfg, log=lambda m: None)
    s = synthetic_scene(640, 480)
    out = [pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics) for _ in range(3)][-1]
    pipe.close()
    return out


def rel_diff(a, b):
    ok = np.isfinite(a) & np.isfinite(b)
    assert ok.mean() > 0.9
    return np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-6)


@pytest.mark.parametrize('precision, median_tol', [('fp32', 1e-4), ('fp16', 1e-2),
                                                   ('bf16', 3e-2)])
def test_cuda_matches_cpu(tiny_metric, tiny_seg, precision, median_tol):
    cpu = run(tiny_metric, tiny_seg, 'cpu')
    gpu = run(tiny_metric, tiny_seg, 'cuda', precision)
    d = rel_diff(gpu.arrays['depth'], cpu.arrays['depth'])
    assert np.median(d) <= median_tol and np.percentile(d, 99) <= 10 * median_tol + 0.02
    assert (gpu.arrays['labels'] == cpu.arrays['labels']).mean() >= 0.98
    # Points on the device equal points on the host (same back-projection).
    a, b = gpu.arrays['points'][:, :3], cpu.arrays['points'][:, :3]
    ok = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    assert np.median(np.abs(a[ok] - b[ok])) < 0.05 * max(1.0, float(np.median(np.abs(b[ok]))))
    assert set(gpu.timings) == set(cpu.timings)


def test_cuda_compile_backend_matches_eager(tiny_metric, tiny_seg):
    eager = run(tiny_metric, tiny_seg, 'cuda', 'fp16')
    compiled = run(tiny_metric, tiny_seg, 'cuda', 'fp16', backend='compile')
    d = rel_diff(compiled.arrays['depth'], eager.arrays['depth'])
    assert np.median(d) <= 1e-2
