# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""`dpt_eval`: how right and how steady fitted metric depth is, measured against truth.

No pretrained weights exist here, so the figures come from an ORACLE relative model, not a
trained network: the true inverse depth of a moving-camera sequence rendered by
dpt_ros.tools.sample, passed through what relative models do (a random per-frame affine map, a
smooth low-frequency error and pixel noise). It is injected through the same LoadedModel
seam as a real checkpoint and exists only here; no parameter selects it.
Sections: accuracy and scale drift (no fit, a static first-frame fit, a per-frame fit, the
fitted + temporal filter), an anchor outage (hold, then no metres, then recovery), per-stage
cost, flip confidence (and its cost on a random-weight checkpoint of a real architecture's
shape), how close a dense prompt filled from sparse anchors (Prompt Depth Anything's input)
is to the truth, and real weights on the test/data frames with --model DIR.
Writes results.json, results.md and metric.png (per-frame scale and error) to --out.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
import re
import sys
import time
from typing import AbstractSet, Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from dpt_ros.core import prompt as pr
from dpt_ros.core.config import cache_dir, Config
from dpt_ros.core.conversions import Frame
from dpt_ros.core.metric import Anchors, robust_fit
from dpt_ros.core.models import LoadedModel
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.core.preprocess import PreprocessSpec
from dpt_ros.tools.sample import synthetic_scene
from dpt_ros.tools.toolkit import pyplot, write_report

TARGETS = {'absrel': 0.03, 'scale_cv': 0.01, 'recovery_frames': 3, 'fit_p50_ms': 2.0,
           'iou': 0.5, 'real_absrel': 0.1}


# ------------------------------------------------------------------ the oracle

class OracleDepth(torch.nn.Module):
    """pixel_values -> relative inverse depth made from the truth of registered frames.

    Each input is recognised among the registered frames (or their mirror images) by a small
    normalised thumbnail; its true inverse depth, at the network's resolution, then goes
    through a per-frame affine map (log-normal scale, shift relative to the median), a
    smooth low-frequency multiplicative error fixed in network-input coordinates (as a
    model's bias is; mirror-symmetric when symmetric=True) and multiplicative pixel noise.
    corrupt = (x0, x1, y0, y1) in image fractions makes the region that much nearer in the
    unmirrored view only: a failure a flipped view reveals.
    """

    def __init__(self, seed: int = 0, scale_sigma: float = 0.15, shift_sigma: float = 0.1,
                 lowfreq: float = 0.02, noise: float = 0.01, symmetric: bool = False,
                 corrupt: Optional[Tuple[float, float, float, float]] = None,
                 corrupt_strength: float = 0.5) -> None:
        super().__init__()
        self.seed = seed
        self.scale_sigma, self.shift_sigma = scale_sigma, shift_sigma
        self.lowfreq, self.noise = lowfreq, noise
        self.symmetric, self.corrupt, self.corrupt_strength = symmetric, corrupt, corrupt_strength
        self._sigs: List[torch.Tensor] = []
        self._truth: List[torch.Tensor] = []
        rng = np.random.default_rng(seed + 7)
        # Three low-frequency terms: cycles per image in x and y, phases, drift per frame.
        self._terms = [(rng.uniform(0.3, 1.2), rng.uniform(0.3, 1.2), rng.uniform(0, 2 * np.pi),
                        rng.uniform(0, 2 * np.pi), rng.uniform(-0.02, 0.02)) for _ in range(3)]

    @staticmethod
    def _signature(img: torch.Tensor) -> torch.Tensor:
        """(3, H, W) -> normalised 12 x 16 thumbnail (invariant to per-channel affine maps)."""
        t = F.adaptive_avg_pool2d(img[None].float(), (12, 16))[0]
        t = t - t.mean(dim=(1, 2), keepdim=True)
        return t / t.std(dim=(1, 2), keepdim=True).clamp(min=1e-6)

    def register(self, rgb: np.ndarray, depth: np.ndarray) -> int:
        """Add a frame (H, W, 3 uint8 and metres); returns its index."""
        self._sigs.append(self._signature(torch.from_numpy(rgb).permute(2, 0, 1)))
        self._truth.append(torch.from_numpy(1.0 / np.asarray(depth, np.float32)))
        return len(self._sigs) - 1

    def _lookup(self, img: torch.Tensor) -> Tuple[int, bool]:
        sig = self._signature(img.cpu())
        best, key = float('inf'), (0, False)
        for k, s in enumerate(self._sigs):
            for mirrored in (False, True):
                err = float((sig - (s.flip(-1) if mirrored else s)).abs().mean())
                if err < best:
                    best, key = err, (k, mirrored)
        return key

    def _lowfreq(self, h: int, w: int, k: int) -> torch.Tensor:
        y = torch.linspace(0, 1, h)[:, None]
        x = torch.linspace(0, 1, w)[None, :]
        e = torch.zeros(h, w)
        for fx, fy, px, py, drift in self._terms:
            ph = 0.0 if self.symmetric else px + drift * k
            e = e + torch.cos(2 * np.pi * fx * (x - 0.5) + ph) * \
                torch.cos(2 * np.pi * fy * y + py + drift * k)
        return e * (self.lowfreq / float(e.std().clamp(min=1e-6)))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) -> (B, h, w) relative inverse depth."""
        outs = []
        h, w = pixel_values.shape[-2:]
        for img in pixel_values:
            k, mirrored = self._lookup(img)
            q = self._truth[k]
            q = F.interpolate(q[None, None], size=(h, w), mode='area')[0, 0]
            if mirrored:
                q = q.flip(-1)
            rng = np.random.default_rng([self.seed, k, int(mirrored)])
            frame_rng = np.random.default_rng([self.seed, k])
            a = math.exp(frame_rng.normal(0, self.scale_sigma) + rng.normal(0, 0.01)) * 100.0
            c = frame_rng.normal(0, self.shift_sigma) * float(q.median())
            q = q * (1.0 + self._lowfreq(h, w, k))
            if self.corrupt is not None and not mirrored:
                x0, x1, y0, y1 = self.corrupt
                r = (slice(int(y0 * h), int(y1 * h)), slice(int(x0 * w), int(x1 * w)))
                q[r] = q[r] * (1.0 + self.corrupt_strength)
            gen = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
            q = q * (1.0 + self.noise * torch.randn(q.shape, generator=gen))
            outs.append(a * (q + c))
        return torch.stack(outs).to(pixel_values.device)


def oracle_model(oracle: OracleDepth, height: int, width: int,
                 device: str = 'cpu') -> LoadedModel:
    """Wrap the oracle as a LoadedModel whose network input is height x width."""
    spec = PreprocessSpec(height=height, width=width, keep_aspect_ratio=False)
    return LoadedModel(task='depth', source='oracle (evaluation only)', net=oracle, spec=spec,
                       device=torch.device(device), dtype=torch.float32, model_type='oracle')


# ------------------------------------------------------------------ data

def make_anchors(depth: np.ndarray, count: int, noise: float, outliers: float,
                 rng: np.random.Generator, stamp: float = 0.0) -> Anchors:
    """Pick count random pixels of a true depth map, with relative noise and gross outliers."""
    h, w = depth.shape
    valid = np.flatnonzero(np.isfinite(depth.reshape(-1)) & (depth.reshape(-1) > 0))
    pick = rng.choice(valid, min(count, valid.size), replace=False)
    z = depth.reshape(-1)[pick] * (1.0 + noise * rng.standard_normal(pick.size))
    bad = rng.random(pick.size) < outliers
    z[bad] = rng.uniform(0.3, 15.0, int(bad.sum()))
    return Anchors((pick % w).astype(np.float32), (pick // w).astype(np.float32),
                   z.astype(np.float32), int(pick.size), stamp)


def make_sequence(n: int, width: int, height: int) -> List[Any]:
    """Render n frames of the sample scene, the camera sliding sideways (1.5 cm a frame)."""
    return [synthetic_scene(width, height, t=0.05 * i) for i in range(n)]


# ------------------------------------------------------------------ one run

def _frame_metrics(depth: Optional[np.ndarray], truth: np.ndarray) -> Dict[str, float]:
    valid = np.isfinite(truth) & (truth > 0)
    if depth is None:
        return {'absrel': float('nan'), 'ratio': float('nan'), 'coverage': 0.0}
    ok = valid & np.isfinite(depth)
    if not ok.any():
        return {'absrel': float('nan'), 'ratio': float('nan'), 'coverage': 0.0}
    rel = (depth[ok] - truth[ok]) / truth[ok]
    return {'absrel': float(np.abs(rel).mean()), 'ratio': float(np.median(depth[ok] / truth[ok])),
            'coverage': float(ok.sum() / valid.sum())}


def run_sequence(model: LoadedModel, seq: Sequence[Any], anchors: Sequence[Optional[Anchors]],
                 settings: Dict[str, Any], fps: float,
                 want: AbstractSet[str] = frozenset({'depth'})) -> List[Dict[str, Any]]:
    """Run frames through a fresh Pipeline with these settings; per-frame records."""
    cfg = Config().replace(dict({'model.depth': model.source, 'model.segmentation': '',
                                 'model.device': 'cpu', 'depth.min': 0.0, 'depth.max': 1.0e4},
                                **settings))
    pipe = Pipeline(cfg, log=lambda m: None, depth_model=model)
    records = []
    for i, s in enumerate(seq):
        r = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics, want, anchors=anchors[i],
                         source='eval', stamp=i / fps)
        depth = r.arrays.get('depth')
        rec = _frame_metrics(depth, s.depth)
        rec.update({'frame': i, 'metric': depth is not None, 'timings': r.timings,
                    'warnings': list(r.warnings), 'confidence': r.arrays.get('confidence')})
        if r.fit is not None:
            rec.update({'scale': r.fit.scale, 'shift': r.fit.shift, 'held': r.fit.held,
                        'gated': r.fit.gated, 'inliers': r.fit.inliers, 'state': r.fit.state,
                        'used': r.fit.used, 'gain': r.fit.gain,
                        'spread_ratio': r.fit.spread_ratio})
        records.append(rec)
    pipe.close()
    return records


def first_frame_fit(model: LoadedModel, seq: Sequence[Any], first: Anchors,
                    threshold: float) -> Tuple[float, float]:
    """Return what a user calibrating once would set: the fit on the first frame's anchors."""
    cfg = Config().replace({'model.depth': model.source, 'model.device': 'cpu',
                            'depth.mode': 'relative_inverse', 'depth.temporal': False})
    pipe = Pipeline(cfg, log=lambda m: None, depth_model=model)
    r = pipe.process(Frame(seq[0].rgb, 'rgb8'), None, {'relative'})
    d = torch.from_numpy(r.arrays['relative'])
    u, v = np.rint(first.u).astype(int), np.rint(first.v).astype(int)
    da = d[v, u][None]
    z = torch.from_numpy(first.z)[None]
    res = robust_fit(da, z, torch.isfinite(da), threshold, torch.Generator().manual_seed(0))
    return float(res[0, 0]), float(res[0, 1])


