# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Raw model outputs -> depth (relative or metres) and labels at camera resolution, viewers."""

from __future__ import annotations

from functools import lru_cache
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from dpt_ros.core.preprocess import Placement


def _uncrop(x: torch.Tensor, place: Optional[Placement], mode: str) -> torch.Tensor:
    """(B, C, h, w) model output -> the frame's part of it, padding removed.

    As ZoeDepth's post-processing: resample to the padded grid, then cut the frame out (the
    output covers the padded input, so resizing it whole would shift and squeeze the frame).
    """
    if place is None or not place.padded:
        return x
    if tuple(x.shape[-2:]) != tuple(place.ref):
        x = F.interpolate(x, size=tuple(place.ref), mode=mode, align_corners=False)
    t, left, h, w = place.box
    return x[..., t:t + h, left:left + w]


def resize_depth(pred: torch.Tensor, size: Tuple[int, int],
                 place: Optional[Placement] = None, mode: str = 'bicubic') -> torch.Tensor:
    """(B, h, w) predicted depth -> (B, H, W) float32, as post_process_depth_estimation does.

    With a placement, padding the preprocessing added is cut away first. mode is the
    processor's interpolation (PreprocessSpec.output_resample): bicubic for DPT, Depth
    Anything, GLPN and ZoeDepth, bilinear for TIPSv2-DPT.
    """
    x = _uncrop(pred.to(torch.float32).unsqueeze(1), place, mode)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)
    return x.squeeze(1)


def focal_from_fov(fov_deg: torch.Tensor, width: int) -> torch.Tensor:
    """Horizontal field of view in degrees -> focal length in pixels of an image this wide."""
    return 0.5 * width / torch.tan(0.5 * torch.deg2rad(fov_deg.to(torch.float32)))


def depth_pro_metres(inverse: torch.Tensor, size: Tuple[int, int],
                     fx: Optional[Sequence[Optional[float]]] = None,
                     fov_deg: Optional[torch.Tensor] = None
                     ) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """Depth Pro's (B, h, w) canonical inverse depth -> (B, H, W) metres along z.

    Depth Pro predicts inverse depth relative to the image width; metres are
    f_px / (width * inverse) with the focal length f_px and width in pixels of one image
    (the ratio is the same at the camera's size and at the network's, which stretches the
    width by as much as the focal length). fx[i]: frame i's camera_info focal length in
    pixels at the camera size (H, W); where it is None (or fx is), the predicted horizontal
    field of view fov_deg[i] gives it, as DepthProImageProcessor.post_process_depth_estimation
    does; with neither, that frame is all NaN. Same order as the processor: scale at the
    network resolution, bilinear resize, then invert, clamped to [1e-4, 1e4]. Returns the
    metres, the focal length used per frame (NaN where none) and its source per frame:
    'camera_info', 'predicted_fov' or 'none'.
    """
    b, width = inverse.shape[0], int(size[1])
    dev = inverse.device
    given = list(fx) if fx is not None else [None] * b
    predicted = focal_from_fov(fov_deg.reshape(-1), width).to(dev) if fov_deg is not None \
        else torch.full((b,), float('nan'), device=dev)
    focal = torch.tensor([float('nan') if f is None else float(f) for f in given],
                         dtype=torch.float32, device=dev)
    use_given = torch.isfinite(focal) & (focal > 0)
    focal = torch.where(use_given, focal, predicted)
    sources = ['camera_info' if g else ('predicted_fov' if fov_deg is not None else 'none')
               for g in use_given.tolist()]
    x = inverse.to(torch.float32) * (width / focal).view(b, 1, 1)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x.unsqueeze(1), size=tuple(size), mode='bilinear',
                          align_corners=False).squeeze(1)
    return torch.reciprocal(x.clamp(min=1e-4, max=1e4)), focal, sources


def effective_mode(mode: str, checkpoint_metric: bool) -> str:
    """Resolve depth.mode 'auto' from the checkpoint; other modes are explicit."""
    if mode == 'auto':
        return 'metric' if checkpoint_metric else 'relative_inverse'
    return mode


def to_metres(raw: torch.Tensor, mode: str, scale: float, shift: float,
              dmin: float, dmax: float) -> Optional[torch.Tensor]:
    """Depth in metres along the optical axis with NaN where invalid; None in relative mode."""
    if mode == 'relative_inverse':
        return None
    if mode == 'metric':
        z = raw * scale if scale != 1.0 else raw.clone()
    elif mode == 'affine_inverse':
        # metres = 1 / (scale * d + shift): the DPT repository's KITTI / NYU convention
        z = torch.reciprocal(raw * scale + shift)
    else:
        raise ValueError(f"unknown depth mode '{mode}'")
    # Valid: finite, > 0 and in [dmin, dmax]. A comparison with NaN is false and +inf fails
    # z <= dmax when dmax is finite, so two passes do what isfinite and four tests did.
    good = (z >= dmin) & (z <= dmax) if dmin > 0 else (z > 0) & (z <= dmax)
    if not math.isfinite(dmax):
        good &= torch.isfinite(z)
    return z.masked_fill_(~good, float('nan'))


