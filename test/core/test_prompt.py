# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Dense metric prompts from sparse anchors: cells, push-pull, the guided fill."""

import math

import numpy as np
import torch

from dpt_ros.core import prompt as pr
from dpt_ros.core.config import ModelConfig
from dpt_ros.core.metric import Anchors
from dpt_ros.core.models import load_model
from dpt_ros.core.preprocess import Preprocessor, prompt_depth, to_rgb
from dpt_ros.tools.sample import synthetic_scene

CPU = torch.device('cpu')


def anchors_at(depth, pick):
    h, w = depth.shape
    return Anchors((pick % w).astype(np.float32), (pick // w).astype(np.float32),
                   depth.reshape(-1)[pick].astype(np.float32), int(pick.size))


def lidar_rows(depth, beams=16, step=4):
    """Return a 16-beam lidar's anchors: every step-th pixel of rows over the lower 3/4."""
    h, w = depth.shape
    rows = np.linspace(0.25 * h, h - 1, beams).round().astype(int)
    pick = (rows[:, None] * w + np.arange(0, w, step)[None]).reshape(-1)
    return anchors_at(depth, pick[np.isfinite(depth.reshape(-1)[pick])])


def cell_truth(depth, grid_hw):
    return pr.cell_means(torch.from_numpy(depth)[None], grid_hw)[0]


def absrel(a, b):
    ok = torch.isfinite(a) & torch.isfinite(b)
    return float(((a[ok] - b[ok]).abs() / b[ok]).mean())


def test_prompt_size_keeps_the_aspect_of_an_iphone_lidar_map():
    assert pr.prompt_size((480, 640)) == (192, 256)
    assert pr.prompt_size((720, 1280)) == (144, 256)
    assert pr.prompt_size((640, 480)) == (256, 192)
    assert pr.prompt_size((120, 160)) == (120, 160)  # never finer than the image


def test_splat_averages_anchors_into_their_cells_and_drops_the_rest():
    a = Anchors(u=np.array([0, 1, 9, 9, 20, -3], np.float32),
                v=np.array([0, 0, 9, 9, 5, 0], np.float32),
                z=np.array([1, 3, 2, 4, 5, 6], np.float32))
    mean, count = pr.splat([a, None], (10, 10), (2, 2), CPU)
    assert mean.shape == (2, 2, 2) and count[1].sum() == 0
    # (0,0) and (1,0) share the top-left cell; the two at (9,9) the bottom-right; u=20 and
    # u=-3 lie outside the image.
    assert mean[0].tolist() == [[2.0, 0.0], [0.0, 3.0]]
    assert count[0].tolist() == [[2.0, 0.0], [0.0, 2.0]]


def test_push_pull_keeps_known_cells_and_fills_holes_within_their_range():
    torch.manual_seed(0)
    truth = torch.linspace(1.0, 5.0, 64).repeat(48, 1)[None]  # a ramp in x
    known = torch.rand(1, 48, 64) < 0.03
    filled = pr.push_pull(truth, known.float())
    assert torch.equal(filled[known], truth[known])
    assert bool(torch.isfinite(filled).all())
    lo, hi = float(truth[known].min()), float(truth[known].max())
    assert lo - 1e-5 <= float(filled.min()) and float(filled.max()) <= hi + 1e-5
    assert absrel(filled, truth) < 0.1  # smooth between anchors, close on a ramp
    const = pr.push_pull(torch.full((1, 7, 9), 2.5), (torch.rand(1, 7, 9) < 0.2).float())
    assert torch.allclose(const, torch.full_like(const, 2.5))
    none = pr.push_pull(torch.zeros(2, 5, 5), torch.zeros(2, 5, 5))
    assert bool(torch.isnan(none).all())


def test_fitted_guide_recovers_metres_from_an_affine_inverse_depth():
    s = synthetic_scene(160, 120)
    relative = torch.from_numpy(40.0 / s.depth + 3.0)[None]  # what a relative model gives
    rng = np.random.default_rng(0)
    pick = rng.choice(np.flatnonzero(np.isfinite(s.depth.reshape(-1))), 50, replace=False)
    guide = pr.fitted_guide(relative, [anchors_at(s.depth, pick)])
    ok = np.isfinite(s.depth)
    assert np.allclose(guide[0].numpy()[ok], s.depth[ok], rtol=1e-3)
    assert bool(torch.isnan(pr.fitted_guide(relative, [None])).all())


def test_guided_fill_follows_the_scene_where_push_pull_flattens_it():
    s = synthetic_scene(320, 240)
    a = lidar_rows(s.depth)
    grid = pr.prompt_size(s.depth.shape)
    truth = cell_truth(s.depth, grid)
    plain, has = pr.dense_prompt([a], s.depth.shape, CPU)
    # A relative model's output, off by a smooth 10 % error, fitted to the anchors.
    yy, xx = np.mgrid[0:240, 0:320] / 240.0
    wrong = 1.0 / s.depth * (1.0 + 0.1 * np.sin(3 * xx) * np.cos(2 * yy))
    guide = pr.fitted_guide(torch.from_numpy(wrong.astype(np.float32))[None], [a])
    guided, _ = pr.dense_prompt([a], s.depth.shape, CPU, guide=guide)
    assert has == [True] and plain.shape == guided.shape == (1,) + grid
    assert bool(torch.isfinite(plain).all()) and bool(torch.isfinite(guided).all())
    e_plain, e_guided = absrel(plain[0], truth), absrel(guided[0], truth)
    assert e_guided < 0.5 * e_plain, (e_plain, e_guided)
    # Both keep each anchored cell's own mean.
    mean, count = pr.splat([a], s.depth.shape, grid, CPU)
    hit = count[0] > 0
    assert torch.allclose(plain[0][hit], mean[0][hit])
    assert torch.allclose(guided[0][hit], mean[0][hit], rtol=1e-5)


def test_frames_without_anchors_have_no_prompt():
    s = synthetic_scene(64, 48)
    prompts, has = pr.dense_prompt([None, lidar_rows(s.depth, beams=4)], (48, 64), CPU,
                                   grid_hw=(12, 16))
    assert has == [False, True]
    assert bool(torch.isnan(prompts[0]).all()) and bool(torch.isfinite(prompts[1]).all())


def test_the_prompt_drives_prompt_depth_anything(checkpoints):
    s = synthetic_scene(160, 120)
    m = load_model(str(checkpoints('tiny-prompt-depth-anything')), 'depth',
                   ModelConfig(device='cpu'), lambda _m: None, prompts=True)
    prompts, _ = pr.dense_prompt([lidar_rows(s.depth)], s.depth.shape, CPU)
    pv = Preprocessor(m.spec)(to_rgb(torch.from_numpy(s.rgb)[None], 'rgb8'))
    with torch.no_grad():
        out = m(pv, prompt_depth(prompts))
    # The model puts the prompt's range back: its metres lie within it.
    lo, hi = float(prompts.min()), float(prompts.max())
    assert lo - 1e-3 <= float(out.min()) and float(out.max()) <= hi + 1e-3
    assert math.isfinite(float(out.mean()))
