# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Real-weight checks: run with `bash scripts/test.sh --model DIR` (skipped without one).

DIR is a depth checkpoint folder (e.g. `hf download Intel/dpt-hybrid-midas --local-dir DIR`).
The same code path as the tiny random checkpoints, plus what only trained weights can show:
the depth follows the ground truth of real frames (TUM, ICL-NUIM in ../shared/data).
"""

from pathlib import Path

import cv2
import numpy as np
import pytest

from dpt_ros.core.config import Config
from dpt_ros.core.conversions import Frame
from dpt_ros.core.pipeline import Pipeline

pytestmark = pytest.mark.real_model

# (colour, depth, depth unit in metres) of the shared RGB-D frames.
_GT = [('tum/TUM_color.png', 'tum/TUM_depth.png', 1 / 5000.0)] + [
    (f'icl_livingroom/color_0000{i}.jpg', f'icl_livingroom/depth_0000{i}.png', 1 / 1000.0)
    for i in range(3)]


def rgbd_frames(shared):
    """Return (name, rgb, ground-truth metres with NaN for no reading) per shared frame."""
    out = []
    for color, depth, unit in _GT:
        bgr = cv2.imread(str(shared / color), cv2.IMREAD_COLOR)
        raw = cv2.imread(str(shared / depth), cv2.IMREAD_UNCHANGED)
        assert bgr is not None and raw is not None, color
        gt = np.where(raw > 0, raw.astype(np.float64) * unit, np.nan)
        out.append((color, np.ascontiguousarray(bgr[:, :, ::-1]), gt))
    return out


def spearman(a, b):
    """Rank correlation of two 1-D arrays (no scipy)."""
    ra = np.empty(len(a))
    rb = np.empty(len(b))
    ra[np.argsort(a)] = np.arange(len(a))
    rb[np.argsort(b)] = np.arange(len(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def aligned_abs_rel(inv_pred, gt):
    """Return AbsRel of depth after a least-squares scale and shift of inverse depth (MiDaS)."""
    A = np.stack([inv_pred, np.ones_like(inv_pred)], axis=1)
    (s, t), *_ = np.linalg.lstsq(A, 1.0 / gt, rcond=None)
    inv = s * inv_pred + t
    ok = inv > 1e-6
    return float(np.mean(np.abs(1.0 / inv[ok] - gt[ok]) / gt[ok])), float(ok.mean())


def constant_abs_rel(gt):
    """Return the AbsRel of the best constant guess under the same alignment (the bar)."""
    c = 1.0 / np.mean(1.0 / gt)
    return float(np.mean(np.abs(c - gt) / gt))


@pytest.fixture(scope='module')
def real_pipe(real_model):
    # The model's own output on unrelated frames: no temporal alignment of depth/relative.
    cfg = Config().replace({'model.depth': real_model, 'model.device': 'auto',
                            'depth.min': 0.0, 'depth.max': 1.0e4, 'depth.temporal': False})
    return Pipeline(cfg, log=print)


def test_real_model_matches_transformers(real_model, real_pipe, maybe_shared, record_figure):
    """Our device pipeline vs transformers' processor + model + post-processing."""
    from test_preprocess_parity import frames, rel_stats, reference
    ckpt = Path(real_model)
    if not (ckpt / 'preprocessor_config.json').is_file():
        pytest.skip(f'{ckpt} has no preprocessor_config.json to build the reference with')
    precise = real_pipe.depth_model.dtype.is_floating_point and \
        real_pipe.depth_model.dtype.itemsize == 4
    for name, rgb in frames(maybe_shared)[:4]:
        ref = reference(ckpt, rgb, 'depth').numpy()
        r = real_pipe.process(Frame(rgb, 'rgb8'), None)
        ours = r.arrays['relative'] if 'relative' in r.arrays else r.arrays['depth']
        med, p99 = rel_stats(np.nan_to_num(ours), ref)
        record_figure(f'real depth parity {name}', f'median {med:.5f}, p99 {p99:.5f}')
        # Half precision on a GPU is compared with the fp32 reference: looser.
        assert med <= (0.01 if precise else 0.02) and p99 <= (0.05 if precise else 0.1), name


def test_real_model_depth_follows_ground_truth(real_pipe, shared_data, record_figure):
    """Trained weights put near things near: rank correlation and scale-aligned AbsRel."""
    metric = real_pipe.depth_mode() == 'metric'
    for name, rgb, gt in rgbd_frames(shared_data):
        r = real_pipe.process(Frame(rgb, 'rgb8'), None)
        pred = r.arrays['depth' if metric else 'relative']
        ok = np.isfinite(gt) & np.isfinite(pred) & (pred > 0 if metric else True)
        inv_pred = (1.0 / pred[ok]) if metric else pred[ok].astype(np.float64)
        rho = spearman(inv_pred, 1.0 / gt[ok])
        abs_rel, kept = aligned_abs_rel(inv_pred, gt[ok])
        flat = constant_abs_rel(gt[ok])
        text = f'spearman {rho:.3f}, aligned AbsRel {abs_rel:.3f} (a constant: {flat:.3f})'
        if metric:
            text += f', raw metric AbsRel {np.mean(np.abs(pred[ok] - gt[ok]) / gt[ok]):.3f}'
        record_figure(f'real depth vs ground truth {name}', text)
        # A random-weight model scores about 0 and no better than a constant.
        assert rho > 0.5, f'{name}: {text}'
        assert abs_rel < min(0.3, 0.8 * flat) and kept > 0.9, f'{name}: {text}'
