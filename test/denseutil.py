# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Helpers of the dense-output tests of several folders: a plane 'network', constant normals."""

from __future__ import annotations

from pathlib import Path
import shutil

import numpy as np
import torch

from dpt_ros.core.geometry import Intrinsics
from dpt_ros.core.models import LoadedModel
from dpt_ros.core.preprocess import PreprocessSpec
from dpt_ros.tools.sample import render_plane

# A plane seen from below and to the left, tilted away: its normal faces the camera.
PLANE_NORMAL = np.array([0.3, -0.5, -0.8]) / np.linalg.norm([0.3, -0.5, -0.8])
PLANE_DISTANCE = 2.0


def plane_depth(intr: Intrinsics) -> np.ndarray:
    """Return the rendered plane's (H, W) float32 depth in metres for this camera."""
    return render_plane(PLANE_NORMAL, PLANE_DISTANCE, intr).astype(np.float32)


def plane_model(depth: np.ndarray) -> LoadedModel:
    """Return a metric 'network' answering every frame with this depth (at the camera's size)."""
    h, w = depth.shape

    class Plane(torch.nn.Module):
        def forward(self, pixel_values):
            return torch.from_numpy(depth)[None].expand(pixel_values.shape[0], h, w).clone()

    return LoadedModel(task='depth', source='plane (test)', net=Plane(),
                       device=torch.device('cpu'), spec=PreprocessSpec(height=h, width=w),
                       dtype=torch.float32, model_type='plane', metric=True)


def constant_normals_checkpoint(src: Path, dst: Path, normal) -> Path:
    """Write a copy of a TIPSv2-DPT checkpoint whose normals head answers `normal` everywhere.

    The normal is in the head's own axes (TIPSv2's: optical = -head).
    """
    import transformers
    model = transformers.Tipsv2DptForDensePrediction.from_pretrained(str(src)).eval()
    with torch.no_grad():
        model.normals_decoder.head.weight.zero_()
        model.normals_decoder.head.bias.copy_(torch.as_tensor(normal, dtype=torch.float32))
    model.save_pretrained(dst)
    shutil.copy(Path(src) / 'preprocessor_config.json', dst)
    return dst
