# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Built-in sample input: a ray-cast synthetic scene with exact depth, and random checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from dpt_ros.core.geometry import Intrinsics, pixel_grid


@dataclass
class SampleFrame:
    """One synthetic frame: RGB, ground-truth depth (metres along z) and intrinsics."""

    rgb: np.ndarray      # (H, W, 3) uint8
    depth: np.ndarray    # (H, W) float32 metres
    intrinsics: Intrinsics


def default_intrinsics(width: int = 640, height: int = 480) -> Intrinsics:
    """Return a ~64 degree pinhole camera with the principal point at the centre."""
    f = 0.8 * width
    return Intrinsics(fx=f, fy=f, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0,
                      width=width, height=height, distortion_model='plumb_bob', d=(0.0,) * 5)


def synthetic_scene(width: int = 640, height: int = 480, t: float = 0.0) -> SampleFrame:
    """Render a room (floor, walls, two spheres); the camera slides sideways with t."""
    intr = default_intrinsics(width, height)
    u, v = pixel_grid(width, height, 1)
    dx = (u - intr.cx) / intr.fx
    dy = (v - intr.cy) / intr.fy
    ox = 0.3 * np.sin(t)  # camera x offset
    inf = np.full(dx.shape, np.inf)
    depth = inf.copy()
    albedo = np.zeros(dx.shape + (3,))
    normal_z = np.zeros(dx.shape)

    def hit(z: np.ndarray, colour: np.ndarray, shade: np.ndarray) -> None:
        nonlocal depth
        closer = (z > 0.05) & (z < depth)
        depth = np.where(closer, z, depth)
        albedo[closer] = colour[closer] if colour.ndim == 3 else colour
        normal_z[closer] = shade[closer] if np.ndim(shade) else shade

    # planes, in the optical frame (x right, y down, z forward): z = distance along the axis
    with np.errstate(divide='ignore', invalid='ignore'):
        z_floor = np.where(dy > 1e-6, 1.2 / dy, inf)          # floor at y = +1.2 m
        z_left = np.where(dx < -1e-6, (-2.0 - ox) / dx, inf)  # wall at x = -2 m
        z_right = np.where(dx > 1e-6, (2.5 - ox) / dx, inf)   # wall at x = +2.5 m
    z_back = np.full(dx.shape, 7.0)
    x_f = np.where(np.isfinite(z_floor), ox + dx * np.where(np.isfinite(z_floor), z_floor, 0), 0)
    z_f = np.where(np.isfinite(z_floor), z_floor, 0)
    checker = ((np.floor(x_f * 2) + np.floor(z_f * 2)) % 2)[..., None]
    hit(z_floor, np.where(checker > 0, [0.85, 0.8, 0.7], [0.35, 0.3, 0.25]), np.full(dx.shape,
                                                                                     0.9))
    stripes = (np.floor(dy * np.where(np.isfinite(z_left), z_left, 0) * 3) % 2)[..., None]
    hit(z_left, np.where(stripes > 0, [0.7, 0.3, 0.3], [0.6, 0.25, 0.25]), np.full(dx.shape,
                                                                                   0.6))
    hit(z_right, np.broadcast_to([0.3, 0.5, 0.75], dx.shape + (3,)).copy(),
        np.full(dx.shape, 0.7))
    grid = ((np.floor((ox + dx * 7.0) * 1.5) + np.floor((dy * 7.0) * 1.5)) % 2)[..., None]
    hit(z_back, np.where(grid > 0, [0.9, 0.9, 0.85], [0.55, 0.6, 0.5]), np.full(dx.shape, 1.0))
    # spheres: |o + s*d - c|^2 = r^2 with ray d = (dx, dy, 1) so s is the depth z
    for c, r, col in (((-0.6, 0.6, 3.2), 0.6, (0.2, 0.7, 0.3)),
                      ((1.0, 0.2, 4.5), 0.9, (0.8, 0.6, 0.1))):
        cx, cy, cz = c[0] - ox, c[1], c[2]
        a = dx * dx + dy * dy + 1.0
        bq = -2.0 * (dx * cx + dy * cy + cz)
        cq = cx * cx + cy * cy + cz * cz - r * r
        disc = bq * bq - 4 * a * cq
        with np.errstate(invalid='ignore'):
            s = np.where(disc >= 0, (-bq - np.sqrt(np.maximum(disc, 0))) / (2 * a), inf)
        nz = np.clip((cz - s) / r, 0.0, 1.0)  # facing the camera -> bright
        hit(s, np.broadcast_to(col, dx.shape + (3,)).copy(), 0.35 + 0.65 * nz)
    light = normal_z[..., None] * (1.0 / (1.0 + 0.04 * depth[..., None] ** 2)) ** 0.5
    rgb = np.clip(albedo * light * 255.0, 0, 255).astype(np.uint8)
    return SampleFrame(rgb=rgb, depth=depth.astype(np.float32), intrinsics=intr)


