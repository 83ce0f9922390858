# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Checkpoints with several heads or a prompt: what loads once, what one forward gives."""

import json
import shutil

import numpy as np
import pytest
import torch

from dpt_ros.core import normals as nm
from dpt_ros.core.backends.runner import BackendRunner
from dpt_ros.core.config import Config, ConfigError, ModelConfig
from dpt_ros.core.conversions import Frame
from dpt_ros.core.geometry import ray_grid
from dpt_ros.core.models import load_model, load_models, ModelLoadError
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.core.preprocess import Preprocessor, to_rgb
from dpt_ros.tools.sample import default_intrinsics, render_plane, synthetic_scene

QUIET = {'log': lambda _m: None}


def cpu(**kw):
    return ModelConfig(device='cpu', **kw)


def pixel_values(m, rgb):
    return Preprocessor(m.spec)(to_rgb(torch.from_numpy(rgb)[None], 'rgb8'))


def test_one_tipsv2_checkpoint_named_twice_is_loaded_once_and_gives_every_head(checkpoints):
    tips = str(checkpoints('tiny-tipsv2'))
    depth, seg = load_models(cpu(depth=tips, segmentation=tips), normals=True, **QUIET)
    assert depth is seg and depth.heads == ('depth', 'segmentation', 'normals')
    assert depth.labels == ['floor', 'wall', 'ceiling', 'object', 'person']
    assert depth.metric and depth.depth_units == 'metres' and depth.max_depth == 10.0
    pv = pixel_values(depth, synthetic_scene(120, 90).rgb)
    calls = []
    handle = depth.net.model.backbone.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        d, logits, n = depth(pv)
    handle.remove()
    assert len(calls) == 1  # one backbone pass for all three
    assert d.shape == (1, 64, 64) and logits.shape == (1, 5, 64, 64) and n.shape == (1, 3, 64, 64)
    assert depth.index('normals') == 2
    # The same folder written differently is the same checkpoint.
    depth2, seg2 = load_models(cpu(depth=tips, segmentation=tips + '/'), **QUIET)
    assert depth2 is seg2 and depth2.heads == ('depth', 'segmentation')


def test_separate_checkpoints_stay_separate_and_single_heads_give_one_tensor(checkpoints):
    tips, seg = str(checkpoints('tiny-tipsv2')), str(checkpoints('tiny-seg'))
    depth, labels = load_models(cpu(depth=tips, segmentation=seg), **QUIET)
    assert depth is not labels and depth.heads == ('depth',) and labels.heads == ('segmentation',)
    # Depth alone runs the depth neck only (transformers' single-task class).
    assert type(depth.net.model).__name__ == 'Tipsv2DptForDepthEstimation'
    with torch.no_grad():
        out = depth(pixel_values(depth, synthetic_scene(120, 90).rgb))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 64, 64)
    only_seg = load_model(tips, 'segmentation', cpu(), **QUIET)
    assert type(only_seg.net.model).__name__ == 'Tipsv2DptForSemanticSegmentation'


def test_a_head_the_checkpoint_lacks_is_refused(checkpoints):
    with pytest.raises(ModelLoadError, match='normals'):
        load_model(str(checkpoints('tiny-depth')), 'depth', cpu(), heads=('depth', 'normals'),
                   **QUIET)


def test_depth_pro_loads_with_its_field_of_view_head(checkpoints):
    dp = str(checkpoints('tiny-depth-pro'))
    depth, seg = load_models(cpu(depth=dp), **QUIET)
    assert seg is None and depth.heads == ('depth', 'fov')
    assert depth.depth_units == 'canonical_inverse' and not depth.metric
    with torch.no_grad():
        inverse, fov = depth(pixel_values(depth, synthetic_scene(96, 72).rgb))
    assert inverse.shape == (1, 128, 128) and fov.shape == (1,) and 30 < float(fov) < 90
    with pytest.raises(ConfigError, match='Depth Pro'):
        load_model(dp, 'depth', cpu(input_height=128, input_width=128), **QUIET)


def test_depth_pro_through_the_pipeline_gives_metres_from_either_focal_length(checkpoints):
    cfg = Config().replace({'model.depth': str(checkpoints('tiny-depth-pro')),
                            'model.device': 'cpu', 'depth.temporal': False, 'depth.max': 1e4,
                            'depth.min': 1e-4})
    pipe = Pipeline(cfg, log=lambda _m: None)
    s = synthetic_scene(96, 72)
    fov = pipe.process(Frame(s.rgb, 'rgb8'), None)
    cam = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics)
    assert fov.mode == cam.mode == 'metric' and 'relative' not in cam.arrays
    assert fov.notes['focal_source'] == 'predicted_fov'
    assert cam.notes['focal_source'] == 'camera_info'
    assert float(cam.notes['focal_px']) == pytest.approx(s.intrinsics.fx, rel=1e-6)
    # One network output, two focal lengths: metres scale with the focal length.
    a, b = cam.arrays['depth'], fov.arrays['depth']
    inside = (a > 2e-4) & (a < 5e3) & (b > 2e-4) & (b < 5e3)  # not at the inverse's clamp
    assert inside.sum() > 100
    expect = s.intrinsics.fx / float(fov.notes['focal_px'])
    assert np.allclose(a[inside] / b[inside], expect, rtol=1e-4)


