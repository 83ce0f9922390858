# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Our pipeline vs transformers' own processor + model + post_process_* on the same frames."""

import json
import os

import cv2
import numpy as np
import pytest
import torch

from dpt_ros.core.config import Config
from dpt_ros.core.conversions import Frame
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.tools.sample import synthetic_scene

transformers = pytest.importorskip('transformers')
from transformers.models.dpt.image_processing_pil_dpt import (  # noqa: E402, I100, I202
    DPTImageProcessorPil)
from transformers.models.glpn.image_processing_pil_glpn import (  # noqa: E402, I100
    GLPNImageProcessorPil)
from transformers.models.zoedepth import image_processing_pil_zoedepth as zoe_pil  # noqa: E402

# transformers 5's processors want torchvision, which does not import beside this torch; the
# PIL variants are the reference (same maths). ZoeDepth's PIL post-processing still calls
# torchvision's tensor resize, bicubic without antialiasing; for float tensors that is
# F.interpolate(align_corners=False), and identity at an unchanged size. Only that call is
# stood in for below: the padding removal under test is transformers' own code.
PROCESSORS = {'dpt': DPTImageProcessorPil, 'glpn': GLPNImageProcessorPil,
              'zoedepth': zoe_pil.ZoeDepthImageProcessorPil}


class _TorchvisionResize:
    """Stand-in for torchvision's v2 resize of float (C, H, W) tensors, antialias off."""

    class InterpolationMode:
        BICUBIC = 'bicubic'

    @staticmethod
    def resize(image, size, interpolation, antialias=False):
        assert not antialias
        if list(image.shape[-2:]) == list(size):
            return image
        return torch.nn.functional.interpolate(image[None], size=list(size), mode=interpolation,
                                               align_corners=False)[0]


@pytest.fixture(autouse=True)
def _zoedepth_resize(monkeypatch):
    if getattr(zoe_pil, 'tvF', None) is None:
        monkeypatch.setattr(zoe_pil, 'tvF', _TorchvisionResize, raising=False)


def frames(shared):
    """(name, rgb) for the shared TUM / ICL frames and synthetic ones (incl. an odd size)."""
    out = [('synthetic 640x480', synthetic_scene(640, 480).rgb),
           ('synthetic 333x251', synthetic_scene(333, 251, t=0.7).rgb)]
    if shared is not None:
        paths = [shared / 'tum' / 'TUM_color.png']
        paths += sorted((shared / 'icl_livingroom').glob('color_*.jpg'))
        for p in paths:
            bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
            assert bgr is not None, p
            out.append((f'{p.parent.name}/{p.name}', np.ascontiguousarray(bgr[:, :, ::-1])))
    return out


def processor(ckpt):
    """Return transformers' own (PIL) processor for this checkpoint's preprocessor config."""
    cfg = json.loads((ckpt / 'preprocessor_config.json').read_text())
    kind = cfg['image_processor_type'].replace('ImageProcessor', '').lower()
    return PROCESSORS[kind](**cfg)


def reference(ckpt, rgb, task):
    proc = processor(ckpt)
    auto = (transformers.AutoModelForDepthEstimation if task == 'depth'
            else transformers.AutoModelForSemanticSegmentation)
    model = auto.from_pretrained(str(ckpt), use_safetensors=True).eval()
    inputs = proc(images=rgb, return_tensors='pt')
    with torch.no_grad():
        out = model(**inputs)
    size = [rgb.shape[:2]]
    if task == 'segmentation':
        return proc.post_process_semantic_segmentation(out, target_sizes=size)[0]
    if isinstance(proc, zoe_pil.ZoeDepthImageProcessorPil):
        return proc.post_process_depth_estimation(out, source_sizes=size,
                                                  target_sizes=size)[0]['predicted_depth']
    return proc.post_process_depth_estimation(out, target_sizes=size)[0]['predicted_depth']


def rel_stats(ours, ref):
    ref = np.asarray(ref, np.float64)
    denom = np.maximum(np.abs(ref), 1e-3 * np.percentile(np.abs(ref), 99))
    rel = np.abs(np.asarray(ours, np.float64) - ref) / denom
    return float(np.median(rel)), float(np.percentile(rel, 99))


PRESETS = ['tiny-depth', 'tiny-depth-anything', 'tiny-glpn', 'tiny-zoedepth']
if os.environ.get('DPT_ROS_SLOW') == '1':
    PRESETS.append('hybrid-depth')  # DPT-Hybrid shapes: ~2 s per frame on 2 CPU cores