# ------------------------------------------------------------------ sections

def _summary(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    absrel = [r['absrel'] for r in records if np.isfinite(r['absrel'])]
    ratio = [r['ratio'] for r in records if np.isfinite(r['ratio'])]
    return {'absrel': float(np.mean(absrel)) if absrel else float('nan'),
            'absrel_p95': float(np.percentile(absrel, 95)) if absrel else float('nan'),
            'scale_cv': float(np.std(ratio) / np.mean(ratio)) if len(ratio) > 1 else float('nan'),
            'coverage': float(np.mean([r['coverage'] for r in records])),
            'frames_metric': int(sum(r['metric'] for r in records)), 'frames': len(records)}


def accuracy(model: LoadedModel, seq: Sequence[Any], anchors: List[Anchors], fps: float,
             log: Callable[[str], None], sparse_count: int = 30) -> Dict[str, Any]:
    """Measure AbsRel and scale drift of the four ways of getting metres (and sparser)."""
    thr = Config().anchors.inlier_threshold
    s0, b0 = first_frame_fit(model, seq, anchors[0], thr)
    none = [None] * len(seq)
    sparse = [Anchors(a.u[:sparse_count], a.v[:sparse_count], a.z[:sparse_count],
                      min(a.received, sparse_count), a.stamp) for a in anchors]
    per_frame = {'depth.mode': 'fitted', 'anchors.source': 'points', 'depth.temporal': False}
    temporal = dict(per_frame, **{'depth.temporal': True})
    runs = {
        'no fit (depth.scale 1, shift 0)': ({'depth.mode': 'affine_inverse'}, none),
        'static first-frame fit': ({'depth.mode': 'affine_inverse', 'depth.scale': max(s0, 0.0),
                                    'depth.shift': b0}, none),
        'per-frame fit': (per_frame, anchors),
        'fitted + temporal': (temporal, anchors),
        f'per-frame fit, {sparse_count} anchors': (per_frame, sparse),
        f'fitted + temporal, {sparse_count} anchors': (temporal, sparse),
    }
    out: Dict[str, Any] = {'modes': {}, 'series': {}}
    for name, (settings, frame_anchors) in runs.items():
        log(f'  accuracy: {name} ...')
        recs = run_sequence(model, seq, frame_anchors, settings, fps)
        out['modes'][name] = _summary(recs)
        out['series'][name] = {'absrel': [r['absrel'] for r in recs],
                               'ratio': [r['ratio'] for r in recs],
                               'scale': [r.get('scale', float('nan')) for r in recs]}
        if name == 'fitted + temporal':
            stages: Dict[str, List[float]] = {}
            for r in recs[2:]:  # the first frames pay one-time costs
                for k, v in r['timings'].items():
                    stages.setdefault(k, []).append(v)
            out['stages_ms'] = {k: {'p50': float(np.percentile(v, 50)),
                                    'p95': float(np.percentile(v, 95))}
                                for k, v in stages.items()}
    return out


def outage(model: LoadedModel, seq: Sequence[Any], anchors: List[Anchors], fps: float,
           cut_start: int, cut_s: float, hold: float) -> Dict[str, Any]:
    """Anchors cut for cut_s seconds: hold, then no metres, then recovery."""
    cut_end = cut_start + int(round(cut_s * fps))  # first frame with anchors again
    anc = [None if cut_start <= i < cut_end else a for i, a in enumerate(anchors)]
    recs = run_sequence(model, seq, anc, {'depth.mode': 'fitted', 'anchors.source': 'points',
                                          'anchors.hold': hold}, fps)
    normal = [r['absrel'] for i, r in enumerate(recs) if i < cut_start and r['metric']]
    base = float(np.median(normal)) if normal else float('nan')
    held = [i for i in range(cut_start, cut_end) if recs[i]['metric']]
    lost = [i for i in range(cut_start, cut_end) if not recs[i]['metric']]
    recovered = next((i for i in range(cut_end, len(recs)) if recs[i]['metric']
                      and recs[i]['absrel'] <= max(TARGETS['absrel'], 1.5 * base)), None)
    cov_normal = float(np.median([r['coverage'] for r in recs[:cut_start]]))
    published = [r for r in recs if r['metric']]
    warnings = [w for r in recs for w in r['warnings'] if 'no metres' in w]
    return {
        'fps': fps, 'cut_start_frame': cut_start, 'cut_end_frame': cut_end, 'hold_s': hold,
        'frames_held': len(held), 'held_s': len(held) / fps,
        'frames_without_metres': len(lost),
        'first_without_metres_s': (lost[0] - cut_start) / fps if lost else float('nan'),
        'metres_after_hold': any(i - cut_start >= hold * fps + 1e-9 for i in held),
        'recovery_frames': (recovered - cut_end) if recovered is not None else None,
        'absrel_normal': base,
        'absrel_held_max': max((recs[i]['absrel'] for i in held), default=float('nan')),
        'nan_burst': max(cov_normal - r['coverage'] for r in published),
        'warnings': len(warnings), 'warning_text': warnings[:2],
        'series': {'absrel': [r['absrel'] for r in recs], 'metric': [r['metric'] for r in recs],
                   'ratio': [r['ratio'] for r in recs]},
    }


# Every acceptance test off: what the fit published before it judged its anchors.
_NO_TESTS = {'anchors.min_inlier_fraction': 0.0, 'anchors.min_gain': 0.0,
             'anchors.min_spread': 0.0}


def _at(pick: np.ndarray, z: np.ndarray, width: int, stamp: float) -> Anchors:
    """Anchors at flat pixel indices pick of a width-wide image."""
    return Anchors((pick % width).astype(np.float32), (pick // width).astype(np.float32),
                   np.asarray(z, np.float32), int(pick.size), stamp)


def _pixels(mask: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    idx = np.flatnonzero(mask.reshape(-1))
    return rng.choice(idx, min(count, idx.size), replace=False)


def anchor_cases(seq: Sequence[Any], anchors: List[Anchors], fps: float,
                 seed: int) -> Dict[str, Tuple[str, List[Anchors]]]:
    """Anchor streams the fit must accept (good), refuse (unrelated) or call degenerate.

    name -> (kind, anchors per frame). Unrelated: uniform 1 to 8 m at random pixels (2000 as
    in a dense sensor of another scene, 307, 30), the frame's true depths shuffled over the
    pixels, and depths all within 2 to 2.4 m at random pixels. Degenerate: every anchor on
    the back wall (7 m) while the scene spans 2.6 to 7 m. Lidar-like: a band of rows.
    """
    rng = np.random.default_rng([seed, 21])
    h, w = seq[0].depth.shape
    count = anchors[0].z.size
    out: Dict[str, Tuple[str, List[Anchors]]] = {
        f'{count} true (2 % noise, 10 % outliers)': ('good', list(anchors)),
        '30 true (2 % noise, 10 % outliers)': ('good', [
            Anchors(a.u[:30], a.v[:30], a.z[:30], 30, a.stamp) for a in anchors])}
    valid = [np.isfinite(s.depth) & (s.depth > 0) for s in seq]
    for n in (2000, count, 30):
        out[f'{n} uniform 1-8 m, random pixels'] = ('unrelated', [
            _at(p, rng.uniform(1.0, 8.0, p.size), w, i / fps)
            for i, p in enumerate(_pixels(v, n, rng) for v in valid)])
    shuffled, flat, wall, band = [], [], [], []
    rows = np.zeros((h, w), bool)
    rows[int(0.45 * h):int(0.55 * h)] = True
    for i, (s, v) in enumerate(zip(seq, valid)):
        p = _pixels(v, count, rng)
        shuffled.append(_at(p, rng.permutation(s.depth.reshape(-1)[p]), w, i / fps))
        p = _pixels(v, count, rng)
        flat.append(_at(p, rng.uniform(2.0, 2.4, p.size), w, i / fps))
        for mask, dst in ((v & (s.depth > 6.9), wall), (v & rows, band)):
            p = _pixels(mask, count, rng)
            z = s.depth.reshape(-1)[p] * (1.0 + 0.02 * rng.standard_normal(p.size))
            dst.append(_at(p, z, w, i / fps))
    out[f'{count} true depths shuffled over the pixels'] = ('unrelated', shuffled)
    out[f'{count} within 2-2.4 m, random pixels'] = ('unrelated', flat)
    out[f'{count} true, all on the back wall (7 m)'] = ('degenerate', wall)
    out[f'{count} true, a band of rows (10 % of the height)'] = ('good', band)
    return out


def _test_named(state: str) -> str:
    """Return the parameter a refusal names ('... anchors.min_gain 0.25' -> 'min_gain')."""
    found = re.search(r'anchors\.(\w+)', state)
    return found.group(1) if found else state.split(': ', 1)[-1]


def _range(v: List[float]) -> List[float]:
    v = [x for x in v if np.isfinite(x)]
    return [float(np.min(v)), float(np.median(v)), float(np.max(v))] if v else []


def acceptance(model: LoadedModel, seq: Sequence[Any], anchors: List[Anchors], fps: float,
               seed: int, log: Callable[[str], None]) -> Dict[str, Any]:
    """Measure what the fit accepts, refuses and calls degenerate, per frame (no temporal).

    Each case runs with the default tests and with every test off (what was published
    before them); the statistics the tests look at are reported per case.
    """
    per_frame = {'depth.mode': 'fitted', 'anchors.source': 'points', 'depth.temporal': False}
    out: Dict[str, Any] = {'cases': {}}
    for name, (kind, frame_anchors) in anchor_cases(seq, anchors, fps, seed).items():
        log(f'  acceptance: {name} ...')
        recs = run_sequence(model, seq, frame_anchors, per_frame, fps)
        off = run_sequence(model, seq, frame_anchors, dict(per_frame, **_NO_TESTS), fps)
        n = len(recs)
        states = [r['state'] for r in recs]
        published = [r['absrel'] for r in recs if r['metric']]
        before = [r['absrel'] for r in off if r['metric']]
        out['cases'][name] = {
            'kind': kind, 'frames': n,
            'accepted': sum(st == 'fitted' for st in states) / n,
            'refused': sum(st.startswith('refused') for st in states) / n,
            'degenerate': sum(st == 'degenerate' for st in states) / n,
            'reasons': sorted({_test_named(st) for st in states if st.startswith('refused')}),
            'inlier_fraction': _range([r['inliers'] / max(r['used'], 1) for r in recs]),
            'gain': _range([r['gain'] for r in recs]),
            'spread': _range([r['spread_ratio'] for r in recs]),
            'absrel_published': float(np.mean(published)) if published else float('nan'),
            'absrel_without_tests': float(np.mean(before)) if before else float('nan'),
            'frames_published_without_tests': len(before)}
    out['spread_sweep'] = spread_sweep(model, seq[:12], fps, seed)
    return out


def spread_sweep(model: LoadedModel, seq: Sequence[Any], fps: float,
                 seed: int) -> List[Dict[str, float]]:
    """Anchors from one band of true depth, tests off: the band's spread vs the frame's error."""
    rng = np.random.default_rng([seed, 22])
    w = seq[0].depth.shape[1]
    settings = dict({'depth.mode': 'fitted', 'anchors.source': 'points',
                     'depth.temporal': False}, **_NO_TESTS)
    out = []
    for lo, hi in ((6.9, 7.1), (2.6, 2.7), (2.6, 2.8), (2.6, 3.0), (3.0, 3.5), (5.0, 7.1),
                   (2.6, 3.3), (3.5, 5.0), (2.6, 3.8), (4.0, 7.1), (2.6, 4.5)):
        frame_anchors = []
        for i, s in enumerate(seq):
            p = _pixels(np.isfinite(s.depth) & (s.depth >= lo) & (s.depth < hi), 307, rng)
            z = s.depth.reshape(-1)[p] * (1.0 + 0.02 * rng.standard_normal(p.size))
            frame_anchors.append(_at(p, z, w, i / fps))
        recs = run_sequence(model, seq, frame_anchors, settings, fps)
        published = [r['absrel'] for r in recs if r['metric']]  # a fit of scale <= 0 is not
        out.append({'band_m': [lo, hi],
                    'spread': float(np.median([r['spread_ratio'] for r in recs])),
                    'absrel': float(np.median(published)) if published else float('nan'),
                    'published': len(published) / len(recs)})
    return sorted(out, key=lambda r: r['spread'])


def degenerate_after_good(model: LoadedModel, seq: Sequence[Any], anchors: List[Anchors],
                          fps: float, cut: int, seed: int, hold: float) -> Dict[str, Any]:
    """Run true anchors, then from frame cut on only anchors on the back wall (defaults)."""
    wall = anchor_cases(seq, anchors, fps, seed)[f'{anchors[0].z.size} true, all on the back '
                                                 'wall (7 m)'][1]
    frame_anchors = list(anchors[:cut]) + wall[cut:]
    settings = {'depth.mode': 'fitted', 'anchors.source': 'points', 'anchors.hold': hold}
    recs = run_sequence(model, seq, frame_anchors, settings, fps)
    off = run_sequence(model, seq, frame_anchors, dict(settings, **_NO_TESTS), fps)
    after = recs[cut:]
    held = [r for r in after if r['metric']]
    return {'cut_frame': cut, 'hold_s': hold, 'frames': len(after),
            'states': sorted({r['state'] for r in after}),
            'frames_rescaled': len(held), 'frames_without_metres': len(after) - len(held),
            'absrel_rescaled_max': max((r['absrel'] for r in held), default=float('nan')),
            'absrel_without_tests': float(np.mean([r['absrel'] for r in off[cut:]])),
            'warnings': [w for r in recs for w in r['warnings']]}


def metric_checkpoint_fit(seeds: int = 40, count: int = 200, near: float = 3.0,
                          far: float = 20.0, scale_error: float = 0.1,
                          noise: float = 0.03) -> Dict[str, Any]:
    """Fit a metric checkpoint 10 % off in scale, 3 % noise, from anchors nearer than 3 m.

    The scene spans 0.5 m to far (log-uniform over a 64 x 64 map); the model says
    (1 + scale_error) x truth with multiplicative pixel noise, the anchors the truth with the
    same noise. AbsRel at the far end (the last 5 % of the range) of the scale fit and of
    the affine fit in inverse depth, per seed.
    """
    from dpt_ros.core.metric import MetricTracker
    cfg = Config().replace({'depth.mode': 'fitted', 'anchors.source': 'points',
                            'depth.temporal': False})
    truth = np.geomspace(0.5, far, 64 * 64).reshape(64, 64).astype(np.float32)
    at_far = truth >= 0.95 * far
    out: Dict[str, Any] = {'seeds': seeds, 'anchors': count, 'near_m': near, 'far_m': far,
                           'scale_error': scale_error, 'noise': noise}
    for fit in ('scale', 'affine'):
        errs = []
        for seed in range(seeds):
            rng = np.random.default_rng([seed, 4])
            model = truth * (1 + scale_error) * (1 + noise * rng.standard_normal(truth.shape))
            d = torch.from_numpy((1.0 / model).astype(np.float32))
            p = _pixels(truth < near, count, rng)
            z = truth.reshape(-1)[p] * (1 + noise * rng.standard_normal(p.size))
            tracker = MetricTracker(torch.device('cpu'), seed)
            ff = tracker.run(d[None], [_at(p, z, 64, 0.0)], [''], [0.0], cfg, True,
                             scale_only=fit == 'scale')[0][0]
            if ff.scale is None:  # refused: no metres, no error to count
                continue
            depth = 1.0 / (ff.scale * d.numpy() + ff.shift)
            errs.append(float(np.abs(depth[at_far] / truth[at_far] - 1).mean()))
        out[fit] = {'median': float(np.median(errs)) if errs else float('nan'),
                    'worst': float(np.max(errs)) if errs else float('nan'),
                    'refused': seeds - len(errs)}
    return out


def confidence(seq: Sequence[Any], anchors: List[Anchors], fps: float, net_hw: Tuple[int, int],
               frames: int) -> Dict[str, Any]:
    """Flip confidence: IoU with a corrupted region, and near 1 on a mirror-symmetric oracle.

    Both oracles have mirror-symmetric errors, so the corruption is the only thing a flip
    can reveal in the first.
    """
    region = (0.15, 0.4, 0.3, 0.6)
    settings = {'depth.mode': 'fitted', 'anchors.source': 'points', 'depth.confidence': 'flip'}
    want = {'depth', 'confidence'}
    out: Dict[str, Any] = {'region': region}
    for name, oracle in (('corrupted', OracleDepth(seed=1, symmetric=True, corrupt=region)),
                         ('symmetric', OracleDepth(seed=2, symmetric=True))):
        for s in seq[:frames]:
            oracle.register(s.rgb, s.depth)
        recs = run_sequence(oracle_model(oracle, *net_hw), seq[:frames], anchors[:frames],
                            settings, fps, want)
        h, w = seq[0].depth.shape
        truth = np.zeros((h, w), bool)
        truth[int(region[2] * h):int(region[3] * h), int(region[0] * w):int(region[1] * w)] = True
        ious, means = [], []
        for r in recs:
            low = r['confidence'] < 0.5
            ious.append(float((low & truth).sum() / max((low | truth).sum(), 1)))
            means.append(float(r['confidence'].mean()))
        if name == 'corrupted':
            out['iou'] = float(np.mean(ious))
        else:
            out['symmetric_mean'] = float(np.mean(means))
            out['symmetric_low_fraction'] = float(np.mean(
                [(r['confidence'] < 0.5).mean() for r in recs]))
        out[f'{name}_example'] = recs[-1]['confidence']
    return out


def confidence_cost(preset: str, work_dir: str, width: int, height: int,
                    iters: int) -> Dict[str, Any]:
    """Per-frame cost of depth.confidence flip on a random-weight checkpoint of a real shape."""
    from dpt_ros.tools.sample import random_checkpoint
    from dpt_ros.tools.toolkit import summary
    work = Path(work_dir).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    s = synthetic_scene(width, height)
    want = {'depth', 'points', 'confidence'}
    base = {'model.depth': str(random_checkpoint(preset, work)), 'model.device': 'cpu',
            'depth.mode': 'affine_inverse', 'depth.min': 0.0, 'depth.max': 1.0e4}
    out: Dict[str, Any] = {'preset': preset, 'size': f'{width}x{height}'}
    for conf in ('off', 'flip'):
        pipe = Pipeline(Config().replace(dict(base, **{'depth.confidence': conf})),
                        log=lambda m: None)
        totals: List[float] = []
        stages: Dict[str, List[float]] = {}
        for i in range(iters + 1):  # the first frame pays one-time costs
            t = time.perf_counter()
            r = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics, want)
            if i:
                totals.append((time.perf_counter() - t) * 1e3)
                for k, v in r.timings.items():
                    stages.setdefault(k, []).append(v)
        pipe.close()
        out[conf] = {'total': summary(totals), 'forward': summary(stages['forward']),
                     'fit': summary(stages['fit'])}
    return out


def prompt_patterns(depth: np.ndarray, rng: np.random.Generator, noise: float
                    ) -> Dict[str, Anchors]:
    """Anchor patterns of robot depth sensors on one frame's true depth (2 % noise)."""
    h, w = depth.shape
    flat = depth.reshape(-1)
    valid = np.isfinite(flat) & (flat > 0)
    rows = np.linspace(0.25 * h, h - 1, 16).round().astype(int)
    lidar = (rows[:, None] * w + np.arange(0, w, 4)[None]).reshape(-1)
    gy, gx = np.meshgrid(np.linspace(0, h - 1, 60).round().astype(int),
                         np.linspace(0, w - 1, 80).round().astype(int), indexing='ij')
    tof = (gy * w + gx).reshape(-1)
    tof = tof[rng.random(tof.size) >= 0.3]
    out = {'16-beam lidar (lower 3/4 of the view, every 4th pixel)': lidar,
           'ToF 80 x 60 grid, 30 % holes': tof,
           '300 random pixels': _pixels(valid, 300, rng),
           '30 random pixels': _pixels(valid, 30, rng)}
    for name, pick in out.items():
        pick = pick[valid[pick]]
        z = flat[pick] * (1.0 + noise * rng.standard_normal(pick.size))
        out[name] = _at(pick, z, w, 0.0)
    return out


def prompt_fill(seq: Sequence[Any], oracle: OracleDepth, frames: int, seed: int,
                noise: float = 0.02) -> Dict[str, Any]:
    """Measure the dense prompt's AbsRel to the truth (cell means), push-pull vs guided fill.

    The guide is the oracle relative model's output of the same frame fitted to the anchors
    (prompt.fitted_guide), as a relative model run beside Prompt Depth Anything would give;
    'previous' is guided by the previous frame's depth (what the node guides with: the
    camera's previous output; here its truth, an upper bound, the camera having moved).
    Measures the prompt only: no Prompt Depth Anything weights exist here.
    """
    rng = np.random.default_rng([seed, 23])
    dev = torch.device('cpu')
    rows: Dict[str, Dict[str, List[float]]] = {}
    previous = None
    for s in seq[:frames]:
        grid = pr.prompt_size(s.depth.shape)
        truth = pr.cell_means(torch.from_numpy(s.depth)[None], grid)[0]
        x = torch.from_numpy(s.rgb).permute(2, 0, 1).float()[None] / 127.5 - 1.0
        with torch.no_grad():
            relative = oracle(x)
        for name, a in prompt_patterns(s.depth, rng, noise).items():
            plain, _ = pr.dense_prompt([a], s.depth.shape, dev, grid)
            guided, _ = pr.dense_prompt([a], s.depth.shape, dev, grid,
                                        guide=pr.fitted_guide(relative, [a]))
            row = rows.setdefault(name, {'anchors': [], 'pushpull': [], 'guided': [],
                                         'previous': [], 'cells': []})
            _, count = pr.splat([a], s.depth.shape, grid, dev)
            row['anchors'].append(float(a.z.size))
            row['cells'].append(float((count > 0).float().mean()))
            fills = [('pushpull', plain[0]), ('guided', guided[0])]
            if previous is not None:
                fills.append(('previous', pr.dense_prompt(
                    [a], s.depth.shape, dev, grid, guide=previous)[0][0]))
            for key, p in fills:
                ok = torch.isfinite(truth) & torch.isfinite(p)
                row[key].append(float(((p[ok] - truth[ok]).abs() / truth[ok]).mean()))
        previous = torch.from_numpy(s.depth)[None]
    return {'frames': min(frames, len(seq)), 'noise': noise,
            'grid': list(pr.prompt_size(seq[0].depth.shape)),
            'patterns': {k: {m: float(np.mean(v)) if v else float('nan')
                             for m, v in r.items()} for k, r in rows.items()}}


def real_weights(model_dir: str, data: Path, log: Callable[[str], None]) -> Dict[str, Any]:
    """Run fitted with 300 ground-truth anchors on the TUM / ICL frames, real checkpoint."""
    if not model_dir:
        return {'skipped': 'no real checkpoint given (pass --model DIR)'}
    frames = _shared_frames(data)
    if not frames:
        return {'skipped': f'no ground-truth frames under {data}'}
    cfg = Config().replace({'model.depth': model_dir, 'depth.mode': 'fitted',
                            'anchors.source': 'depth_image', 'depth.temporal': False,
                            'depth.min': 0.0, 'depth.max': 1.0e4})
    pipe = Pipeline(cfg, log=log)
    rng = np.random.default_rng(0)
    out: Dict[str, Any] = {'model': model_dir, 'frames': {}, 'fit_states': {}}
    for name, rgb, depth in frames:
        a = make_anchors(depth, 300, 0.0, 0.0, rng)
        r = pipe.process(Frame(rgb, 'rgb8'), None, {'depth'}, anchors=a, source=name)
        # A refused fit publishes no metres: its AbsRel is NaN, and the state says why.
        out['fit_states'][name] = r.fit.state if r.fit is not None else ''
        out['frames'][name] = _frame_metrics(r.arrays.get('depth'), depth)['absrel']
    pipe.close()
    # Over the frames with metres; NaN when every fit was refused.
    vals = [v for v in out['frames'].values() if np.isfinite(v)]
    out['absrel'] = float(np.mean(vals)) if vals else float('nan')
    return out


def _shared_frames(data: Path) -> List[Tuple[str, np.ndarray, np.ndarray]]:
    import cv2
    out = []
    tum = data / 'tum'
    if (tum / 'TUM_color.png').is_file():
        rgb = cv2.imread(str(tum / 'TUM_color.png'))[:, :, ::-1]
        d = cv2.imread(str(tum / 'TUM_depth.png'), cv2.IMREAD_UNCHANGED).astype(np.float32) / 5000
        out.append(('tum', np.ascontiguousarray(rgb), np.where(d > 0, d, np.nan)))
    icl = data / 'icl_livingroom'
    for c in sorted(icl.glob('color_*.jpg')):
        dp = icl / c.name.replace('color_', 'depth_').replace('.jpg', '.png')
        if dp.is_file():
            rgb = cv2.imread(str(c))[:, :, ::-1]
            d = cv2.imread(str(dp), cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000
            out.append((f'icl_{c.stem[-1]}', np.ascontiguousarray(rgb),
                        np.where(d > 0, d, np.nan)))
    return out


# ------------------------------------------------------------------ driver

def evaluate(args: argparse.Namespace, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run every section; return the results dict."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    w, h, n, fps = args.width, args.height, args.frames, args.fps
    count = args.anchors or max(10, int(round(args.anchor_fraction * w * h)))
    t0 = time.perf_counter()
    log(f'rendering {n} frames at {w}x{h} ...')
    seq = make_sequence(n, w, h)
    rng = np.random.default_rng(args.seed)
    anchors = [make_anchors(s.depth, count, args.anchor_noise, args.outliers, rng, i / fps)
               for i, s in enumerate(seq)]
    oracle = OracleDepth(seed=args.seed)
    for s in seq:
        oracle.register(s.rgb, s.depth)
    net_hw = (h // 2, w // 2)  # a network input below camera resolution, as real models have
    model = oracle_model(oracle, *net_hw)
    res: Dict[str, Any] = {
        'model': 'ORACLE relative model (true inverse depth, per-frame affine map, smooth '
                 'low-frequency error, pixel noise); not a trained network',
        'size': f'{w}x{h}', 'network_input': f'{net_hw[1]}x{net_hw[0]}', 'frames': n, 'fps': fps,
        'anchors': {'count': count, 'noise': args.anchor_noise, 'outliers': args.outliers},
        'oracle': {'scale_sigma': oracle.scale_sigma, 'shift_sigma': oracle.shift_sigma,
                   'lowfreq_rms': oracle.lowfreq, 'pixel_noise': oracle.noise},
        'device': f'CPU, {torch.get_num_threads()} torch threads', 'targets': TARGETS}
    log('accuracy ...')
    res['accuracy'] = accuracy(model, seq, anchors, fps, log)
    log('anchor outage ...')
    cut_start = max(2, int(0.35 * n))
    res['outage'] = outage(model, seq, anchors, fps, cut_start, args.cut, args.hold)
    log('acceptance ...')
    res['acceptance'] = acceptance(model, seq, anchors, fps, args.seed, log)
    res['acceptance']['degenerate_after_good'] = degenerate_after_good(
        model, seq, anchors, fps, cut_start, args.seed, args.hold)
    res['metric_checkpoint'] = metric_checkpoint_fit()
    log('confidence ...')
    conf = confidence(seq, anchors, fps, net_hw, min(args.confidence_frames, n))
    res['confidence'] = {k: v for k, v in conf.items() if not k.endswith('_example')}
    res['_examples'] = {k: v for k, v in conf.items() if k.endswith('_example')}
    if args.cost_preset:
        log(f'confidence cost ({args.cost_preset}) ...')
        res['confidence_cost'] = confidence_cost(args.cost_preset, args.work_dir, w, h,
                                                 args.cost_iters)
    log('prompt fill ...')
    res['prompt_fill'] = prompt_fill(seq, oracle, min(args.confidence_frames, n), args.seed)
    log('real weights ...')
    res['real'] = real_weights(args.model, Path(args.data), log)
    res['seconds'] = time.perf_counter() - t0
    return res


def checks(res: Dict[str, Any]) -> Dict[str, bool]:
    """Return each target of the issue, met or not."""
    acc, cut, conf = res['accuracy'], res['outage'], res['confidence']
    ft = acc['modes']['fitted + temporal']
    out = {
        'AbsRel fitted + temporal <= 0.03': ft['absrel'] <= TARGETS['absrel'],
        'scale CV fitted + temporal <= 1 %': ft['scale_cv'] <= TARGETS['scale_cv'],
        'outage: held, then no metres after anchors.hold': (
            cut['frames_held'] > 0 and cut['frames_without_metres'] > 0
            and not cut['metres_after_hold']),
        'outage: recovery within 3 frames': (cut['recovery_frames'] is not None
                                             and cut['recovery_frames'] <= 3),
        'outage: no NaN burst, one warning': cut['nan_burst'] <= 0.01 and cut['warnings'] == 1,
        'fit p50 <= 2 ms': acc['stages_ms']['fit']['p50'] <= TARGETS['fit_p50_ms'],
        'confidence IoU >= 0.5': conf['iou'] >= TARGETS['iou'],
        'confidence near 1 on a symmetric oracle': conf['symmetric_mean'] >= 0.9,
    }
    cases = res['acceptance']['cases'].values()
    out['unrelated anchors refused on every frame'] = all(
        c['refused'] == 1.0 for c in cases if c['kind'] == 'unrelated')
    out['anchors on one wall never fitted as a whole scene'] = all(
        c['accepted'] == 0.0 for c in cases if c['kind'] == 'degenerate')
    out[f'true anchors ({res["anchors"]["count"]}) accepted on every frame'] = all(
        c['accepted'] == 1.0 for name, c in res['acceptance']['cases'].items()
        if name.startswith(f'{res["anchors"]["count"]} true (') and c['kind'] == 'good')
    mc = res['metric_checkpoint']
    out['metric checkpoint: scale fit AbsRel at 20 m <= 0.03'] = \
        mc['scale']['median'] <= TARGETS['absrel']
    if 'absrel' in res['real']:
        out['real weights AbsRel < 0.1'] = res['real']['absrel'] < TARGETS['real_absrel']
    return out


def _f(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return '-'
    return f'{v:.{digits}f}' if isinstance(v, float) else str(v)


def markdown(res: Dict[str, Any]) -> str:
    """Render the results as markdown tables for the README's metric depth section."""
    a = res['anchors']
    lines = [f"Model: {res['model']}. {res['frames']} frames at {res['size']} (network input "
             f"{res['network_input']}), {res['fps']:g} Hz; {a['count']} anchors a frame with "
             f"{a['noise'] * 100:g} % noise and {a['outliers'] * 100:g} % gross outliers; "
             f"{res['device']}.", '',
             '| metres from | AbsRel | AbsRel p95 | scale drift CV | coverage |',
             '|---|---|---|---|---|']
    for name, m in res['accuracy']['modes'].items():
        lines.append(f"| {name} | {_f(m['absrel'])} | {_f(m['absrel_p95'])} | "
                     f"{_f(m['scale_cv'] * 100, 2)} % | {_f(m['coverage'], 3)} |")
    c = res['outage']
    lines += ['', f"Anchor outage of {(c['cut_end_frame'] - c['cut_start_frame']) / c['fps']:g} s"
              f" from frame {c['cut_start_frame']} (anchors.hold {c['hold_s']:g} s): metres held "
              f"for {c['frames_held']} frames ({c['held_s']:g} s, worst AbsRel "
              f"{_f(c['absrel_held_max'])}), then none for {c['frames_without_metres']} frames; "
              f"recovered {c['recovery_frames']} frame(s) after the anchors returned; largest "
              f"coverage drop of a published frame {_f(c['nan_burst'], 3)}; "
              f"{c['warnings']} warning(s).", '',
              '| stage (fitted + temporal) | p50 ms | p95 ms |', '|---|---|---|']
    for k, v in res['accuracy']['stages_ms'].items():
        lines.append(f"| {k} | {v['p50']:.2f} | {v['p95']:.2f} |")
    lines += _acceptance_markdown(res)
    cf = res['confidence']
    lines += ['', f"Flip confidence: IoU of confidence < 0.5 with the corrupted region "
              f"{_f(cf['iou'], 3)}; mean confidence on a mirror-symmetric oracle "
              f"{_f(cf['symmetric_mean'], 3)} ({_f(cf['symmetric_low_fraction'] * 100, 2)} % of "
              'pixels below 0.5).', '']
    cost = res.get('confidence_cost')
    if cost:
        off, on = cost['off'], cost['flip']
        lines.append(f"Cost of depth.confidence flip ({cost['preset']} random-weight checkpoint, "
                     f"{cost['size']}, depth + points + confidence): total p50 "
                     f"{off['total']['p50']:.1f} ms off, {on['total']['p50']:.1f} ms flip "
                     f"(forward {off['forward']['p50']:.1f} -> {on['forward']['p50']:.1f} ms, "
                     f"fit + confidence stage {on['fit']['p50']:.2f} ms).")
        lines.append('')
    pf = res.get('prompt_fill')
    if pf:
        lines += [f"Dense prompt for Prompt Depth Anything from sparse anchors "
                  f"({pf['grid'][1]} x {pf['grid'][0]} cells, {pf['noise'] * 100:g} % anchor "
                  f"noise, {pf['frames']} frames; AbsRel of the prompt to the true depth's cell "
                  'means; guided: the oracle relative output of the same frame fitted to the '
                  'anchors, then corrected to meet them; previous frame: guided by the '
                  "previous frame's true depth, as the node guides by a camera's previous "
                  'output):', '',
                  '| anchors | per frame | cells with one | push-pull | guided | previous frame |',
                  '|---|---|---|---|---|---|']
        for name, r in pf['patterns'].items():
            lines.append(f"| {name} | {r['anchors']:.0f} | {r['cells']:.1%} | "
                         f"{_f(r['pushpull'])} | {_f(r['guided'])} | {_f(r['previous'])} |")
        lines.append('')
    real = res['real']
    if 'skipped' in real:
        lines.append(f"Real weights: skipped ({real['skipped']}).")
    else:
        frames = ', '.join(f'{k} {_f(v, 3)}' for k, v in real['frames'].items())
        lines.append(f"Real weights ({real['model']}), fitted with 300 ground-truth anchors: "
                     f"AbsRel {_f(real['absrel'], 3)} ({frames}).")
    lines += ['', '| target | met |', '|---|---|']
    lines += [f"| {k} | {'yes' if v else '**no**'} |" for k, v in checks(res).items()]
    return '\n'.join(lines)


def _acceptance_markdown(res: Dict[str, Any]) -> List[str]:
    acc = res['acceptance']
    d = Config().anchors
    lines = ['', f'What the fit accepts (each frame judged alone, depth.temporal off; defaults: '
             f'anchors.min_inlier_fraction {d.min_inlier_fraction:g}, anchors.min_gain '
             f'{d.min_gain:g}, anchors.min_spread {d.min_spread:g}; inlier fraction, gain over '
             "a constant depth's residual and spread as min / median / max over the frames):",
             '',
             '| anchors | fitted | refused | degenerate | inlier fraction | gain | spread | '
             'AbsRel published | AbsRel with the tests off |',
             '|---|---|---|---|---|---|---|---|---|']

    def rng(v: List[float]) -> str:
        return ' / '.join(f'{x:.2f}' for x in v) if v else '-'
    for name, c in acc['cases'].items():
        why = f" ({', '.join(c['reasons'])})" if c['reasons'] else ''
        lines.append(f"| {name} | {c['accepted']:.0%} | {c['refused']:.0%}{why} | "
                     f"{c['degenerate']:.0%} | {rng(c['inlier_fraction'])} | {rng(c['gain'])} | "
                     f"{rng(c['spread'])} | {_f(c['absrel_published'])} | "
                     f"{_f(c['absrel_without_tests'])} |")
    sweep = ', '.join(f"{r['band_m'][0]:g}-{r['band_m'][1]:g} m: {r['spread']:.2f} -> "
                      f"{_f(r['absrel'], 3)}" + (f" ({r['published']:.0%} of frames)"
                                                 if r['published'] < 1 else '')
                      for r in acc['spread_sweep'])
    lines += ['', f'Anchors from one band of true depth, tests off (band: spread -> median '
              f'AbsRel of the published frames): {sweep}.']
    g = acc['degenerate_after_good']
    lines += ['', f"True anchors, then from frame {g['cut_frame']} only anchors on the back wall "
              f"(defaults, anchors.hold {g['hold_s']:g} s): {', '.join(g['states'])}; the last "
              f"fit rescaled for {g['frames_rescaled']} frames (worst AbsRel "
              f"{_f(g['absrel_rescaled_max'])}), then no metres for {g['frames_without_metres']};"
              f" with the tests off AbsRel {_f(g['absrel_without_tests'])}."]
    mc = res['metric_checkpoint']
    lines += ['', f"Metric checkpoint {mc['scale_error']:.0%} off in scale, {mc['noise']:.0%} "
              f"noise, {mc['anchors']} anchors nearer than {mc['near_m']:g} m, {mc['seeds']} "
              f"seeds: AbsRel at {mc['far_m']:g} m median / worst: scale fit (anchors.fit auto) "
              f"{_f(mc['scale']['median'], 3)} / {_f(mc['scale']['worst'], 3)}, affine fit "
              f"{_f(mc['affine']['median'], 3)} / {_f(mc['affine']['worst'], 3)}."]
    return lines


def plot(res: Dict[str, Any], path: Path) -> bool:
    """Per-frame scale (median depth / truth) and AbsRel over time, plus the outage run."""
    plt = pyplot()
    if plt is None:
        return False
    series = res['accuracy']['series']
    fig, axes = plt.subplots(3, 1, figsize=(9, 10), sharex=True)
    for name, s in series.items():
        if name.startswith('no fit'):
            continue
        if not name.startswith('static'):  # its swings (tens of %) would hide the others
            axes[0].plot(s['ratio'], label=name)
        axes[1].plot(s['absrel'], label=name)
    axes[0].set_ylabel('median(depth / truth)')
    axes[0].set_title('per-frame scale of the published depth', fontsize=9)
    axes[1].set_ylabel('AbsRel')
    axes[1].set_yscale('log')
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    c = res['outage']
    axes[2].plot(c['series']['absrel'], 'k.-', label='fitted + temporal, anchors cut')
    axes[2].axvspan(c['cut_start_frame'] - 0.5, c['cut_end_frame'] - 0.5, color='orange',
                    alpha=0.2, label='no anchors')
    axes[2].set_ylabel('AbsRel')
    axes[2].set_xlabel('frame')
    axes[2].legend(fontsize=8)
    fig.suptitle('dpt_eval (oracle relative model, not a trained network)')
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of `dpt_eval`."""
    ap = argparse.ArgumentParser(prog='dpt_eval', description=__doc__.split('\n')[0])
    ap.add_argument('--out', default='eval_out', help='folder for results.json/.md/metric.png')
    ap.add_argument('--smoke', action='store_true', help='short run: 320x240, 60 frames')
    ap.add_argument('--width', type=int, default=640)
    ap.add_argument('--height', type=int, default=480)
    ap.add_argument('--frames', type=int, default=80, help='sequence length (>= 60)')
    ap.add_argument('--fps', type=float, default=10.0)
    ap.add_argument('--anchor-fraction', type=float, default=0.001,
                    help='anchors per frame as a fraction of the pixels')
    ap.add_argument('--anchors', type=int, default=0, help='anchors per frame (overrides)')
    ap.add_argument('--anchor-noise', type=float, default=0.02)
    ap.add_argument('--outliers', type=float, default=0.1)
    ap.add_argument('--cut', type=float, default=2.0, help='anchor outage in seconds')
    ap.add_argument('--hold', type=float, default=1.0, help='anchors.hold for the outage run')
    ap.add_argument('--confidence-frames', type=int, default=10)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--cost-preset', default='small-depth',
                    help="random-weight preset timed with and without depth.confidence flip "
                    "('' skips)")
    ap.add_argument('--cost-iters', type=int, default=5)
    ap.add_argument('--work-dir', default=str(cache_dir('tools', 'bench')),
                    help='where random-weight checkpoints are cached')
    ap.add_argument('--model', default='', help='a real depth checkpoint folder (TUM/ICL run)')
    ap.add_argument('--data', default=str(Path('test') / 'data'),
                    help='folder with tum/ and icl_livingroom/ ground truth (default: test/data, '
                    "the repository's own frames, from its root)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.width, args.height, args.frames, args.anchors = 320, 240, 60, args.anchors or 300
        args.cost_preset, args.cost_iters = args.cost_preset and 'tiny-depth', 2
    if args.frames < 60:
        ap.error('--frames must be at least 60')
    res = evaluate(args)
    res['checks'] = checks(res)
    write_report(Path(args.out), res, markdown, plot, 'metric.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
