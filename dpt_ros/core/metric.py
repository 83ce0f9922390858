# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Metric depth from a relative model: robust scale/shift fits, temporal filter, confidence.

A relative model predicts d, an affine function of inverse depth that changes from frame to
frame. Per frame we fit `1 / (scale * d + shift)` to sparse metric anchors (RANSAC on
minimal pairs, then least squares on the inliers, every problem of a batch at once on the
model's device). Over time a per-source tracker carries the fit forward through the model's
own frame-to-frame change (a robust affine alignment of d to the previous frame's d), blends
it with the new anchor fit in log-scale (a scalar Kalman filter with gating of outlier fits),
holds it without anchors for anchors.hold seconds and anchors.hold_frames frames (both must
pass) and then reports no metres at all.
No rclpy, no message types: numpy and torch only.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
import math
from typing import Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from dpt_ros.core.config import Config

# Image stamps further back than this from the last are another pass (a looping bag, a
# restarted driver); further ahead, another recording: the anchors (anchors.py) and the
# per-camera history here start afresh.
TIME_JUMP_S = 1.0
# RANSAC hypotheses per problem, and how many points score each one.
_HYPOTHESES = 32
_SCORE_POINTS = 256
_REFINE_ITERS = 2
# The hold's frames count at a camera's usual pace: a gap longer than anchors.hold and this
# many times the median of the last _GAPS_KEPT gaps is a silence, after which seconds rule.
_SILENCE_GAPS = 3.0
_GAPS_KEPT = 8
# Grid points (about) on which frames are aligned to each other (temporal, flip).
_GRID_POINTS = 1024
# Log-scale filter: per-frame drift of the carried-forward fit (process noise), the error
# floor of one anchor fit (a model's low-frequency error does not average out), the gate
# in standard deviations with a floor, and gated fits in a row before the filter resets.
_PROCESS_VAR = 0.01 ** 2
_MEAS_FLOOR_VAR = 0.005 ** 2
_GATE_SIGMAS = 4.0
_GATE_MIN = 0.05
_MAX_GATED = 3
# relative_inverse with temporal: each frame pulls the aligned output back towards its own
# values with this measurement variance (gain ~ sqrt(process / this)), so it cannot wander.
_RELATIVE_PULL_VAR = 0.25
# Fraction of grid points that must follow the frame-to-frame alignment for it to be used.
_MIN_ALIGNED = 0.5
# Columns of robust_fit's result (and of MetricTracker._solve's, which adds FIT_USED).
FIT_S, FIT_B, FIT_INLIERS, FIT_ABSREL, FIT_MSR, FIT_DMED, FIT_GAIN, FIT_SPREAD = range(8)
FIT_COLUMNS = 8
FIT_USED = 8


@dataclass
class Anchors:
    """Sparse metric depths at pixels of the colour image (see dpt_ros.core.anchors)."""

    u: np.ndarray          # (N,) column, pixel centres at integers
    v: np.ndarray          # (N,) row
    z: np.ndarray          # (N,) metres along the optical axis, > 0
    received: int = 0      # valid depths in the message (before projection and subsampling)
    stamp: float = 0.0     # seconds


@dataclass
class FitReport:
    """What the fit did for one frame (diagnostics, evaluation)."""

    received: int = 0
    used: int = 0
    inliers: int = 0
    scale: float = float('nan')
    shift: float = float('nan')
    residual: float = float('nan')   # AbsRel of the fit on its inlier anchors
    age: float = float('nan')        # seconds since the last accepted anchor fit
    held: bool = False               # metres from a fit older than this frame
    metric: bool = False             # metres published for this frame
    gated: bool = False              # this frame's anchor fit was rejected as an outlier
    fit: str = ''                    # 'scale' or 'affine': what the anchors were fitted with
    gain: float = float('nan')       # share of a constant depth's residual the fit removes
    spread_ratio: float = float('nan')  # anchors' spread of d over the frame's (affine fits)
    # 'fitted', 'held' (no anchors this frame, or a gated fit), 'refused: <reason>',
    # 'degenerate', 'view changed' (a cut and no accepted fit: nothing held), 'no anchors';
    # 'relative' outside depth.mode fitted
    state: str = ''


@dataclass
class FrameFit:
    """Per-frame outcome: the map d -> output inverse depth, or None, plus reports."""

    scale: Optional[float]
    shift: Optional[float]
    report: FitReport
    warnings: List[str] = field(default_factory=list)


# ------------------------------------------------------------------ the robust fit

def robust_fit(d: torch.Tensor, z: torch.Tensor, mask: torch.Tensor, threshold: float,
               generator: Optional[torch.Generator] = None,
               scale_only: Optional[torch.Tensor] = None, judge: bool = True) -> torch.Tensor:
    """Fit s, b with s * d + b = 1 / z for P problems at once, robust to outliers.

    d, z, mask: (P, N); z in metres (> 0 where mask). The residual of a point is the relative
    inverse-depth error (s * d + b) * z - 1, about the relative depth error. RANSAC on
    minimal pairs (single points where scale_only, a (P,) bool: b = 0) scored by truncated
    squared residuals (MSAC) on a random subset, then least squares on the points within
    threshold, twice. Every problem uses the same draws (scaled to its own count of points),
    so with a generator seeded alike a problem gets the same fit in any batch.

    Returns (P, FIT_COLUMNS) float32 on the device, columns s, b, inliers, AbsRel on the
    inliers, mean squared residual on the inliers, median d (FIT_S ... FIT_DMED), the share of
    the best constant depth's mean squared residual on the inliers that the fit removes
    (FIT_GAIN, 1 - msr / msr_constant) and the 10th to 90th percentile spread of d over the
    inliers (FIT_SPREAD); NaN in those two without judge (they judge anchor fits only).
    Problems with fewer than 2 points get NaN s and b.
    """
    p, n = d.shape
    dev = d.device
    so = scale_only if scale_only is not None else torch.zeros(p, dtype=torch.bool, device=dev)
    d = d.float()
    z = torch.where(mask, z.float(), torch.ones_like(d))
    d = torch.where(mask, d, torch.zeros_like(d))
    q = 1.0 / z
    nv = mask.sum(1)
    # Valid points first (stable), so uniform indices below nv pick valid points only.
    order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)
    span = nv.clamp(min=1).to(torch.float32)

    def pick(k: int) -> torch.Tensor:
        # One row of draws for every problem: a problem's picks depend on its own points alone,
        # not on its place in the batch or on the other problems' sizes.
        r = torch.rand((1, k), generator=generator, device=dev)
        idx = (r * span[:, None]).long().clamp_(max=n - 1)
        return torch.gather(order, 1, idx)

    pair = pick(2 * _HYPOTHESES).view(p, _HYPOTHESES, 2)
    dp = torch.gather(d, 1, pair.view(p, -1)).view(p, _HYPOTHESES, 2)
    qp = torch.gather(q, 1, pair.view(p, -1)).view(p, _HYPOTHESES, 2)
    dd = dp[..., 0] - dp[..., 1]
    s_h = (qp[..., 0] - qp[..., 1]) / dd
    b_h = qp[..., 0] - s_h * dp[..., 0]
    # Scale only: one point fixes the hypothesis (the pair's second point is not used).
    s_h = torch.where(so[:, None], qp[..., 0] / dp[..., 0], s_h)
    b_h = torch.where(so[:, None], torch.zeros_like(b_h), b_h)
    score = pick(_SCORE_POINTS)
    ds = torch.gather(d, 1, score)[:, None, :]
    zs = torch.gather(z, 1, score)[:, None, :]
    res = (s_h[..., None] * ds + b_h[..., None]) * zs - 1.0
    cost = res.square().clamp_(max=threshold * threshold).sum(-1)
    bad = ~torch.isfinite(cost) | ~(s_h > 0) | ((dd.abs() < 1e-12) & ~so[:, None])
    cost = cost.masked_fill(bad, float('inf'))
    best = cost.argmin(1, keepdim=True)
    s = torch.gather(s_h, 1, best).squeeze(1)
    b = torch.gather(b_h, 1, best).squeeze(1)
    # No valid hypothesis (e.g. every anchor at one depth): start from the scale alone.
    none = ~torch.isfinite(torch.gather(cost, 1, best).squeeze(1))
    s0 = (q * d).sum(1) / (d * d).sum(1).clamp(min=1e-30)
    s = torch.where(none, s0, s)
    b = torch.where(none, torch.zeros_like(b), b)
    dz, zz = d * z, z * z
    for _ in range(_REFINE_ITERS):
        res = (s[:, None] * d + b[:, None]) * z - 1.0
        w = (mask & (res.abs() < threshold)).to(torch.float32)
        sdd = (w * dz * dz).sum(1)
        sd = (w * dz * z).sum(1)
        szz = (w * zz).sum(1)
        sdz = (w * dz).sum(1)
        sz = (w * z).sum(1)
        det = sdd * szz - sd * sd
        # A narrow spread of d leaves the shift undetermined (in float32): scale only.
        ok = (det > 1e-5 * sdd * szz) & ~so
        s_ls = (sdz * szz - sd * sz) / det
        b_ls = (sdd * sz - sd * sdz) / det
        s_new = torch.where(ok, s_ls, sdz / sdd.clamp(min=1e-30))
        b_new = torch.where(ok, b_ls, torch.zeros_like(b))
        keep = (w.sum(1) < 2) | ~torch.isfinite(s_new) | ~torch.isfinite(b_new)
        s = torch.where(keep, s, s_new)
        b = torch.where(keep, b, b_new)
    res = (s[:, None] * d + b[:, None]) * z - 1.0
    inl = mask & (res.abs() < threshold)
    cnt = inl.sum(1).to(torch.float32)
    absrel = torch.where(inl, (res / (1.0 + res)).abs(), torch.zeros_like(res)).sum(1) / \
        cnt.clamp(min=1)
    msr = torch.where(inl, res * res, torch.zeros_like(res)).sum(1) / cnt.clamp(min=1)
    dmed = torch.where(mask, d, torch.full_like(d, float('nan'))).nanmedian(1).values
    few = nv < 2
    s = s.masked_fill(few, float('nan'))
    b = b.masked_fill(few, float('nan'))
    if judge:
        # The best constant inverse depth c on the same inliers: min sum (c * z - 1)^2.
        w = inl.to(torch.float32)
        c = (w * z).sum(1) / (w * zz).sum(1).clamp(min=1e-30)
        msr_c = (w * (c[:, None] * z - 1.0).square()).sum(1) / cnt.clamp(min=1)
        gain = torch.where(msr_c > 1e-12, 1.0 - msr / msr_c.clamp(min=1e-12),
                           torch.zeros_like(msr))
        spr = spread(d, inl)
    else:
        gain = spr = torch.full_like(s, float('nan'))
    return torch.stack([s, b, cnt, absrel, msr, dmed, gain, spr], 1)


def spread(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Return (P,) the 10th to 90th percentile spread of each row's masked values (NaN < 2)."""
    inf = torch.full_like(values, float('inf'), dtype=torch.float32)
    v, _ = torch.where(mask, values.float(), inf).sort(1)
    n = mask.sum(1, keepdim=True)
    # Nearest-rank percentiles: index round(q * (n - 1)) of the sorted valid values.
    idx = torch.cat([(n - 1) * 0.1, (n - 1) * 0.9], 1).round().long().clamp(min=0)
    lo_hi = v.gather(1, idx) if v.shape[1] else torch.zeros_like(idx, dtype=torch.float32)
    out = lo_hi[:, 1] - lo_hi[:, 0]
    return out.masked_fill(n.squeeze(1) < 2, float('nan'))


def judge_fit(stats: Sequence[float], cfg: Config, scale_only: bool,
              frame_spread: float) -> str:
    """Return '' for an anchor fit that explains its anchors, 'degenerate' or 'refused: why'.

    stats: a row of MetricTracker._solve (robust_fit's columns and FIT_USED). A fit must
    explain anchors.min_count and anchors.min_inlier_fraction of its anchors. An affine fit
    whose inliers span too narrow a band of the model output d (anchors.min_spread of the
    frame's) cannot tell a shift from a scale: degenerate. On its inliers an affine fit must
    also remove anchors.min_gain of the residual one constant depth leaves: with two
    parameters it can flatten any d onto depths that hardly vary (unrelated to the scene, or
    a view whose anchors give no evidence of its shape), and a constant then does as well. A
    scale fit cannot bend d, so its inlier fraction is its test.
    """
    a = cfg.anchors
    s, n_in, used = stats[FIT_S], stats[FIT_INLIERS], max(stats[FIT_USED], 1.0)
    if not (math.isfinite(s) and math.isfinite(stats[FIT_B])):
        return 'refused: no fit'
    if n_in < a.min_count:
        return f'refused: {int(n_in)} inliers, fewer than anchors.min_count {a.min_count}'
    if n_in < a.min_inlier_fraction * used:
        return (f'refused: the fit explains {n_in / used:.0%} of the anchors, less than '
                f'anchors.min_inlier_fraction {a.min_inlier_fraction:g}')
    if not scale_only:
        # One band of d: the slope (even its sign) is noise, the level at the anchors is not.
        if frame_spread > 0 and stats[FIT_SPREAD] < a.min_spread * frame_spread:
            return 'degenerate'
        gain = stats[FIT_GAIN]
        if a.min_gain > 0 and not gain >= a.min_gain:
            return (f'refused: the fit removes {max(gain, 0.0):.0%} of the residual of a '
                    f'constant depth, less than anchors.min_gain {a.min_gain:g}')
    if not s > 0:
        return 'refused: no fit with a positive scale'
    return ''


def _hold_text(cfg: Config) -> str:
    """Return how long a fit is held: 'anchors.hold 1 s, anchors.hold_frames 3'."""
    return f'anchors.hold {cfg.anchors.hold:g} s, anchors.hold_frames {cfg.anchors.hold_frames}'


def _silence(t: '_Track', stamp: float, hold: float) -> float:
    """Return the gap before this frame when it ends a silence of the camera, else 0.

    A silence: no frame for longer than anchors.hold and _SILENCE_GAPS of the camera's usual
    gaps (their median); any gap longer than anchors.hold while its pace is not known yet.
    """
    if t.last_stamp is None:
        return 0.0
    gap = stamp - t.last_stamp
    if gap <= hold + 1e-6:
        return 0.0
    return gap if not t.gaps or gap > _SILENCE_GAPS * float(np.median(np.asarray(t.gaps))) \
        else 0.0


def _expired(age: float, unfit: int, silence: float, cfg: Config) -> bool:
    """Whether a fit age seconds and unfit frames old is past the hold (anchors.hold*)."""
    return age > cfg.anchors.hold + 1e-6 and (unfit > cfg.anchors.hold_frames or silence > 0)


def _stop_warning(verdict: str, age: float, frames: int, cfg: Config,
                  cut: bool = False, silence: float = 0.0) -> str:
    """Return the one warning when metres stop: why, and what brings them back."""
    stop = 'publishing no metres (depth/image, points)'
    if cut:
        return (f'depth.mode fitted: the view changed (this frame does not follow the last '
                f'one), so the last fit is not held over it, and its anchors give no fit '
                f"({verdict or 'none this frame'}); {stop} until anchors fit this view.")
    if verdict == 'degenerate':
        return (f'depth.mode fitted: degenerate anchors (one narrow band of the model output, '
                f'anchors.min_spread); {stop} until they span more of the scene.')
    if verdict:
        return (f'depth.mode fitted: anchors refused; {stop} until a fit is accepted '
                f"({verdict.split(': ', 1)[1]}).")
    why = (f'no usable anchors for {age:.1f} s and {frames} frames ({_hold_text(cfg)})'
           if math.isfinite(age) else 'no usable anchors yet')
    if silence and math.isfinite(age):
        why = (f'no usable anchors for {age:.1f} s, {silence:.1f} s of it without frames of this '
               f'camera (anchors.hold {cfg.anchors.hold:g} s; anchors.hold_frames count frames '
               "at the camera's usual pace only)")
    return f'depth.mode fitted: {why}; {stop} until anchors return.'


def _hold_warning(verdict: str, cfg: Config) -> str:
    """Return the one warning when anchor fits start being refused while a fit is held."""
    hold = (f'for up to anchors.hold ({cfg.anchors.hold:g} s, at least '
            f'{cfg.anchors.hold_frames} frames)')
    if verdict == 'degenerate':
        return ('depth.mode fitted: degenerate anchors (one narrow band of the model output, '
                f'anchors.min_spread); they only rescale the last fit, {hold}.')
    return (f'depth.mode fitted: anchors refused; holding the last fit {hold} '
            f"({verdict.split(': ', 1)[1]}).")


def grid_of(d: torch.Tensor) -> torch.Tensor:
    """Flattened strided samples of (H, W) maps (..., H, W) -> (..., n), about _GRID_POINTS."""
    h, w = d.shape[-2:]
    step = max(1, int(round(math.sqrt(h * w / _GRID_POINTS))))
    return d[..., step // 2::step, step // 2::step].reshape(*d.shape[:-2], -1)


# ------------------------------------------------------------------ per-source tracking

@dataclass
class _Track:
    """What one frame source remembers between frames."""

    grid: Optional[torch.Tensor] = None   # previous frame's d on the grid
    shape: Tuple[int, int] = (0, 0)
    scale: float = float('nan')           # previous map d -> output inverse depth
    shift: float = float('nan')
    var: float = 0.0                      # log-scale variance of that map
    has_map: bool = False
    last_fit: Optional[float] = None      # stamp of the last accepted anchor fit
    unfit: int = 0                        # frames since the last accepted anchor fit
    last_stamp: Optional[float] = None
    gaps: Deque[float] = field(default_factory=lambda: deque(maxlen=_GAPS_KEPT))  # between frames
    lost: bool = True                     # no metres (before the first fit, or after hold)
    warned: bool = False                  # the 'no metres' warning of this outage was given
    gated_run: int = 0
    verdict: str = ''                     # '', 'refused' or 'degenerate': the last anchor fit's
    fitted: Optional[bool] = None         # whose map scale/shift are: a metric fit's or not
    report: FitReport = field(default_factory=FitReport)


class MetricTracker:
    """Per-source scale/shift state: fits anchors, filters over time, holds, gives up."""

    def __init__(self, device: torch.device, seed: int = 0) -> None:
        self.device = device
        # Reseeded for every batch (_solve): a frame's fits depend on its batch alone, not on
        # how many fits ran before it, so a rerun, dpt_bag and the node give the same output.
        self._seed = seed
        self._gen = torch.Generator(device=device)
        self._tracks: Dict[str, _Track] = {}

    def reset(self, source: Optional[str] = None) -> None:
        """Forget one source's history (or every source's)."""
        if source is None:
            self._tracks.clear()
        else:
            self._tracks.pop(source, None)

    def report(self, source: str = '') -> FitReport:
        """Return the last report of a source (an empty one if it has none)."""
        t = self._tracks.get(source)
        return t.report if t is not None else FitReport()

    def sources(self) -> List[str]:
        """Return the sources seen so far."""
        return list(self._tracks)

    # -------------------------------------------------------------- batch entry point

    def run(self, d: torch.Tensor, anchors: Sequence[Optional[Anchors]], sources: Sequence[str],
            stamps: Sequence[float], cfg: Config, fitted: bool,
            flipped: Optional[torch.Tensor] = None, scale_only: bool = False,
            temporal: Optional[bool] = None) -> Tuple[List[FrameFit], Optional[torch.Tensor]]:
        """Fit a batch of (B, H, W) relative inverse depth maps; frames in time order.

        fitted: anchors give metres (depth.mode fitted); else only the temporal alignment of
        relative output runs (when depth.temporal). flipped: the mirrored frames' output,
        already flipped back, for the confidence map. scale_only: the anchors fit a scale alone
        (anchors.fit, resolved for the checkpoint). temporal: whether frames are aligned over
        time (default depth.temporal; False where the output is not, as in depth.mode metric,
        whose confidence must not depend on the frames before). Returns one FrameFit per frame
        and the (B, H, W) confidence (None without flipped).
        """
        b, h, w = d.shape
        temporal = cfg.depth.temporal if temporal is None else temporal
        thr = cfg.anchors.inlier_threshold
        problems: List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]] = []
        idx_anchor: List[Optional[int]] = [None] * b
        idx_align: List[Optional[int]] = [None] * b
        idx_flip: List[Optional[int]] = [None] * b
        grids = grid_of(d)
        for src in set(sources):
            t = self._tracks.get(src)
            if t is not None and t.grid is not None and t.shape != (h, w):
                # Another frame size (the camera restarted in another mode): frames of two
                # sizes are not aligned to each other, so no fit is carried from one to the
                # other; gated against it, good anchors would lose to a map that is not theirs.
                self.reset(src)
        for i in range(b):
            a = anchors[i] if fitted else None
            if a is not None and len(a.z):
                idx_anchor[i] = len(problems)
                problems.append(self._at_anchors(d[i], a) + (scale_only,))
            if temporal:
                prev = self._previous_grid(i, sources, grids, (h, w))
                if prev is not None:
                    # Align this frame's d to the previous frame's d: z = 1 / d_prev.
                    m = torch.isfinite(grids[i]) & torch.isfinite(prev) & (prev > 0)
                    idx_align[i] = len(problems)
                    problems.append((grids[i], 1.0 / prev.clamp(min=1e-30), m, False))
            if flipped is not None:
                g, gf = grids[i], grid_of(flipped[i])
                m = torch.isfinite(g) & torch.isfinite(gf) & (g > 0)
                idx_flip[i] = len(problems)
                problems.append((gf, 1.0 / g.clamp(min=1e-30), m, False))
        stats = self._solve(problems, thr, any(j is not None for j in idx_anchor))
        spreads = self._frame_spreads(grids, idx_anchor)
        out: List[FrameFit] = []
        for i in range(b):
            src, t = sources[i], float(stamps[i])
            anc = stats[idx_anchor[i]] if idx_anchor[i] is not None else None
            ali = stats[idx_align[i]] if idx_align[i] is not None else None
            if fitted:
                received = anchors[i].received if anchors[i] is not None else 0
                ff = self._step_fitted(src, t, anc, ali, cfg, received, scale_only, spreads[i])
            else:
                ff = self._step_relative(src, t, ali, temporal)
            track = self._tracks[src]
            track.grid, track.shape = grids[i], (h, w)
            if track.last_stamp is not None and t > track.last_stamp:
                track.gaps.append(t - track.last_stamp)
            track.last_stamp = t
            out.append(ff)
        conf = None
        if flipped is not None:
            conf = self._confidence(d, flipped, [stats[j] for j in idx_flip], out,
                                    cfg.depth.confidence_tolerance)
        return out, conf

    @staticmethod
    def _frame_spreads(grids: torch.Tensor, which: List[Optional[int]]) -> List[float]:
        """Return the 10th to 90th percentile spread of d of each frame with anchors."""
        rows = [i for i, j in enumerate(which) if j is not None]
        out = [float('nan')] * len(which)
        if rows:
            g = grids[rows]
            for i, v in zip(rows, spread(g, torch.isfinite(g)).tolist()):
                out[i] = v
        return out

    def _at_anchors(self, d: torch.Tensor, a: Anchors) -> Tuple[torch.Tensor, torch.Tensor,
                                                                torch.Tensor]:
        """Return d at the anchors' nearest pixels, their metres and which are usable."""
        h, w = d.shape
        u = torch.as_tensor(np.rint(a.u), dtype=torch.long).to(self.device)
        v = torch.as_tensor(np.rint(a.v), dtype=torch.long).to(self.device)
        z = torch.as_tensor(a.z, dtype=torch.float32).to(self.device)
        inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
        da = d.reshape(-1)[v.clamp(0, h - 1) * w + u.clamp(0, w - 1)]
        return da, z, inside & torch.isfinite(da) & torch.isfinite(z) & (z > 0)

    def _previous_grid(self, i: int, sources: Sequence[str], grids: torch.Tensor,
                       shape: Tuple[int, int]) -> Optional[torch.Tensor]:
        for j in range(i - 1, -1, -1):  # an earlier frame of this source in the batch
            if sources[j] == sources[i]:
                return grids[j]
        t = self._tracks.get(sources[i])
        if t is None or t.grid is None or t.shape != shape:
            return None
        return t.grid

    def _solve(self, problems: List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]],
               thr: float, anchored: bool) -> Optional[List[List[float]]]:
        """Run every problem in one padded batch; one device-to-host copy.

        anchored: some problems are anchor fits (which are judged).
        """
        if not problems:
            return None
        n = max(1, max(int(p[0].numel()) for p in problems))
        k = len(problems)
        d = torch.zeros((k, n), device=self.device)
        z = torch.ones((k, n), device=self.device)
        m = torch.zeros((k, n), dtype=torch.bool, device=self.device)
        for j, (dj, zj, mj, _) in enumerate(problems):
            c = int(dj.numel())
            d[j, :c], z[j, :c], m[j, :c] = dj, zj, mj
        so = torch.tensor([p[3] for p in problems], dtype=torch.bool, device=self.device)
        self._gen.manual_seed(self._seed)
        res = robust_fit(d, z, m, thr, self._gen, so, judge=anchored)
        res = torch.cat([res, m.sum(1, keepdim=True).to(res.dtype)], 1)
        return res.tolist()

    # -------------------------------------------------------------- filter steps

    def _track(self, src: str, fitted: bool, stamp: float) -> _Track:
        t = self._tracks.get(src)
        if t is None or t.fitted not in (None, fitted) or (
                t.last_stamp is not None and stamp < t.last_stamp - TIME_JUMP_S):
            # New, or depth.mode changed live: relative_inverse's map aligns d to itself, it
            # is no metric fit, and a metric fit is no relative alignment. Or time went
            # backwards (a looping bag, a restarted driver): the history is not this frame's
            # past, in either mode.
            self._tracks[src] = t = _Track(fitted=fitted)
        t.fitted = fitted
        return t

    @staticmethod
    def _predict(t: _Track, ali: Optional[List[float]]) -> Optional[Tuple[float, float]]:
        """Carry the previous map through the model's change: d_prev = s_a * d + b_a."""
        if ali is None or not t.has_map or not math.isfinite(ali[FIT_S]):
            return None
        s_a, b_a, inliers, used = ali[FIT_S], ali[FIT_B], ali[FIT_INLIERS], ali[FIT_USED]
        # Most of the frame must follow one affine map of the previous frame; else it is not
        # the same view any more (a cut, a jump, frames of another camera): no prediction.
        if s_a <= 0 or inliers < _MIN_ALIGNED * used:
            return None
        return t.scale * s_a, t.scale * b_a + t.shift

    def _step_fitted(self, src: str, stamp: float, anc: Optional[List[float]],
                     ali: Optional[List[float]], cfg: Config, received: int, scale_only: bool,
                     frame_spread: float) -> FrameFit:
        t = self._track(src, True, stamp)
        warnings: List[str] = []
        rep = FitReport(received=received, fit='scale' if scale_only else 'affine')
        meas = None
        verdict = ''
        if anc is not None:
            s_m, b_m, n_in, absrel, msr, dmed = anc[:FIT_GAIN]
            rep.used, rep.inliers, rep.residual = int(anc[FIT_USED]), int(n_in), absrel
            rep.gain = anc[FIT_GAIN]
            if not scale_only and frame_spread > 0:
                rep.spread_ratio = anc[FIT_SPREAD] / frame_spread
            verdict = judge_fit(anc, cfg, scale_only, frame_spread)
            r = msr / max(n_in, 1.0) + _MEAS_FLOOR_VAR
            if not verdict:
                meas = (s_m, b_m, r, dmed)
        pred = None
        cut = False  # the alignment says this is another view: the last map is not its map
        if t.has_map and not t.lost:
            # Carried through the model's change when temporal, else the last fit as it was.
            carried = self._predict(t, ali) if cfg.depth.temporal else None
            cut = cfg.depth.temporal and ali is not None and carried is None
            # After a cut the last map is another view's: nothing to hold (the model's scale
            # and shift changed with the view), only an accepted anchor fit gives metres.
            pred = carried if cut else carried or (t.scale, t.shift)
        # The hold ends when both its seconds and its frames have passed: a node serving this
        # camera a frame a second must not drop metres because two frames missed anchors. The
        # frames count at the camera's usual pace only: after a silence (no frame for longer
        # than the hold and _SILENCE_GAPS usual gaps: a camera back, a subscriber back after
        # none) the fit is as old as its seconds say.
        silence = _silence(t, stamp, cfg.anchors.hold)
        since = stamp - t.last_fit if t.last_fit is not None else float('inf')
        # A map the hold would not keep over this frame (time jumped ahead: another bag played,
        # a camera back after a silence) is no judge of an accepted anchor fit either: gated
        # against it, good anchors would lose to a map of another time. One it would keep is,
        # however slowly the camera is served.
        alone = cut or _expired(since, t.unfit + 1, silence, cfg)
        p_var = t.var + _PROCESS_VAR
        if meas is not None and pred is not None and cfg.depth.temporal and not alone:
            s_m, b_m, r, dmed = meas
            s_p, b_p = pred
            # Innovation: log ratio of the two fits' inverse depth at the frame's median d.
            ratio = (s_m * dmed + b_m) / (s_p * dmed + b_p) if s_p * dmed + b_p > 0 else -1
            nu = math.log(ratio) if ratio > 0 else float('inf')
            gate = max(_GATE_SIGMAS * math.sqrt(p_var + r), _GATE_MIN)
            if abs(nu) > gate and t.gated_run < _MAX_GATED:
                t.gated_run += 1
                rep.gated = True
                meas = None
            else:
                if abs(nu) > gate:
                    p_var = float('inf')  # gated too often: the prediction is what is wrong
                t.gated_run = 0
                k = 1.0 if math.isinf(p_var) else p_var / (p_var + r)
                s_new, b_new = s_p + k * (s_m - s_p), b_p + k * (b_m - b_p)
                var = r if math.isinf(p_var) else (1 - k) * p_var
        if meas is not None and (pred is None or not cfg.depth.temporal or alone):
            # After a cut an accepted anchor fit stands on its own: gating it against the
            # previous view's map would publish that map over good anchors.
            s_new, b_new, var = meas[0], meas[1], meas[2]
            t.gated_run = 0
        if meas is not None:
            t.last_fit, t.unfit = stamp, 0
        else:
            t.unfit += 1
        if meas is None and pred is not None:
            s_new, b_new, var = pred[0], pred[1], p_var
            if verdict == 'degenerate':
                # One narrow band of d fixes a scale, not a shape: rescale the last good fit
                # where the anchors are (their median d); the hold clock keeps running.
                s_new, b_new, var = self._rescale(pred, anc, p_var, cfg.depth.temporal)
        age = stamp - t.last_fit if t.last_fit is not None else float('inf')
        rep.age = age if math.isfinite(age) else float('nan')
        kind = verdict.split(':')[0]
        entering = bool(verdict) and kind != t.verdict
        if anc is not None:
            t.verdict = kind
        expired = _expired(age, t.unfit, silence, cfg)
        if (meas is None and pred is None) or expired:
            t.has_map = False
            if not t.lost or not t.warned or entering:
                warnings.append(_stop_warning(verdict, age, t.unfit, cfg,
                                              cut and not expired, silence))
                t.warned = True
            t.lost = True
            rep.state = verdict or ('view changed' if cut and not expired else 'no anchors')
            t.report = rep
            return FrameFit(None, None, rep, warnings)
        if t.lost:
            t.warned = False
        if entering:
            warnings.append(_hold_warning(verdict, cfg))
        t.lost, t.has_map = False, True
        t.scale, t.shift, t.var = s_new, b_new, var
        rep.scale, rep.shift, rep.metric = s_new, b_new, True
        rep.held = meas is None
        rep.state = verdict or ('held' if rep.held else 'fitted')
        t.report = rep
        return FrameFit(s_new, b_new, rep, warnings)

    @staticmethod
    def _rescale(pred: Tuple[float, float], anc: List[float], p_var: float,
                 temporal: bool) -> Tuple[float, float, float]:
        """Return the predicted map times the factor the anchors' fit asks at their median d."""
        s_p, b_p = pred
        s_m, b_m, n_in, msr, dmed = (anc[FIT_S], anc[FIT_B], anc[FIT_INLIERS], anc[FIT_MSR],
                                     anc[FIT_DMED])
        at_pred = s_p * dmed + b_p
        ratio = (s_m * dmed + b_m) / at_pred if at_pred > 0 else -1.0
        if not ratio > 0 or not math.isfinite(ratio):
            return s_p, b_p, p_var
        nu, r = math.log(ratio), msr / max(n_in, 1.0) + _MEAS_FLOOR_VAR
        if not temporal:
            return s_p * ratio, b_p * ratio, r
        if abs(nu) > max(_GATE_SIGMAS * math.sqrt(p_var + r), _GATE_MIN):
            return s_p, b_p, p_var  # far from the held fit: keep it as it is
        k = p_var / (p_var + r)
        f = math.exp(k * nu)
        return s_p * f, b_p * f, (1 - k) * p_var

    def _step_relative(self, src: str, stamp: float, ali: Optional[List[float]],
                       temporal: bool) -> FrameFit:
        t = self._track(src, False, stamp)
        rep = FitReport(state='relative')
        if not temporal:
            t.has_map = False
            t.report = rep
            return FrameFit(None, None, rep)
        pred = self._predict(t, ali)
        if pred is None:
            s_new, b_new, var = 1.0, 0.0, 0.0
        else:
            p_var = t.var + _PROCESS_VAR
            k = p_var / (p_var + _RELATIVE_PULL_VAR)
            s_new = pred[0] + k * (1.0 - pred[0])
            b_new = pred[1] + k * (0.0 - pred[1])
            var = (1 - k) * p_var
        t.scale, t.shift, t.var, t.has_map = s_new, b_new, var, True
        rep.scale, rep.shift = s_new, b_new
        t.report = rep
        return FrameFit(s_new, b_new, rep)

    # -------------------------------------------------------------- confidence

    @staticmethod
    def _confidence(d: torch.Tensor, flipped: torch.Tensor, fits: List[List[float]],
                    frames: List[FrameFit], tolerance: float) -> torch.Tensor:
        """1 where the mirrored prediction (aligned to this one) agrees, towards 0 where not."""
        dev = d.device
        n = d.shape[0]
        ab = torch.tensor([[f[0], f[1]] if math.isfinite(f[0]) else [1.0, 0.0] for f in fits],
                          dtype=torch.float32, device=dev).view(n, 2, 1, 1)
        aligned = ab[:, 0] * flipped + ab[:, 1]
        # Compare in output inverse depth where a metric map exists, else in d.
        mb = torch.tensor([[ff.scale, ff.shift] if ff.scale is not None else [1.0, 0.0]
                           for ff in frames], dtype=torch.float32, device=dev).view(n, 2, 1, 1)
        v = mb[:, 0] * d + mb[:, 1]
        va = mb[:, 0] * aligned + mb[:, 1]
        rel = (v - va).abs() / (0.5 * (v.abs() + va.abs())).clamp(min=1e-12)
        conf = torch.exp(-(rel / tolerance).square())
        return conf.nan_to_num_(0.0)
