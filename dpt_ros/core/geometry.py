# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Metric depth + camera intrinsics -> 3-D points in the optical frame, on the device."""

from __future__ import annotations

from dataclasses import dataclass
import math
import sys
from typing import Dict, Optional, Tuple

import numpy as np
import torch

_LITTLE = sys.byteorder == 'little'
# Distortion models we can undo exactly per pixel (camera_info distortion_model values).
_PINHOLE_MODELS = ('plumb_bob', 'rational_polynomial')
_FISHEYE_MODELS = ('equidistant',)
_OPENCV_D_LENGTHS = (4, 5, 8, 12, 14)  # what cv2.undistortPoints takes
# OpenCV's undistortPoints stops after 5 steps by default: up to pixels off at the edges of a
# wide-angle plumb_bob or rational_polynomial lens. Iterate until the ray reprojects onto its
# pixel; a pixel whose ray still misses it by more than _RAY_MISS_PX has none (NaN).
_UNDISTORT_STEPS = 100
_UNDISTORT_EPS_PX = 1e-3
_RAY_MISS_PX = 0.01


class IntrinsicsError(ValueError):
    """camera_info cannot be used for this image; the message says why."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the image as published (after binning and ROI), plus distortion.

    distortion_model '' with no d means an undistorted (rectified) image; source names the
    camera_info matrix the numbers came from ('K' or 'P').
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion_model: str = ''
    d: Tuple[float, ...] = ()
    source: str = 'K'

    def check(self, width: int, height: int) -> None:
        """Raise IntrinsicsError unless these intrinsics fit an image of this size."""
        vals = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in vals):
            raise IntrinsicsError(f'camera_info has a non-finite {self.source} ({vals}).')
        if self.fx <= 0 or self.fy <= 0:
            raise IntrinsicsError(
                f'camera_info focal length must be positive ({self.source}: fx={self.fx}, '
                f'fy={self.fy}); is the camera calibrated?')
        if (self.width, self.height) != (width, height):
            raise IntrinsicsError(
                f'camera_info is for {self.width}x{self.height} but the image is '
                f'{width}x{height}; remap camera_info to the matching camera.')
        if not all(math.isfinite(v) for v in self.d):
            raise IntrinsicsError(f'camera_info has a non-finite D ({self.d}).')
        if self.distorted and self.distortion_model in _PINHOLE_MODELS and \
                len(self.d) not in _OPENCV_D_LENGTHS:
            raise IntrinsicsError(
                f"camera_info's {self.distortion_model} D has {len(self.d)} coefficients; it "
                'takes 5 (plumb_bob: k1 k2 t1 t2 k3) or 8 (rational_polynomial: k1 k2 t1 t2 '
                'k3 k4 k5 k6).')

    @property
    def distorted(self) -> bool:
        """True when the distortion coefficients are not all zero."""
        return any(abs(v) > 0.0 for v in self.d)

    def matrix(self) -> np.ndarray:
        """3x3 K."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], np.float64)