def render_plane(normal: Sequence[float], distance: float, intr: Intrinsics) -> np.ndarray:
    """Depth (H, W) float32 metres of the plane n . p = -distance seen through intr's rays.

    normal: the plane's unit normal in the optical frame, facing the camera (its z < 0 for a
    plane ahead); distance: metres from the camera to the plane. Rays come from
    geometry.ray_grid (undistorted when intr has distortion); NaN where a ray misses.
    """
    from dpt_ros.core.geometry import ray_grid
    xy, _ = ray_grid(intr)
    n = np.asarray(normal, np.float64) / np.linalg.norm(normal)
    dot = n[0] * xy[..., 0] + n[1] * xy[..., 1] + n[2]
    with np.errstate(divide='ignore', invalid='ignore'):
        z = np.where(dot < -1e-9, -distance / dot, np.nan)
    return z.astype(np.float32)


def synthetic_sequence(n: int, width: int = 640, height: int = 480) -> List[SampleFrame]:
    """Render n frames of the scene with the camera sliding sideways."""
    return [synthetic_scene(width, height, t=0.35 * i) for i in range(n)]


# ------------------------------------------------------------------ random checkpoints

PRESETS = ('tiny-depth', 'tiny-seg', 'tiny-depth-anything', 'small-depth', 'base-depth',
           'hybrid-depth', 'large-depth', 'tiny-seg-wide', 'tiny-depth-anything-outdoor',
           'tiny-dpt-dinov2', 'tiny-glpn', 'tiny-zoedepth', 'tiny-tipsv2', 'tiny-depth-pro',
           'tiny-prompt-depth-anything')
# Full-size shapes of published checkpoints (tools.checkpoints times them with random weights).
SHAPE_PRESETS = ('da2-small', 'da2-base', 'da2-large', 'da1-small', 'zoedepth-nk', 'depth-pro',
                 'tipsv2-b14', 'tipsv2-l14', 'tipsv2-so400m14', 'tipsv2-g14', 'pda-vits',
                 'pda-vitl')


def _vit_dpt(hidden: int, layers: int, heads: int, inter: int, neck: List[int], fusion: int,
             out_idx: List[int], image: int, **extra) -> Dict:
    return dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                intermediate_size=inter, neck_hidden_sizes=neck, fusion_hidden_size=fusion,
                backbone_out_indices=out_idx, image_size=image, patch_size=16, **extra)


