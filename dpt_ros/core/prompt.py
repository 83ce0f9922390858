# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""A dense low-resolution metric prompt (Prompt Depth Anything's) from sparse anchors.

Prompt Depth Anything was trained with an iPhone LiDAR's depth: a dense 256 x 192 metric map.
A robot's anchors (a 16-beam lidar, a ToF with holes) cover a few cells of such a grid, and
the model min-max normalises its prompt and resizes it bilinearly to each decoder scale, so
holes (zeros) would read as the nearest depth. The prompt is filled instead:

- push-pull (Gortler et al., The Lumigraph, 1996): the anchors are averaged into the grid,
  then pulled into ever coarser averages and pushed back into the empty cells. No
  parameters, O(cells), exact at the anchored cells, smooth between them; with few anchors
  it flattens the scene between them.
- guided: the same fill applied to the ratio of the anchors to a dense guide of the same
  frame (fitted_guide: a relative model's output with metric.robust_fit's scale and shift,
  the fit depth.mode fitted makes), so the prompt follows the guide's shape between anchors
  and meets the anchors where they are. Needs a second dense depth (a relative model's
  forward, or the previous frame's output).

Every function works on batches on the device. No rclpy, no message types.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from dpt_ros.core.metric import Anchors, FIT_B, FIT_S, robust_fit

# An iPhone LiDAR depth map, what Prompt Depth Anything was trained with: 256 x 192.
PROMPT_LONG_SIDE = 256


def prompt_size(image_hw: Tuple[int, int], long_side: int = PROMPT_LONG_SIDE
                ) -> Tuple[int, int]:
    """Return the prompt grid (h, w) for an image: long side long_side or less, aspect kept."""
    h, w = image_hw
    long_side = min(long_side, max(h, w))
    if w >= h:
        return max(1, round(long_side * h / w)), long_side
    return long_side, max(1, round(long_side * w / h))


def splat(anchors: Sequence[Optional[Anchors]], image_hw: Tuple[int, int],
          grid_hw: Tuple[int, int], device: torch.device
          ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Average each frame's anchor depths into grid cells: (B, h, w) metres and counts.

    Anchor (u, v) (pixel centres at integers) falls in the cell covering it when the image is
    divided into h x w equal cells. Cells without anchors hold 0 with count 0; a frame
    without anchors (None) is all 0.
    """
    (ih, iw), (h, w) = image_hw, grid_hw
    b = len(anchors)
    total = torch.zeros(b * h * w, dtype=torch.float32, device=device)
    count = torch.zeros_like(total)
    for i, a in enumerate(anchors):
        if a is None or a.z.size == 0:
            continue
        u = torch.as_tensor(a.u, dtype=torch.float32, device=device)
        v = torch.as_tensor(a.v, dtype=torch.float32, device=device)
        z = torch.as_tensor(a.z, dtype=torch.float32, device=device)
        ok = torch.isfinite(z) & (z > 0) & (u > -0.5) & (u < iw - 0.5) & (v > -0.5) & \
            (v < ih - 0.5)
        col = ((u[ok] + 0.5) * (w / iw)).long().clamp_(0, w - 1)
        row = ((v[ok] + 0.5) * (h / ih)).long().clamp_(0, h - 1)
        idx = i * h * w + row * w + col
        total.index_add_(0, idx, z[ok])
        count.index_add_(0, idx, torch.ones_like(z[ok]))
    mean = torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
    return mean.view(b, h, w), count.view(b, h, w)


def push_pull(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Fill (B, h, w) values where weights are 0 from coarser averages of the others.

    weights > 0 marks known values (clamped to 1: a known cell keeps its value exactly).
    Pull: 2 x 2 weighted averages, level by level, the weight of a coarse cell the sum of
    its children's (clamped to 1). Push: from the coarsest level down, each cell becomes
    w * own + (1 - w) * the coarser level resampled bilinearly. NaN for a frame with no
    known value.
    """
    v = torch.where(weights > 0, values, torch.zeros_like(values)).float().unsqueeze(1)
    wt = weights.clamp(0.0, 1.0).float().unsqueeze(1)
    levels = [(v, wt)]
    while min(v.shape[-2:]) > 1:
        vw = F.avg_pool2d(v * wt, 2, ceil_mode=True)
        ws = F.avg_pool2d(wt, 2, ceil_mode=True)  # same divisor as vw: the ratio is exact
        v = torch.where(ws > 0, vw / ws.clamp(min=1e-12), torch.zeros_like(vw))
        wt = (ws * 4.0).clamp(max=1.0)
        levels.append((v, wt))
    filled = torch.where(levels[-1][1] > 0, levels[-1][0],
                         torch.full_like(levels[-1][0], float('nan')))
    for v, wt in reversed(levels[:-1]):
        up = F.interpolate(filled, size=tuple(v.shape[-2:]), mode='bilinear',
                           align_corners=False)
        filled = torch.where(wt > 0, wt * v + (1.0 - wt) * up, up)
    return filled.squeeze(1)


def cell_means(x: torch.Tensor, grid_hw: Tuple[int, int]) -> torch.Tensor:
    """Return the (B, h, w) cell means of a (B, H, W) map's finite values (NaN where none)."""
    ok = torch.isfinite(x)
    s = F.adaptive_avg_pool2d(torch.where(ok, x, torch.zeros_like(x)).unsqueeze(1), grid_hw)
    n = F.adaptive_avg_pool2d(ok.float().unsqueeze(1), grid_hw)
    nan = torch.full_like(s, float('nan'))
    return torch.where(n > 0, s / n.clamp(min=1e-12), nan).squeeze(1)


def fitted_guide(relative: torch.Tensor, anchors: Sequence[Optional[Anchors]],
                 threshold: float = 0.1, seed: int = 0) -> torch.Tensor:
    """(B, H, W) relative inverse depth -> metres 1 / (s d + b), fitted to each frame's anchors.

    The fit depth.mode fitted makes (metric.robust_fit, outliers beyond threshold relative
    error ignored); NaN for a frame whose anchors give no fit, and where s d + b <= 0.
    """
    b, h, w = relative.shape
    out = torch.full_like(relative, float('nan'), dtype=torch.float32)
    gen = torch.Generator(device=relative.device).manual_seed(seed)
    for i, a in enumerate(anchors):
        if a is None or a.z.size < 2:
            continue
        u = torch.as_tensor(a.u, device=relative.device).round().long().clamp(0, w - 1)
        v = torch.as_tensor(a.v, device=relative.device).round().long().clamp(0, h - 1)
        d = relative[i].float()[v, u][None]
        z = torch.as_tensor(a.z, dtype=torch.float32, device=relative.device)[None]
        fit = robust_fit(d, z, torch.isfinite(d) & torch.isfinite(z) & (z > 0), threshold,
                         gen, judge=False)
        s, c = float(fit[0, FIT_S]), float(fit[0, FIT_B])
        q = relative[i].float() * s + c
        out[i] = torch.where(q > 0, 1.0 / q, torch.full_like(q, float('nan')))
    return out


def dense_prompt(anchors: Sequence[Optional[Anchors]], image_hw: Tuple[int, int],
                 device: torch.device, grid_hw: Optional[Tuple[int, int]] = None,
                 guide: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, List[bool]]:
    """Anchors of B frames -> (B, h, w) float32 metric prompts, and which frames have one.

    grid_hw: the prompt's size (default prompt_size(image_hw)). guide: (B, H, W) metres of
    the same frames (fitted_guide, or any dense depth); where given and finite, the prompt
    is the guide times the push-pull filled ratio of anchors to guide (in log), elsewhere
    the push-pull filled anchors. A frame without anchors has no prompt (its map is NaN,
    False): a prompted model gives no metres for it. Pass the result to
    preprocess.prompt_depth (scale 1).
    """
    grid_hw = grid_hw or prompt_size(image_hw)
    mean, count = splat(anchors, image_hw, grid_hw, device)
    has = [bool(c) for c in (count.flatten(1).sum(1) > 0).tolist()]
    plain = push_pull(mean, count)
    if guide is None:
        return plain, has
    g = cell_means(guide.to(device=device, dtype=torch.float32), grid_hw)
    known = (count > 0) & torch.isfinite(g) & (g > 0)
    ratio = torch.where(known, torch.log(mean.clamp(min=1e-6) / g.clamp(min=1e-6)),
                        torch.zeros_like(g))
    guided = g * torch.exp(push_pull(ratio, known.float()))
    return torch.where(torch.isfinite(guided), guided, plain), has