@pytest.mark.parametrize('preset', PRESETS)
def test_depth_matches_transformers(preset, checkpoints, maybe_shared, record_figure):
    ckpt = checkpoints(preset)
    # Wide range so metric output is not cut to NaN: we compare the raw values (so no
    # temporal alignment of depth/relative either).
    cfg = Config().replace({'model.depth': str(ckpt), 'model.device': 'cpu',
                            'depth.min': 0.0, 'depth.max': 1.0e4, 'depth.temporal': False})
    pipe = Pipeline(cfg, log=lambda m: None)
    items = frames(maybe_shared)[:2] if preset == 'hybrid-depth' else frames(maybe_shared)
    worst = (0.0, 0.0)
    for name, rgb in items:
        ref = reference(ckpt, rgb, 'depth').numpy()
        assert ref.std() > 0.01 * np.abs(ref).mean(), 'flat reference: the check would be empty'
        r = pipe.process(Frame(rgb, 'rgb8'), None)
        ours = r.arrays['relative'] if 'relative' in r.arrays else r.arrays['depth']
        assert ours.shape == ref.shape == rgb.shape[:2]
        finite = np.isfinite(ours)
        assert finite.mean() > 0.99, f'{preset} {name}: {1 - finite.mean():.3%} invalid'
        med, p99 = rel_stats(np.where(finite, ours, 0), ref)
        record_figure(f'depth parity {preset} {name}', f'median {med:.5f}, p99 {p99:.5f}')
        assert med <= 0.01 and p99 <= 0.05, f'{preset} {name}: median {med}, p99 {p99}'
        worst = (max(worst[0], med), max(worst[1], p99))
    record_figure(f'depth parity {preset} worst', f'median {worst[0]:.5f}, p99 {worst[1]:.5f}')


def test_labels_match_transformers(tiny_seg, maybe_shared, record_figure):
    cfg = Config().replace({'model.depth': '', 'model.segmentation': str(tiny_seg),
                            'model.device': 'cpu'})
    pipe = Pipeline(cfg, log=lambda m: None)
    for name, rgb in frames(maybe_shared):
        ref = reference(tiny_seg, rgb, 'segmentation').numpy()
        r = pipe.process(Frame(rgb, 'rgb8'), None)
        labels = r.arrays['labels']
        assert labels.dtype == np.uint8 and labels.shape == ref.shape
        agree = float((labels == ref).mean())
        record_figure(f'label parity tiny-seg {name}', f'agreement {agree:.5f}')
        assert agree >= 0.99, f'{name}: {agree}'
        assert len(np.unique(ref)) > 1, 'reference labels constant: the check would be empty'


@pytest.mark.parametrize('preset', ['tiny-depth', 'tiny-depth-anything', 'tiny-dpt-dinov2',
                                    'tiny-glpn', 'tiny-zoedepth'])
def test_preprocessing_matches_transformers(preset, checkpoints, record_figure):
    """pixel_values from our device preprocessing vs the checkpoint's processor (PIL)."""
    rgb = synthetic_scene(333, 251, t=0.3).rgb
    ckpt = checkpoints(preset)
    proc = processor(ckpt)
    ref = proc(images=rgb, return_tensors='pt')['pixel_values']
    pipe = Pipeline(Config().replace({'model.depth': str(ckpt), 'model.device': 'cpu'}),
                    log=lambda m: None)
    m = pipe.depth_model
    ours = pipe._preprocessor(m)(torch.from_numpy(rgb).permute(2, 0, 1)[None].float())
    assert ours.shape == ref.shape, preset
    assert tuple(ref.shape[-2:]) == m.spec.output_size(251, 333)
    diff = (ours - ref).abs()
    # PIL rounds to uint8 after each resize pass; we match it to within one level (one level
    # is rescale / std after normalisation) on all but a few pixels.
    std = m.spec.image_std if m.spec.do_normalize else (1.0,)
    level = (1 / 255 if m.spec.do_rescale else 1.0) / min(std)
    frac = float((diff > 1.25 * level).float().mean())
    record_figure(f'pixel_values {preset}', f'max |diff| {diff.max():.4f}, '
                  f'share > 1 level {frac:.5f}')
    assert frac < 1e-3 and float(diff.mean()) < 0.1 * level