def relative_inverse(depth: torch.Tensor, metric: bool) -> torch.Tensor:
    """depth/relative: inverse depth (larger is nearer), NaN where not finite or not positive.

    A relative checkpoint's output is that already; a metric one's metres are inverted (1/m),
    so depth/relative and depth/colored mean the same for every checkpoint.
    """
    if metric:
        inv = torch.reciprocal(depth)
        return inv.masked_fill_(~torch.isfinite(inv) | (depth <= 0), float('nan'))
    return torch.where(torch.isfinite(depth), depth, torch.full_like(depth, float('nan')))


@lru_cache(maxsize=None)
def colormap_lut(name: str) -> np.ndarray:
    """(256, 3) uint8 RGB lookup table for a colormap name (OpenCV's maps; 'gray' linear)."""
    ramp = np.arange(256, dtype=np.uint8)
    if name == 'gray':
        return np.repeat(ramp[:, None], 3, axis=1)
    import cv2
    code = getattr(cv2, f'COLORMAP_{name.upper()}')
    bgr = cv2.applyColorMap(ramp.reshape(256, 1), code).reshape(256, 3)
    return np.ascontiguousarray(bgr[:, ::-1])


_LUTS: Dict[Tuple[str, torch.device], torch.Tensor] = {}


def _lut(name: str, device: torch.device) -> torch.Tensor:
    key = (name, device)
    if key not in _LUTS:
        _LUTS[key] = torch.from_numpy(colormap_lut(name)).to(device)
    return _LUTS[key]


def _robust_range(v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    flat = v.reshape(-1)
    step = max(1, flat.numel() // 16384)  # a strided sample keeps the quantiles cheap
    sample = flat[::step]
    sample = sample[torch.isfinite(sample)]
    if sample.numel() == 0:
        zero = torch.zeros((), device=v.device)
        return zero, zero + 1
    q = torch.quantile(sample.float(), torch.tensor([0.02, 0.98], device=v.device))
    return q[0], torch.maximum(q[1], q[0] + 1e-6)


def colorize_depth(depth: torch.Tensor, name: str, inverse: bool) -> torch.Tensor:
    """(H, W) depth -> (H, W, 3) uint8 RGB, near bright; invalid black.

    inverse=True for inverse depth (larger is nearer); metres are inverted first, so both
    look alike. The range is the frame's 2nd..98th percentile.
    """
    v = depth.float() if inverse else torch.reciprocal(depth.float())
    lo, hi = _robust_range(v)
    idx = ((v - lo) / (hi - lo)).clamp_(0, 1).mul_(255).nan_to_num_(0).to(torch.long)
    rgb = _lut(name, depth.device)[idx]
    return rgb.masked_fill_(~torch.isfinite(v).unsqueeze(-1), 0)


def segment(logits: torch.Tensor, size: Tuple[int, int], place: Optional[Placement] = None,
            max_elems: int = 1 << 24) -> torch.Tensor:
    """(B, C, h, w) logits -> (B, H, W) class ids: bilinear resize, then argmax.

    Same result as transformers' post_process_semantic_segmentation, but the resized logits
    are made a few classes at a time (running max; ties keep the lower id, as argmax does),
    so 150 classes at 1280x720 never hold 550 MB at once. Padding is cut away as in
    resize_depth.
    """
    x = logits if logits.dtype == torch.float32 else logits.float()
    size = tuple(size)
    if tuple(x.shape[-2:]) == size and (place is None or not place.padded):
        return x.argmax(dim=1)
    b, c = x.shape[:2]
    per = max(1, max_elems // (b * size[0] * size[1]))
    best_val = best_idx = None
    for c0 in range(0, c, per):
        part = _uncrop(x[:, c0:c0 + per], place, 'bilinear')
        if tuple(part.shape[-2:]) != size:
            part = F.interpolate(part, size=size, mode='bilinear', align_corners=False)
        val, idx = part.max(dim=1)
        if best_val is None:
            best_val, best_idx = val, idx
            continue
        better = val > best_val
        best_val = torch.where(better, val, best_val)
        best_idx = torch.where(better, idx + c0, best_idx)
    return best_idx


@lru_cache(maxsize=None)
def label_palette(n: int) -> np.ndarray:
    """(max(n, 256), 3) uint8 colours: the PASCAL VOC bit-interleaving palette, extended."""
    n = max(n, 256)
    ids = np.arange(n, dtype=np.int64)
    pal = np.zeros((n, 3), dtype=np.int64)
    c = ids.copy()
    for j in range(8):
        for ch in range(3):
            pal[:, ch] |= ((c >> ch) & 1) << (7 - j)
        c >>= 3
    return pal.astype(np.uint8)


_PALETTES: Dict[Tuple[int, torch.device], torch.Tensor] = {}


def colorize_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(H, W) class ids -> (H, W, 3) uint8 RGB."""
    key = (num_classes, labels.device)
    if key not in _PALETTES:
        _PALETTES[key] = torch.from_numpy(label_palette(num_classes)).to(labels.device)
    return _PALETTES[key][labels]


def overlay(rgb: torch.Tensor, colored: torch.Tensor, alpha: float) -> torch.Tensor:
    """Blend (H, W, 3) uint8 class colours over the camera image."""
    out = torch.lerp(rgb.float(), colored.float(), float(alpha))
    return out.round_().clamp_(0, 255).to(torch.uint8)


def labels_dtype(num_classes: int) -> torch.dtype:
    """uint8 ids for up to 256 classes, else 16-bit."""
    return torch.uint8 if num_classes <= 256 else torch.int16
