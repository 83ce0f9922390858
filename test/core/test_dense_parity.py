# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""TIPSv2-DPT, Depth Pro, Prompt Depth Anything: ours vs transformers' processors and models.

The reference side (dense_reference.py) runs in its own process with a scratch torchvision
(conftest.py), since these processors exist only with transformers' torchvision backend.
Each frame goes through our loader, device preprocessing and post-processing functions here,
and through transformers' AutoImageProcessor + model + post_process_* there.
"""

import math

import cv2
import numpy as np
import pytest
import torch

from dpt_ros.core import normals as nm
from dpt_ros.core import postprocess as post
from dpt_ros.core.config import Config, ModelConfig
from dpt_ros.core.conversions import Frame
from dpt_ros.core.geometry import Intrinsics
from dpt_ros.core.models import load_model
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.core.preprocess import Preprocessor, prompt_depth, to_rgb
from dpt_ros.tools.sample import synthetic_scene

CPU = ModelConfig(device='cpu')


def frames(data):
    """Return (name, rgb, depth metres or None): synthetic scenes and real frames."""
    out = [('synthetic 640x480', synthetic_scene(640, 480)),
           ('synthetic 333x251', synthetic_scene(333, 251, t=0.7))]
    out = [(n, s.rgb, s.depth) for n, s in out]
    bgr = cv2.imread(str(data / 'icl_livingroom' / 'color_00000.jpg'), cv2.IMREAD_COLOR)
    out.append(('icl_livingroom/color_00000.jpg', np.ascontiguousarray(bgr[:, :, ::-1]), None))
    return out


def ours_pixel_values(m, rgb):
    return Preprocessor(m.spec)(to_rgb(torch.from_numpy(rgb)[None], 'rgb8'))


def rel_stats(ours, ref):
    ref = np.asarray(ref, np.float64)
    denom = np.maximum(np.abs(ref), 1e-3 * np.percentile(np.abs(ref), 99))
    rel = np.abs(np.asarray(ours, np.float64) - ref) / denom
    return float(np.median(rel)), float(np.percentile(rel, 99))


def check_pixel_values(ours, ref, spec, what, record_figure):
    """pixel_values agree to one 8-bit level of the resized image, on few pixels.

    The reference resizes 8-bit images with torchvision's fixed-point kernels, we in float
    rounding after each pass as PIL does: about 1 % of values land one level apart.
    """
    assert tuple(ours.shape) == ref.shape, what
    diff = np.abs(ours.numpy() - ref)
    level = spec.rescale_factor / (min(spec.image_std) if spec.do_normalize else 1.0)
    off = float((diff > 0.5 * level).mean())
    record_figure(f'pixel_values {what}', f'max {diff.max() / level:.3f} levels, '
                  f'{off:.4%} values a level apart')
    assert diff.max() <= 1.01 * level and off < 0.02, (what, diff.max() / level, off)


def test_tipsv2_depth_normals_and_labels_match_transformers(checkpoints, rgbd_data,
                                                            transformers_reference,
                                                            record_figure):
    ckpt = checkpoints('tiny-tipsv2')
    items = frames(rgbd_data)
    ref = transformers_reference(ckpt, {f'rgb_{i}': rgb for i, (_, rgb, _) in enumerate(items)})
    assert str(ref['processor']) == 'Tipsv2DptImageProcessor'
    m = load_model(str(ckpt), 'depth', CPU, lambda _m: None,
                   heads=('depth', 'normals', 'segmentation'))
    assert m.metric and m.max_depth == 10.0 and m.labels[:2] == ['floor', 'wall']
    for i, (name, rgb, _) in enumerate(items):
        h, w = rgb.shape[:2]
        pv = ours_pixel_values(m, rgb)
        check_pixel_values(pv, ref[f'pixel_values_{i}'], m.spec, f'tipsv2 {name}',
                           record_figure)
        with torch.no_grad():
            depth, raw_normals, logits = m(pv)
        place = m.spec.placement(h, w)
        d = post.resize_depth(depth, (h, w), place, mode=m.spec.output_resample)[0].numpy()
        assert ref[f'depth_{i}'].std() > 0.01 * ref[f'depth_{i}'].mean(), 'flat reference'
        med, p99 = rel_stats(d, ref[f'depth_{i}'])
        record_figure(f'tipsv2 depth parity {name}', f'median {med:.5f}, p99 {p99:.5f}')
        assert med <= 0.01 and p99 <= 0.05, (name, med, p99)
        n = nm.resize_head_normals(raw_normals, (h, w), place)[0].numpy()
        rn = ref[f'normals_{i}']
        assert n.shape == rn.shape == (3, h, w)
        cos = (n * rn).sum(0) / np.linalg.norm(n, axis=0) / np.linalg.norm(rn, axis=0)
        ang = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        record_figure(f'tipsv2 normals parity {name}',
                      f'median {np.median(ang):.3f} deg, p99 {np.percentile(ang, 99):.3f} deg')
        assert np.median(ang) < 0.5 and np.percentile(ang, 99) < 5.0, name
        # Published: unit length, in the optical frame (the head's axes negated).
        pub = nm.head_normals(raw_normals, (h, w), 'tipsv2_dpt', place)[0].numpy()
        assert np.allclose(np.linalg.norm(pub, axis=-1), 1.0, atol=1e-5)
        want = -rn.transpose(1, 2, 0) / np.linalg.norm(rn, axis=0)[..., None]
        assert np.percentile(np.degrees(np.arccos(np.clip((pub * want).sum(-1), -1, 1))),
                             99) < 5.0
        labels = post.segment(logits, (h, w), place)[0].numpy()
        agree = float((labels == ref[f'labels_{i}']).mean())
        record_figure(f'tipsv2 label parity {name}', f'agreement {agree:.5f}')
        assert agree >= 0.99 and len(np.unique(ref[f'labels_{i}'])) > 1, name


def test_depth_pro_metres_match_transformers_given_the_same_focal_length(
        checkpoints, rgbd_data, transformers_reference, record_figure):
    ckpt = checkpoints('tiny-depth-pro')
    items = frames(rgbd_data)
    inputs = {}
    for i, (_, rgb, _) in enumerate(items):
        inputs[f'rgb_{i}'] = rgb
        inputs[f'fx_{i}'] = np.array(0.9 * rgb.shape[1])
    ref = transformers_reference(ckpt, inputs)
    assert str(ref['processor']) == 'DepthProImageProcessor'
    m = load_model(str(ckpt), 'depth', CPU, lambda _m: None, heads=('depth', 'fov'))
    assert m.depth_units == 'canonical_inverse' and not m.metric
    # Metres over the whole range Depth Pro's post-processing clamps to.
    pipe = Pipeline(Config().replace({'model.depth': str(ckpt), 'model.device': 'cpu',
                                      'depth.min': 0.0, 'depth.max': 1e4}), log=lambda _m: None)
    for i, (name, rgb, _) in enumerate(items):
        h, w = rgb.shape[:2]
        pv = ours_pixel_values(m, rgb)
        diff = np.abs(pv.numpy() - ref[f'pixel_values_{i}'])
        record_figure(f'pixel_values depth_pro {name}', f'max {diff.max():.2e}')
        assert diff.max() < 1e-4, name  # all float: no rounding step anywhere
        with torch.no_grad():
            inverse, fov = m(pv)
        assert np.allclose(fov.numpy(), ref[f'fov_{i}'], rtol=1e-4)
        fx = float(inputs[f'fx_{i}'])
        metres, focal, src = post.depth_pro_metres(inverse, (h, w), [fx], fov)
        at_fx = metres[0].numpy()
        assert src == ['camera_info'] and math.isclose(float(focal[0]), fx, rel_tol=1e-6)
        assert math.isclose(float(ref[f'focal_fx_{i}']), fx, rel_tol=1e-4)
        med, p99 = rel_stats(metres[0].numpy(), ref[f'depth_fx_{i}'])
        record_figure(f'depth_pro metres parity (camera fx) {name}',
                      f'median {med:.2e}, p99 {p99:.2e}')
        assert med <= 1e-4 and p99 <= 1e-3, (name, med, p99)
        # No camera_info: the predicted field of view, as transformers converts it.
        metres, focal, src = post.depth_pro_metres(inverse, (h, w), [None], fov)
        assert src == ['predicted_fov']
        med, p99 = rel_stats(metres[0].numpy(), ref[f'depth_fov_{i}'])
        assert med <= 1e-4 and p99 <= 1e-3, (name, med, p99)
        # A different focal length scales the metres by as much (depth is f / (W inverse)).
        twice, _, _ = post.depth_pro_metres(inverse, (h, w), [2 * fx], fov)
        ok = at_fx < 1e3  # away from the clamp
        assert ok.mean() > 0.5 and np.allclose(twice[0].numpy()[ok], 2 * at_fx[ok], rtol=1e-5)
        # Through the pipeline (the node's and dpt_bag's road): camera_info's fx, else the FoV.
        intr = Intrinsics(fx=fx, fy=fx, cx=w / 2 - 0.5, cy=h / 2 - 0.5, width=w, height=h)
        for given, key, source in ((intr, 'depth_fx', 'camera_info'),
                                   (None, 'depth_fov', 'predicted_fov')):
            r = pipe.process(Frame(rgb, 'rgb8'), given, {'depth'})
            assert r.mode == 'metric' and r.notes['focal_source'] == source, name
            med, p99 = rel_stats(r.arrays['depth'], ref[f'{key}_{i}'])
            record_figure(f'depth_pro metres through the pipeline ({source}) {name}',
                          f'median {med:.2e}, p99 {p99:.2e}')
            assert med <= 1e-4 and p99 <= 1e-3, (name, source, med, p99)


def _prompt_mm(depth, hw):
    """Ground-truth metres -> an (h, w) uint16 millimetre image, like an iPhone LiDAR map."""
    small = cv2.resize(np.nan_to_num(depth, nan=0.0, posinf=0.0), hw[::-1],
                       interpolation=cv2.INTER_NEAREST)
    return np.clip(small * 1000.0, 0, 65535).astype(np.uint16)


def test_prompt_depth_anything_prompt_and_metres_match_transformers(
        checkpoints, rgbd_data, transformers_reference, record_figure):
    ckpt = checkpoints('tiny-prompt-depth-anything')
    items = [it for it in frames(rgbd_data) if it[2] is not None]
    inputs = {}
    for i, (_, rgb, depth) in enumerate(items):
        inputs[f'rgb_{i}'] = rgb
        inputs[f'prompt_{i}'] = _prompt_mm(depth, (24, 32))
    # A flat wall: the processor's constant-prompt nudge must come out the same.
    inputs[f'rgb_{len(items)}'] = items[0][1]
    inputs[f'prompt_{len(items)}'] = np.full((24, 32), 2500, np.uint16)
    items.append(('constant prompt', items[0][1], None))
    ref = transformers_reference(ckpt, inputs)
    assert str(ref['processor']) == 'PromptDepthAnythingImageProcessor'
    m = load_model(str(ckpt), 'depth', CPU, lambda _m: None, prompts=True)
    assert m.needs_prompt and m.metric and m.max_depth is None
    for i, (name, rgb, _) in enumerate(items):
        h, w = rgb.shape[:2]
        raw = torch.from_numpy(inputs[f'prompt_{i}'].astype(np.int32))[None]
        prompt = prompt_depth(raw, 0.001)
        assert prompt.shape == ref[f'prompt_depth_{i}'].shape, name
        assert np.array_equal(prompt.numpy(), ref[f'prompt_depth_{i}']), name
        pv = ours_pixel_values(m, rgb)
        check_pixel_values(pv, ref[f'pixel_values_{i}'], m.spec, f'prompt_depth_anything {name}',
                           record_figure)
        with torch.no_grad():
            out = m(pv, prompt)
        d = post.resize_depth(out, (h, w), m.spec.placement(h, w),
                              mode=m.spec.output_resample)[0].numpy()
        med, p99 = rel_stats(d, ref[f'depth_{i}'])
        record_figure(f'prompt_depth_anything metres parity {name}',
                      f'median {med:.5f}, p99 {p99:.5f}')
        assert med <= 0.01 and p99 <= 0.05, (name, med, p99)
    with pytest.raises(ValueError, match='prompt'):
        m(pv)