def preset_config(preset: str):
    """Return (transformers config, preprocessor_config entries) of a random-weight preset."""
    from transformers import (BeitConfig, DepthAnythingConfig, Dinov2Config, DPTConfig,
                              GLPNConfig, ZoeDepthConfig)
    tiny = _vit_dpt(32, 4, 4, 37, [16, 16, 32, 32], 16, [0, 1, 2, 3], 64)
    names = ['floor', 'wall', 'ceiling', 'object', 'person']
    if preset == 'tiny-depth':
        return DPTConfig(**tiny), {'size': {'height': 64, 'width': 64}}
    if preset in ('tiny-seg', 'tiny-seg-wide'):
        n = 5 if preset == 'tiny-seg' else 300  # 300 classes exercises 16-bit labels
        labels = names if n == 5 else [f'class_{i}' for i in range(n)]
        cfg = DPTConfig(**tiny, num_labels=n, id2label=dict(enumerate(labels)),
                        label2id={v: k for k, v in enumerate(labels)})
        return cfg, {'size': {'height': 64, 'width': 64}}
    stages = ['stage1', 'stage2', 'stage3', 'stage4']
    dinov2 = {'hidden_size': 32, 'num_hidden_layers': 4, 'num_attention_heads': 4,
              'intermediate_size': 37, 'patch_size': 14, 'image_size': 56,
              'out_features': stages, 'reshape_hidden_states': False, 'apply_layernorm': True}
    imagenet = {'image_mean': [0.485, 0.456, 0.406], 'image_std': [0.229, 0.224, 0.225]}
    if preset in ('tiny-depth-anything', 'tiny-depth-anything-outdoor'):
        # metric Depth Anything: indoor checkpoints declare max_depth 20, outdoor ones 80
        cfg = DepthAnythingConfig(backbone_config=Dinov2Config(**dinov2),
                                  reassemble_hidden_size=32, neck_hidden_sizes=[16, 16, 32, 32],
                                  fusion_hidden_size=16, head_hidden_size=8,
                                  depth_estimation_type='metric',
                                  max_depth=10 if preset == 'tiny-depth-anything' else 80)
        return cfg, {'size': {'height': 70, 'width': 70}, 'keep_aspect_ratio': True,
                     'ensure_multiple_of': 14, **imagenet}
    if preset == 'tiny-dpt-dinov2':  # facebook/dpt-dinov2-*: no resize, centre pad to 14
        cfg = DPTConfig(backbone_config=Dinov2Config(**dinov2), hidden_size=32,
                        neck_hidden_sizes=[16, 16, 32, 32], fusion_hidden_size=16,
                        reassemble_factors=[4, 2, 1, 0.5])
        return cfg, {'do_resize': False, 'do_rescale': False, 'do_pad': True,
                     'size_divisor': 14, 'resample': 2, 'image_mean': [123.675, 116.28, 103.53],
                     'image_std': [58.395, 57.12, 57.375]}
    if preset == 'tiny-glpn':  # vinvino02/glpn-nyu's processor: multiple of 32, no normalize
        cfg = GLPNConfig(hidden_sizes=[8, 16, 16, 32], num_attention_heads=[1, 1, 2, 2],
                         depths=[1, 1, 1, 1], decoder_hidden_size=16, max_depth=10)
        return cfg, {'image_processor_type': 'GLPNImageProcessor', 'do_resize': True,
                     'do_rescale': True, 'resample': 2, 'size_divisor': 32}
    if preset == 'tiny-zoedepth':  # Intel/zoedepth-nyu's processor, at a tiny size
        bb = BeitConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=37, patch_size=16, image_size=64, out_features=stages,
                        use_relative_position_bias=True, reshape_hidden_states=False)
        cfg = ZoeDepthConfig(backbone_config=bb, neck_hidden_sizes=[16, 16, 32, 32],
                             fusion_hidden_size=16, bottleneck_features=16,
                             num_relative_features=8, bin_embedding_dim=16,
                             num_attractors=[4, 2, 2, 1],
                             bin_configurations=[{'n_bins': 16, 'min_depth': 0.001,
                                                  'max_depth': 10.0}])
        return cfg, {'image_processor_type': 'ZoeDepthImageProcessor', 'do_pad': True,
                     'do_resize': True, 'size': {'height': 64, 'width': 80},
                     'keep_aspect_ratio': True, 'ensure_multiple_of': 16, 'resample': 2,
                     'do_rescale': True, 'rescale_factor': 1 / 255, 'do_normalize': True,
                     'image_mean': [0.5, 0.5, 0.5], 'image_std': [0.5, 0.5, 0.5]}
    if preset in ('tiny-tipsv2', 'tiny-depth-pro', 'tiny-prompt-depth-anything'):
        return _tiny_dense(preset, names, dinov2, imagenet)
    if preset == 'small-depth':
        return DPTConfig(**_vit_dpt(192, 6, 3, 768, [48, 96, 192, 384], 64, [1, 3, 4, 5],
                                    384)), {'size': {'height': 384, 'width': 384}}
    if preset == 'base-depth':
        return DPTConfig(**_vit_dpt(768, 12, 12, 3072, [96, 192, 384, 768], 256,
                                    [2, 5, 8, 11], 384)), {'size': {'height': 384, 'width': 384}}
    if preset == 'large-depth':  # Intel/dpt-large shapes
        return DPTConfig(**_vit_dpt(1024, 24, 16, 4096, [256, 512, 1024, 1024], 256,
                                    [5, 11, 17, 23], 384)), \
            {'size': {'height': 384, 'width': 384}}
    if preset == 'hybrid-depth':  # Intel/dpt-hybrid-midas shapes
        cfg = DPTConfig(**_vit_dpt(768, 12, 12, 3072, [256, 512, 768, 768], 256,
                                   [2, 5, 8, 11], 384), is_hybrid=True,
                        reassemble_factors=[1, 1, 1, 0.5], readout_type='project',
                        backbone_featmap_shape=[1, 1024, 24, 24], neck_ignore_stages=[0, 1])
        return cfg, {'size': {'height': 384, 'width': 384}}
    if preset in SHAPE_PRESETS:
        return _published_shape(preset)
    raise ValueError(f"unknown preset '{preset}'; choose one of "
                     f"{', '.join(PRESETS + SHAPE_PRESETS)}")