def pixel_grid(width: int, height: int, stride: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel column and row coordinates (u, v) kept at this stride, pixel centres at integers."""
    u = np.arange(0, width, stride, dtype=np.float64)
    v = np.arange(0, height, stride, dtype=np.float64)
    return np.meshgrid(u, v)


def ray_grid(intr: Intrinsics, stride: int = 1) -> Tuple[np.ndarray, str]:
    """(h, w, 2) float32 normalised coordinates (x/z, y/z) per kept pixel, and a note.

    Undistorts exactly for plumb_bob / rational_polynomial (OpenCV) and equidistant, so raw
    images back-project correctly; pixels no ray maps to (past the fold of a strongly
    distorting polynomial) are NaN. Equidistant is a lens model (r = f * theta) even with an
    all-zero D, and rays at 90 degrees or more from the axis have no depth along z (NaN).
    Unknown models fall back to the pinhole K with a note.
    """
    u, v = pixel_grid(intr.width, intr.height, stride)
    note = ''
    if intr.distortion_model in _FISHEYE_MODELS:
        xy = _equidistant_rays((u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, intr.d)
    elif intr.distorted and intr.distortion_model in _PINHOLE_MODELS:
        xy = _opencv_rays(u, v, intr)
    else:
        if intr.distorted:
            note = (f"distortion model '{intr.distortion_model}' is not supported; points use "
                    'the pinhole K only (feed rectified images for exact geometry).')
        xy = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy], axis=-1)
    if intr.source not in ('K', 'P'):
        note = (f'camera_info has an empty P; points use {intr.source}. Calibrate the camera '
                'or set input.rectified false for a raw image.')
    return xy.astype(np.float32), note


def _opencv_rays(u: np.ndarray, v: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """(..., 2) x/z, y/z of pixels under OpenCV's pinhole distortion, NaN where no ray maps."""
    import cv2
    k, d = intr.matrix(), np.array(intr.d, np.float64)
    pix = np.stack([u, v], axis=-1).reshape(-1, 1, 2)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, _UNDISTORT_STEPS,
                _UNDISTORT_EPS_PX)
    # OpenCV 4 names the iterated form undistortPointsIter; OpenCV 5 folds it into
    # undistortPoints.
    if hasattr(cv2, 'undistortPointsIter'):
        xy = cv2.undistortPointsIter(pix, k, d, None, None, criteria)
    else:
        xy = cv2.undistortPoints(pix, k, d, None, None, None, criteria)
    xy = xy.reshape(u.shape + (2,))
    if len(d) == 14 and (d[12] or d[13]):  # a tilted sensor: OpenCV's own projection
        back, _ = cv2.projectPoints(np.concatenate([xy, np.ones_like(xy[..., :1])], -1)
                                    .reshape(-1, 3), np.zeros(3), np.zeros(3), k, d)
        back = back.reshape(xy.shape)
    else:
        with np.errstate(divide='ignore', invalid='ignore'):
            back = _distort(xy, d) * [intr.fx, intr.fy] + [intr.cx, intr.cy]
    miss = ~(np.hypot(back[..., 0] - u, back[..., 1] - v) <= _RAY_MISS_PX)
    xy[miss] = np.nan
    return xy


