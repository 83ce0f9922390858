# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Surface normals in the camera optical frame: from a normals head, or from any depth image.

Every function here works on batches of tensors on the model's device and returns unit
vectors as (B, H, W, 3) float32 in the optical frame of REP 103 (x right, y down, z forward),
NaN where unknown, the layout sensor_msgs/Image 32FC3 and PointCloud2 normal fields take.
No rclpy, no message types.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from dpt_ros.core.preprocess import Placement

# PointCloud2 field names of a normal, as PCL's PointNormal names them (pcl/point_types.h).
# PCL's 'curvature' comes from a plane fit's eigenvalues; depth_normals does no plane fit, so
# no curvature is computed or published.
NORMAL_FIELDS = ('normal_x', 'normal_y', 'normal_z')

# Each normals head's axes in the optical frame: optical = matrix @ head. TIPSv2-DPT's head
# (trained on NYU Depth V2 normals) answers in a frame with x left, y up and z towards the
# viewer: the normals it published for NYU frames (google-deepmind/tips,
# pytorch/TIPS_decoder_inference.ipynb, saved outputs) are (0.0, 0.93, 0.35) on floors,
# (0.26, -0.2, 0.94) on a wall facing the camera and (-0.9, -0.12, 0.43) on a wall on the
# left of the image facing right; in the optical frame those are the negations.
HEAD_TO_OPTICAL: Dict[str, Tuple[Tuple[float, float, float], ...]] = {
    'tipsv2_dpt': ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0)),
}

# Neighbours whose depths differ by more than this fraction lie on different surfaces.
DEFAULT_MAX_JUMP = 0.05


def unit(v: torch.Tensor, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    """Scale vectors to unit length along dim; NaN where a vector is zero or not finite."""
    norm = torch.linalg.vector_norm(v, dim=dim, keepdim=True)
    bad = ~torch.isfinite(norm) | (norm <= eps)
    return torch.where(bad, torch.full_like(v, float('nan')), v / norm.clamp(min=eps))


def resize_head_normals(raw: torch.Tensor, size: Tuple[int, int],
                        place: Optional[Placement] = None) -> torch.Tensor:
    """(B, 3, h, w) raw head output -> (B, 3, H, W), as post_process_normal_estimation does.

    L2-normalised at the head's resolution, then resized bilinearly (not normalised again:
    interpolated unit vectors are slightly shorter between pixels, as in the reference).
    """
    x = F.normalize(raw.to(torch.float32), p=2, dim=1)
    if place is not None and place.padded:
        if tuple(x.shape[-2:]) != tuple(place.ref):
            x = F.interpolate(x, size=tuple(place.ref), mode='bilinear', align_corners=False)
        t, left, h, w = place.box
        x = x[..., t:t + h, left:left + w]
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=False)
    return x


def to_optical(normals: torch.Tensor, model_type: str) -> torch.Tensor:
    """(..., 3) normals in a head's own axes -> the optical frame (HEAD_TO_OPTICAL)."""
    if model_type not in HEAD_TO_OPTICAL:
        raise ValueError(f"no normals axes known for model type '{model_type}'; known: "
                         f"{', '.join(HEAD_TO_OPTICAL)}")
    m = torch.tensor(HEAD_TO_OPTICAL[model_type], dtype=normals.dtype, device=normals.device)
    return normals @ m.T


def head_normals(raw: torch.Tensor, size: Tuple[int, int], model_type: str,
                 place: Optional[Placement] = None) -> torch.Tensor:
    """(B, 3, h, w) normals head output -> (B, H, W, 3) unit normals in the optical frame."""
    x = resize_head_normals(raw, size, place).permute(0, 2, 3, 1)
    return unit(to_optical(x, model_type))


def _one_sided(p: torch.Tensor, z: torch.Tensor, dim: int, max_jump: float) -> torch.Tensor:
    """Tangent along an image axis: the smaller-jump one-sided difference, NaN if neither fits.

    p: (B, H, W, 3) points, z: (B, H, W) depth; dim 1 (rows) or 2 (columns). Taking the side
    that stays on the surface keeps normals up to an occlusion edge instead of blurring a
    foreground pixel into the background behind it.
    """
    n = p.shape[dim]
    nan_p = torch.full_like(p.narrow(dim, 0, 1), float('nan'))
    nan_z = torch.full_like(z.narrow(dim, 0, 1), float('nan'))
    fwd_p = torch.cat([p.narrow(dim, 1, n - 1) - p.narrow(dim, 0, n - 1), nan_p], dim)
    fwd_z = torch.cat([z.narrow(dim, 1, n - 1) - z.narrow(dim, 0, n - 1), nan_z], dim)
    bwd_p = torch.cat([nan_p, p.narrow(dim, 1, n - 1) - p.narrow(dim, 0, n - 1)], dim)
    bwd_z = torch.cat([nan_z, z.narrow(dim, 1, n - 1) - z.narrow(dim, 0, n - 1)], dim)
    inf = torch.full_like(z, float('inf'))
    jf = torch.where(torch.isfinite(fwd_z), fwd_z.abs() / z, inf)
    jb = torch.where(torch.isfinite(bwd_z), bwd_z.abs() / z, inf)
    take_fwd = jf <= jb
    t = torch.where(take_fwd.unsqueeze(-1), fwd_p, bwd_p)
    ok = torch.minimum(jf, jb) <= max_jump
    return t.masked_fill(~ok.unsqueeze(-1), float('nan'))


def depth_normals(depth: torch.Tensor, rays: torch.Tensor,
                  max_jump: float = DEFAULT_MAX_JUMP) -> torch.Tensor:
    """(B, H, W) metres along z -> (B, H, W, 3) unit normals facing the camera, optical frame.

    rays: (H, W, 2) normalised image coordinates (x/z, y/z) per pixel, e.g.
    geometry.Backprojector.rays (undistorted; NaN where no ray). Each pixel is
    back-projected; the normal is the cross product of its row and column tangents, each the
    one-sided difference to a neighbour on the same surface (depth within max_jump of the
    pixel's, relative). Exact on planes. NaN where the depth is not finite or not positive,
    or where along an image axis no neighbour continues the surface (a one-pixel-wide
    structure, a pixel beside NaN on both sides, the far side of every discontinuity).
    Flipped to face the camera (n . p < 0).
    """
    z = depth.to(torch.float32)
    z = torch.where(torch.isfinite(z) & (z > 0), z, torch.full_like(z, float('nan')))
    xy = rays.to(device=z.device, dtype=torch.float32)
    p = torch.stack([xy[..., 0] * z, xy[..., 1] * z, z], dim=-1)
    tu = _one_sided(p, z, 2, max_jump)
    tv = _one_sided(p, z, 1, max_jump)
    n = unit(torch.linalg.cross(tu, tv, dim=-1))
    away = (n * p).sum(-1, keepdim=True) > 0
    return torch.where(away, -n, n)


def colorize_normals(normals: torch.Tensor) -> torch.Tensor:
    """(..., 3) unit normals -> (..., 3) uint8 RGB as 255 * (n + 1) / 2; NaN black."""
    rgb = ((normals + 1.0) * 127.5).round_().clamp_(0, 255)
    bad = ~torch.isfinite(normals).all(-1, keepdim=True)
    return rgb.nan_to_num_(0.0).masked_fill_(bad, 0).to(torch.uint8)


def angle_deg(a: torch.Tensor, b: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Angle in degrees between (..., 3) unit vectors and b (one vector or as many)."""
    bt = torch.as_tensor(b, dtype=a.dtype, device=a.device)
    cos = (a * bt).sum(-1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos))
