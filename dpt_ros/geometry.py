# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Metric depth + camera intrinsics -> 3-D points in the optical frame, on the device."""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Dict, Optional, Tuple

import numpy as np
import torch

# Distortion models we can undo exactly per pixel (camera_info distortion_model values).
_PINHOLE_MODELS = ('plumb_bob', 'rational_polynomial')
_FISHEYE_MODELS = ('equidistant',)


class IntrinsicsError(ValueError):
    """camera_info cannot be used for this image; the message says why."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the image as published (after binning and ROI), plus distortion."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion_model: str = ''
    d: Tuple[float, ...] = ()

    def check(self, width: int, height: int) -> None:
        """Raise IntrinsicsError unless these intrinsics fit an image of this size."""
        vals = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in vals):
            raise IntrinsicsError(f'camera_info has a non-finite K ({vals}).')
        if self.fx <= 0 or self.fy <= 0:
            raise IntrinsicsError(
                f'camera_info focal length must be positive (fx={self.fx}, fy={self.fy}); '
                'is the camera calibrated?')
        if (self.width, self.height) != (width, height):
            raise IntrinsicsError(
                f'camera_info is for {self.width}x{self.height} but the image is '
                f'{width}x{height}; remap camera_info to the matching camera.')

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

    Undistorts exactly (OpenCV) for plumb_bob / rational_polynomial / equidistant, so raw
    images back-project correctly; unknown models fall back to the pinhole K with a note.
    """
    u, v = pixel_grid(intr.width, intr.height, stride)
    note = ''
    if intr.distorted and intr.distortion_model in _PINHOLE_MODELS + _FISHEYE_MODELS:
        import cv2
        pts = np.stack([u, v], axis=-1).reshape(-1, 1, 2)
        if intr.distortion_model in _FISHEYE_MODELS:
            d = np.array(intr.d[:4], np.float64)
            und = cv2.fisheye.undistortPoints(pts, intr.matrix(), d)
        else:
            und = cv2.undistortPoints(pts, intr.matrix(), np.array(intr.d, np.float64))
        xy = und.reshape(u.shape + (2,))
    else:
        if intr.distorted:
            note = (f"distortion model '{intr.distortion_model}' is not supported; points use "
                    'the pinhole K only (feed rectified images for exact geometry).')
        xy = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy], axis=-1)
    return xy.astype(np.float32), note


class Backprojector:
    """Depth (H, W) metres -> points, with the ray grid cached per camera and stride."""

    def __init__(self) -> None:
        self._cache: Dict[Tuple, torch.Tensor] = {}
        self.note = ''

    def rays(self, intr: Intrinsics, stride: int, device: torch.device) -> torch.Tensor:
        """Return the cached (h, w, 2) ray grid on the device."""
        key = (intr, stride, device)
        if key not in self._cache:
            if len(self._cache) > 8:
                self._cache.clear()
            xy, self.note = ray_grid(intr, stride)
            self._cache[key] = torch.from_numpy(xy).to(device)
        return self._cache[key]

    def __call__(self, depth: torch.Tensor, intr: Intrinsics, stride: int = 1,
                 organized: bool = True, rgb: Optional[torch.Tensor] = None
                 ) -> Tuple[torch.Tensor, int, int]:
        """Points as an (N, 4) float32 tensor [x, y, z, rgb-or-0], and cloud height, width.

        Organized: N = h * w rows in image order, NaN for invalid depth. Dense: valid only,
        height 1. The 4th column holds packed 0x00RRGGBB bits (reinterpreted as float32), as
        PointCloud2 'rgb' expects, or 0 when rgb is None.
        """
        z = depth[::stride, ::stride]
        xy = self.rays(intr, stride, depth.device)
        h, w = z.shape
        pts = torch.empty((h, w, 4), dtype=torch.float32, device=depth.device)
        pts[..., 0] = xy[..., 0] * z
        pts[..., 1] = xy[..., 1] * z
        pts[..., 2] = z
        if rgb is not None:
            c = rgb[::stride, ::stride].to(torch.int32)
            packed = (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]
            pts.view(torch.int32)[..., 3] = packed  # bit copy: no float path for denormals
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