def _distort(xy: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Distort (..., 2) x/z, y/z as OpenCV does (k1 k2 p1 p2 [k3 [k4 k5 k6 [s1 s2 s3 s4]]])."""
    k = np.zeros(12)
    k[:min(12, len(d))] = d[:12]
    k1, k2, p1, p2, k3, k4, k5, k6, s1, s2, s3, s4 = k
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    r4 = r2 * r2
    radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) + s1 * r2 + s2 * r4
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y + s3 * r2 + s4 * r4
    return np.stack([xd, yd], axis=-1)


def _equidistant_rays(xd: np.ndarray, yd: np.ndarray, d: Tuple[float, ...]) -> np.ndarray:
    """Invert theta_d = theta (1 + k1 theta^2 + ... + k4 theta^8) per pixel (Newton).

    Returns (..., 2) x/z, y/z; NaN where no ray in front of the camera (theta >= 90 degrees)
    maps to the pixel or the inverse does not converge.
    """
    k = np.zeros(4)
    k[:min(4, len(d))] = d[:4]
    theta_d = np.hypot(xd, yd)
    theta = theta_d.copy()
    for _ in range(20):
        t2 = theta * theta
        f = theta * (1 + t2 * (k[0] + t2 * (k[1] + t2 * (k[2] + t2 * k[3])))) - theta_d
        df = 1 + t2 * (3 * k[0] + t2 * (5 * k[1] + t2 * (7 * k[2] + t2 * 9 * k[3])))
        theta = theta - f / np.where(np.abs(df) > 1e-12, df, 1e-12)
    t2 = theta * theta
    resid = theta * (1 + t2 * (k[0] + t2 * (k[1] + t2 * (k[2] + t2 * k[3])))) - theta_d
    ok = (np.abs(resid) < 1e-9) & (theta >= 0) & (theta < np.pi / 2 - 1e-6)
    with np.errstate(invalid='ignore', divide='ignore'):
        scale = np.where(theta_d > 1e-12, np.tan(theta) / theta_d, 1.0)
    scale = np.where(ok, scale, np.nan)
    return np.stack([xd * scale, yd * scale], axis=-1)


class Backprojector:
    """Depth (H, W) metres -> points, with the ray grid cached per camera and stride."""

    def __init__(self) -> None:
        self._cache: Dict[Tuple, Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]] = {}
        self._notes: Dict[Tuple, str] = {}
        self.note = ''  # what ray_grid said of the intrinsics of the latest call ('' if fine)

    def _grid(self, intr: Intrinsics, stride: int, device: torch.device
              ) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        key = (intr, stride, device)
        if key not in self._cache:
            if len(self._cache) > 8:
                self._cache.clear()
                self._notes.clear()
            xy, self._notes[key] = ray_grid(intr, stride)
            no_ray = np.isnan(xy[..., 0])
            # [x/z, y/z, 1] per pixel: the points' x, y, z are this times the depth, one pass
            xyz = np.concatenate([xy, np.ones_like(xy[..., :1])], axis=-1)
            self._cache[key] = (torch.from_numpy(xy).to(device),
                                torch.from_numpy(no_ray).to(device) if no_ray.any() else None,
                                torch.from_numpy(xyz).to(device))
        self.note = self._notes[key]  # this call's, cached or not
        return self._cache[key]

    def rays(self, intr: Intrinsics, stride: int, device: torch.device) -> torch.Tensor:
        """Return the cached (h, w, 2) ray grid on the device (NaN: no ray in front)."""
        return self._grid(intr, stride, device)[0]

    def __call__(self, depth: torch.Tensor, intr: Intrinsics, stride: int = 1,
                 organized: bool = True, rgb: Optional[torch.Tensor] = None
                 ) -> Tuple[torch.Tensor, int, int]:
        """Points as an (N, 4) float32 tensor [x, y, z, rgb-or-0], and cloud height, width.

        Organized: N = h * w rows in image order, NaN for invalid depth. Dense: valid only,
        height 1. The 4th column holds packed 0x00RRGGBB bits (reinterpreted as float32), as
        PointCloud2 'rgb' expects, or 0 when rgb is None.
        """
        z = depth[::stride, ::stride]
        _, no_ray, xyz = self._grid(intr, stride, depth.device)
        if no_ray is not None:  # fisheye pixels past 90 degrees: the whole point is invalid
            z = z.masked_fill(no_ray, float('nan'))
        h, w = z.shape
        pts = torch.empty((h, w, 4), dtype=torch.float32, device=depth.device)
        torch.mul(xyz, z[..., None], out=pts[..., :3])  # x, y, z in one pass
        if rgb is not None:
            # 0x00RRGGBB as a native uint32: its bytes written straight from the uint8 image
            # (a bit copy, no int32 maths and no float path for denormals), one channel at a
            # time (a strided copy each; cheaper than gathering the channels reversed).
            colour = pts.view(torch.uint8).view(h, w, 16)[..., 12:16]
            c = rgb[::stride, ::stride].to(torch.uint8)
            order = ((3, None), (2, 0), (1, 1), (0, 2)) if _LITTLE else \
                ((0, None), (1, 0), (2, 1), (3, 2))
            for byte, channel in order:
                if channel is None:
                    colour[..., byte] = 0
                else:
                    colour[..., byte] = c[..., channel]
        else:
            pts[..., 3] = 0.0
        pts = pts.view(-1, 4)
        if organized:
            return pts, h, w
        keep = torch.isfinite(pts[:, 2])
        dense = pts[keep]
        return dense, 1, int(dense.shape[0])


def project(points: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """(N, 3) points in the optical frame -> (N, 2) pixel coordinates through the pinhole K."""
    z = points[:, 2]
    return np.stack([points[:, 0] * intr.fx / z + intr.cx,
                     points[:, 1] * intr.fy / z + intr.cy], axis=-1)