_IMAGENET = {'image_mean': [0.485, 0.456, 0.406], 'image_std': [0.229, 0.224, 0.225]}


def _tiny_dense(preset: str, names: List[str], dinov2: Dict, imagenet: Dict):
    """Tiny configs of the families with more than a depth head or more than an image input."""
    if preset == 'tiny-tipsv2':  # google/tipsv2-*-dpt at 4 layers, 32 wide, 112 x 112 input
        from transformers import Tipsv2DptConfig, Tipsv2VisionConfig
        bb = Tipsv2VisionConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                mlp_ratio=2, image_size=112, patch_size=14,
                                num_register_tokens=1, out_indices=[1, 2, 3, 4],
                                apply_layernorm=True, reshape_hidden_states=False)
        cfg = Tipsv2DptConfig(backbone_config=bb, neck_hidden_sizes=[8, 16, 32, 32],
                              fusion_hidden_size=16, num_depth_bins=16, num_labels=len(names),
                              id2label=dict(enumerate(names)),
                              label2id={v: k for k, v in enumerate(names)})
        return cfg, {'image_processor_type': 'Tipsv2DptImageProcessor', 'do_resize': True,
                     'size': {'height': 112, 'width': 112}, 'resample': 2, 'do_rescale': True,
                     'rescale_factor': 1 / 255, 'do_normalize': False}
    if preset == 'tiny-depth-pro':  # apple/DepthPro-hf's layout: 2 ratios, 32 px patches
        from transformers import DepthProConfig, Dinov2Config
        vit = {'hidden_size': 32, 'num_hidden_layers': 4, 'num_attention_heads': 4,
               'intermediate_size': 37, 'patch_size': 8, 'image_size': 32,
               'layer_norm_eps': 1e-6}
        cfg = DepthProConfig(patch_size=32, image_model_config=Dinov2Config(**vit),
                             patch_model_config=Dinov2Config(**vit),
                             fov_model_config=Dinov2Config(**vit), use_fov_model=True,
                             fusion_hidden_size=16, intermediate_hook_ids=[1, 0],
                             intermediate_feature_dims=[8, 8], scaled_images_ratios=[0.5, 1],
                             scaled_images_overlap_ratios=[0.0, 0.5],
                             scaled_images_feature_dims=[16, 8], merge_padding_value=1,
                             num_fov_head_layers=1)
        return cfg, {'image_processor_type': 'DepthProImageProcessor', 'do_resize': True,
                     'size': {'height': 64, 'width': 64}, 'resample': 2, 'do_rescale': True,
                     'rescale_factor': 1 / 255, 'do_normalize': True,
                     'image_mean': [0.5, 0.5, 0.5], 'image_std': [0.5, 0.5, 0.5]}
    # depth-anything/prompt-depth-anything-*-hf: Depth Anything with prompt fusion, metric
    from transformers import Dinov2Config, PromptDepthAnythingConfig
    cfg = PromptDepthAnythingConfig(backbone_config=Dinov2Config(**dinov2),
                                    reassemble_hidden_size=32,
                                    neck_hidden_sizes=[16, 16, 32, 32], fusion_hidden_size=16,
                                    head_hidden_size=8, depth_estimation_type='metric',
                                    max_depth=1)
    return cfg, {'image_processor_type': 'PromptDepthAnythingImageProcessor',
                 'size': {'height': 70, 'width': 70}, 'keep_aspect_ratio': True,
                 'ensure_multiple_of': 14, 'resample': 3, 'do_rescale': True,
                 'rescale_factor': 1 / 255, 'do_normalize': True, 'do_pad': False,
                 'prompt_scale_to_meter': 0.001, **imagenet}