def test_prompted_model_needs_a_prompt_and_others_take_none(checkpoints):
    pda = str(checkpoints('tiny-prompt-depth-anything'))
    with pytest.raises(ModelLoadError, match='prompt'):
        load_models(cpu(depth=pda), **QUIET)
    m = load_models(cpu(depth=pda), prompts=True, **QUIET)[0]
    assert m.needs_prompt and m.heads == ('depth',)
    pv = pixel_values(m, synthetic_scene(96, 72).rgb)
    with pytest.raises(ValueError, match='prompt'):
        m(pv)
    with torch.no_grad():
        out = m(pv, torch.full((1, 1, 6, 8), 2.0) + torch.rand(1, 1, 6, 8))
    assert out.shape == (1, 70, 98) and float(out.min()) >= 2.0 - 1e-4
    tips = load_model(str(checkpoints('tiny-tipsv2')), 'depth', cpu(), **QUIET)
    with pytest.raises(ValueError, match='no prompt'):
        tips(pv, torch.ones(1, 1, 6, 8))


def test_exported_runtimes_leave_multi_output_models_on_torch(checkpoints):
    tips = str(checkpoints('tiny-tipsv2'))
    m = load_model(tips, 'depth', cpu(), heads=('depth', 'normals'), **QUIET)
    said = []
    runner = BackendRunner('onnxruntime', log=said.append)
    assert runner.module_for(m, (1, 3, 112, 112)) is None
    assert m.backend == 'torch' and runner.builds == {}
    assert len(said) == 1 and 'single-output' in said[0] and 'torch' in said[0]
    assert 'single-output' in runner.why_eager(m)


# What TIPSv2-DPT's normals head said for NYU frames (google-deepmind/tips,
# TIPS_decoder_inference.ipynb, saved outputs), in its own axes, and what surface it was.
MEASURED = {'floor': (0.0, 0.93, 0.35), 'wall facing the camera': (0.26, -0.2, 0.94),
            'wall left of the image, facing right': (-0.9, -0.12, 0.43)}


@pytest.mark.parametrize('surface', sorted(MEASURED))
def test_tipsv2_normals_map_to_the_optical_normal_of_that_surface(tmp_path, checkpoints,
                                                                  surface):
    """A head answering what the real one answered gives the rendered plane's normal."""
    import transformers
    said = np.array(MEASURED[surface]) / np.linalg.norm(MEASURED[surface])
    src = checkpoints('tiny-tipsv2')
    model = transformers.Tipsv2DptForDensePrediction.from_pretrained(str(src)).eval()
    with torch.no_grad():
        model.normals_decoder.head.weight.zero_()
        model.normals_decoder.head.bias.copy_(torch.from_numpy(said))
    ckpt = tmp_path / 'constant-normals'
    model.save_pretrained(ckpt)
    shutil.copy(src / 'preprocessor_config.json', ckpt)
    m = load_model(str(ckpt), 'depth', cpu(), heads=('depth', 'normals'), **QUIET)
    intr = default_intrinsics(80, 60)
    with torch.no_grad():
        _, raw = m(pixel_values(m, synthetic_scene(80, 60).rgb))
    head = nm.head_normals(raw, (60, 80), m.model_type, m.spec.placement(60, 80))[0]
    # The surface as the camera sees it: a plane whose normal faces the camera.
    plane = -said  # in the optical frame
    depth = torch.from_numpy(render_plane(plane, 2.0, intr))[None]
    geometric = nm.depth_normals(depth, torch.from_numpy(ray_grid(intr)[0]), max_jump=1.0)[0]
    ok = torch.isfinite(geometric).all(-1)
    assert int(ok.sum()) > 100
    err = nm.angle_deg(head[ok], geometric[ok])
    assert float(err.max()) < 0.5, (surface, float(err.max()))
    # Facing the camera in the optical frame: negative z for all three surfaces.
    assert float(head[..., 2].max()) < 0


def test_checkpoints_written_by_transformers_keep_their_layout(checkpoints):
    """save_pretrained writes TIPSv2-DPT in the original layout transformers converts from."""
    from safetensors import safe_open
    with safe_open(str(checkpoints('tiny-tipsv2') / 'model.safetensors'), 'pt') as f:
        keys = list(f.keys())
    assert any(k.startswith('vision_encoder.') for k in keys)
    assert any(k.startswith('normals_head.') for k in keys)
    cfg = json.loads((checkpoints('tiny-tipsv2') / 'config.json').read_text())
    assert cfg['model_type'] == 'tipsv2_dpt' and 'backbone_config' in cfg


def test_a_missing_folder_is_named_before_anything_is_read(tmp_path):
    with pytest.raises(ModelLoadError, match='does not exist'):
        load_models(cpu(depth=str(tmp_path / 'nope')), **QUIET)


def test_depth_pro_metres_say_which_focal_length_they_used():
    from dpt_ros.core.postprocess import depth_pro_metres
    inverse = torch.full((3, 4, 6), 0.25)
    fov = torch.tensor([90.0, 90.0, 90.0])  # focal length W / 2 at any width
    metres, focal, src = depth_pro_metres(inverse, (8, 12), [30.0, None, -1.0], fov)
    assert src == ['camera_info', 'predicted_fov', 'predicted_fov']
    assert focal.tolist() == pytest.approx([30.0, 6.0, 6.0])
    # metres = f / (W * inverse): 30 / (12 * 0.25) = 10, 6 / 3 = 2
    assert metres.shape == (3, 8, 12)
    assert torch.allclose(metres[0], torch.full((8, 12), 10.0))
    assert torch.allclose(metres[1], torch.full((8, 12), 2.0))
    metres, focal, src = depth_pro_metres(inverse[:1], (8, 12), None, None)
    assert src == ['none'] and bool(torch.isnan(metres).all()) and bool(torch.isnan(focal).all())