def _published_shape(preset: str):
    """Config + preprocessor dict with a published checkpoint's shapes (from its config.json)."""
    # Imported per family: older transformers releases lack the newer ones (Depth Pro).
    from transformers import Dinov2Config
    if preset.startswith(('da2-', 'da1-')):
        from transformers import DepthAnythingConfig
        # DINOv2 ViT-S/B/L/14 backbone + DPT head; V2 taps earlier layers than V1.
        hidden, layers, heads, fusion, neck = {
            'small': (384, 12, 6, 64, [48, 96, 192, 384]),
            'base': (768, 12, 12, 128, [96, 192, 384, 768]),
            'large': (1024, 24, 16, 256, [256, 512, 1024, 1024])}[preset[4:]]
        taps = ([5, 12, 18, 24] if layers == 24 else [3, 6, 9, 12]) if preset.startswith('da2') \
            else list(range(layers - 3, layers + 1))
        bb = Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                          patch_size=14, image_size=518, out_indices=taps, apply_layernorm=True,
                          reshape_hidden_states=False)
        cfg = DepthAnythingConfig(backbone_config=bb, reassemble_hidden_size=hidden, patch_size=14,
                                  fusion_hidden_size=fusion, neck_hidden_sizes=neck)
        return cfg, {'size': {'height': 518, 'width': 518}, 'keep_aspect_ratio': True,
                     'ensure_multiple_of': 14, **_IMAGENET}
    if preset == 'zoedepth-nk':  # Intel/zoedepth-nyu-kitti: BEiT-L/16 384, two metric bin heads
        from transformers import BeitConfig, ZoeDepthConfig
        bb = BeitConfig(image_size=384, num_hidden_layers=24, hidden_size=1024,
                        intermediate_size=4096, num_attention_heads=16,
                        use_relative_position_bias=True, reshape_hidden_states=False,
                        out_features=['stage6', 'stage12', 'stage18', 'stage24'])
        bins = [{'name': 'nyu', 'n_bins': 64, 'min_depth': 1e-3, 'max_depth': 10.0},
                {'name': 'kitti', 'n_bins': 64, 'min_depth': 1e-3, 'max_depth': 80.0}]
        cfg = ZoeDepthConfig(backbone_config=bb, neck_hidden_sizes=[256, 512, 1024, 1024],
                             bin_centers_type='softplus', bin_configurations=bins,
                             num_patch_transformer_layers=4, patch_transformer_hidden_size=128,
                             patch_transformer_intermediate_size=1024,
                             patch_transformer_num_attention_heads=4)
        return cfg, {'image_processor_type': 'ZoeDepthImageProcessor', 'do_pad': True,
                     'size': {'height': 384, 'width': 512}, 'keep_aspect_ratio': True,
                     'ensure_multiple_of': 32, 'resample': 2, 'image_mean': [0.5, 0.5, 0.5],
                     'image_std': [0.5, 0.5, 0.5]}
    if preset.startswith('tipsv2-'):
        # google/tipsv2-*-dpt (google-deepmind/tips: vit_base / large / so400m / giant2, one
        # register token, DPT heads on four blocks with embed/8 ... embed channels)
        from transformers import Tipsv2DptConfig, Tipsv2VisionConfig
        hidden, layers, heads, ratio, taps, swiglu = {
            'b14': (768, 12, 12, 4, [3, 6, 9, 12], False),
            'l14': (1024, 24, 16, 4, [6, 12, 18, 24], False),
            'so400m14': (1152, 27, 16, 4304 / 1152, [7, 14, 21, 27], False),
            'g14': (1536, 40, 24, 4, [10, 20, 30, 40], True)}[preset[7:]]
        bb = Tipsv2VisionConfig(hidden_size=hidden, num_hidden_layers=layers,
                                num_attention_heads=heads, mlp_ratio=ratio, image_size=448,
                                patch_size=14, num_register_tokens=1, use_swiglu_ffn=swiglu,
                                out_indices=taps, apply_layernorm=True,
                                reshape_hidden_states=False)
        cfg = Tipsv2DptConfig(backbone_config=bb, num_labels=150, fusion_hidden_size=256,
                              neck_hidden_sizes=[hidden // 8, hidden // 4, hidden // 2, hidden])
        return cfg, {'image_processor_type': 'Tipsv2DptImageProcessor',
                     'size': {'height': 448, 'width': 448}, 'resample': 2}
    if preset.startswith('pda-'):  # transformers' convert_prompt_depth_anything_to_hf.py
        from transformers import PromptDepthAnythingConfig
        small = preset == 'pda-vits'
        hidden, layers, heads = (384, 12, 6) if small else (1024, 24, 16)
        bb = Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                          patch_size=14, image_size=518, apply_layernorm=True,
                          out_indices=[3, 6, 9, 12] if small else [5, 12, 18, 24],
                          reshape_hidden_states=False)
        cfg = PromptDepthAnythingConfig(
            backbone_config=bb, reassemble_hidden_size=hidden, patch_size=14,
            fusion_hidden_size=64 if small else 256,
            neck_hidden_sizes=[48, 96, 192, 384] if small else [256, 512, 1024, 1024],
            depth_estimation_type='metric')
        return cfg, {'image_processor_type': 'PromptDepthAnythingImageProcessor',
                     'size': {'height': 756, 'width': 756}, 'keep_aspect_ratio': True,
                     'ensure_multiple_of': 14, **_IMAGENET}
    # apple/DepthPro-hf: DINOv2-L/16 encoders at 384 (patches, whole image, field of view) over
    # a 1536 x 1536 image pyramid.
    from transformers import DepthProConfig
    vit_l = {'hidden_size': 1024, 'num_hidden_layers': 24, 'num_attention_heads': 16,
             'patch_size': 16, 'image_size': 384, 'layer_norm_eps': 1e-6}
    cfg = DepthProConfig(image_model_config=Dinov2Config(**vit_l),
                         patch_model_config=Dinov2Config(**vit_l),
                         fov_model_config=Dinov2Config(**vit_l), use_fov_model=True)
    return cfg, {'size': {'height': 1536, 'width': 1536}}


_MODEL_CLASS = {'depth_anything': 'DepthAnythingForDepthEstimation',
                'glpn': 'GLPNForDepthEstimation', 'zoedepth': 'ZoeDepthForDepthEstimation',
                'tipsv2_dpt': 'Tipsv2DptForDensePrediction',
                'depth_pro': 'DepthProForDepthEstimation',
                'prompt_depth_anything': 'PromptDepthAnythingForDepthEstimation'}


def _centre_sigmoid_head(model, cfg, proc: Dict) -> None:
    """Scale a metric head's last conv so its sigmoid works in its range on the sample scene.

    Metric Depth Anything (and Prompt Depth Anything) ends in sigmoid(conv3) * max_depth. With
    random weights conv3 answers about +-30 on an image, so nearly every pixel comes out at 0 or
    max_depth and a check of the depth compares a constant. Here conv3 is rescaled so that, on
    the synthetic scene, its output has mean 0 and standard deviation 1.5 (depths spread over
    most of 0..max_depth and still follow the image).
    """
    import torch
    size = proc['size']
    h, w = size['height'], size['width']
    scene = synthetic_scene(160, 120)
    rows = np.linspace(0, scene.rgb.shape[0] - 1, h).round().astype(int)
    cols = np.linspace(0, scene.rgb.shape[1] - 1, w).round().astype(int)
    rgb = scene.rgb[rows][:, cols].astype(np.float32) / 255.0
    rgb = (rgb - np.asarray(proc['image_mean'])) / np.asarray(proc['image_std'])
    pixels = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)[None]
    extra = {}
    if cfg.model_type == 'prompt_depth_anything':
        depth = np.where(np.isfinite(scene.depth), scene.depth, 10.0)
        extra['prompt_depth'] = torch.from_numpy(depth[::4, ::4].astype(np.float32))[None, None]
    seen = {}
    conv = model.head.conv3
    hook = conv.register_forward_hook(lambda _m, _i, out: seen.__setitem__('out', out))
    try:
        model.eval()
        model(pixel_values=pixels, **extra)
    finally:
        hook.remove()
    out = seen['out']
    gain = 1.5 / max(float(out.std()), 1e-6)
    conv.bias.sub_(float(out.mean())).mul_(gain)
    conv.weight.mul_(gain)


def random_checkpoint(preset: str, work: Path) -> Path:
    """Return a random-weight checkpoint of a preset's shape, cached in the work folder."""
    path = work / preset
    if not (path / 'config.json').exists():
        make_random_checkpoint(path, preset, seed=0)
    return path


def make_random_checkpoint(path: Union[str, Path], preset: str = 'tiny-depth',
                           seed: int = 0, overrides: Optional[Dict] = None) -> Path:
    """Write a random-weight checkpoint (safetensors + preprocessor_config.json) and return it.

    Neck and head weights get He-normal init and head biases 0.1, so outputs vary with the
    image (a default-initialised DPT outputs ~1e-8 everywhere, useless for parity checks); a
    metric head's sigmoid is centred on the sample scene (_centre_sigmoid_head), else nearly
    every pixel comes out at max_depth.
    overrides sets config fields (e.g. max_depth to match a published checkpoint).
    """
    import torch
    import transformers

    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    path = Path(path)
    cfg, proc = preset_config(preset)
    for key, value in (overrides or {}).items():
        setattr(cfg, key, value)
    torch.manual_seed(seed)
    model = getattr(transformers, _MODEL_CLASS.get(cfg.model_type, 'DPTForDepthEstimation'))(cfg)
    if preset.startswith('tiny-seg'):
        model = transformers.DPTForSemanticSegmentation(cfg)
    encoder = ('dpt', 'backbone', 'glpn', 'depth_pro')
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if name.split('.')[0] in encoder or not isinstance(
                    mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                continue
            fan_in = mod.weight[0].numel()
            # ZoeDepth's bin head needs a wider init for its output to vary with the image.
            gain = 2.0 if name.startswith('metric_head') else 1.0
            mod.weight.normal_(0.0, gain * (2.0 / fan_in) ** 0.5, generator=gen)
            if mod.bias is not None:
                mod.bias.fill_(0.1 if 'head' in name.split('.')[0] else 0.0)
        if cfg.model_type in ('dpt', 'depth_anything'):
            # The head ends in a 1x1 conv (+ ReLU): positive weights keep its output alive.
            last = [m for m in model.head.modules() if isinstance(m, torch.nn.Conv2d)][-1]
            last.weight.abs_()
        if preset.startswith('tiny-') and getattr(cfg, 'depth_estimation_type', '') == 'metric':
            # (the full-size shape presets are for timing: no forward spent on their values)
            _centre_sigmoid_head(model, cfg, proc)
        if cfg.model_type == 'depth_pro':
            # A random field-of-view head answers about 0 degrees (a focal length of
            # infinity): let it answer about 60, varying a little with the image.
            last = [m for m in model.fov_model.head.modules()
                    if isinstance(m, torch.nn.Conv2d)][-1]
            last.weight.mul_(0.05)
            last.bias.fill_(60.0)
    model.eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    full = {} if 'image_processor_type' in proc else {
        'image_processor_type': 'DPTImageProcessor', 'do_resize': True, 'resample': 3,
        'do_rescale': True, 'rescale_factor': 1 / 255, 'do_normalize': True,
        'image_mean': [0.5, 0.5, 0.5], 'image_std': [0.5, 0.5, 0.5],
        'keep_aspect_ratio': False, 'ensure_multiple_of': 1, 'do_pad': False}
    full.update(proc)
    (path / 'preprocessor_config.json').write_text(json.dumps(full, indent=2))
    (path / 'RANDOM_WEIGHTS.txt').write_text(
        f'Random weights (preset {preset}, seed {seed}) made by dpt_ros.tools.sample; outputs are '
        'not meaningful.\n')
    return path
