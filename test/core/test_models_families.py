# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Checkpoint handling: processor dispatch, padding removal, metric range, relative output."""

import json
import shutil

import numpy as np
import pytest
import torch

from dpt_ros.core import postprocess as post
from dpt_ros.core.config import Config, ConfigError, ModelConfig
from dpt_ros.core.conversions import Frame
from dpt_ros.core.models import load_model, ModelLoadError
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.core.preprocess import Placement
from dpt_ros.tools.sample import synthetic_scene


def pipeline(ckpt, **settings):
    flat = {'model.depth': str(ckpt), 'model.device': 'cpu'}
    flat.update(settings)
    return Pipeline(Config().replace(flat), log=lambda m: None)


class _Echo(torch.nn.Module):
    """A 'model' whose depth is its input's first channel, resampled to scale x its size.

    Its output covers exactly the field of the (padded) network input, as a real one does, so
    any shift of the published depth against the camera pixels shows.
    """

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = scale

    def forward(self, pixel_values):
        x = pixel_values[:, :1]
        if self.scale != 1.0:
            x = torch.nn.functional.interpolate(x, scale_factor=self.scale, mode='bilinear',
                                                align_corners=False)
        return x[:, 0]


def edge_image(h, w, row, col):
    """Grey image: dark, with a bright block from (row, col) to the bottom-right corner."""
    img = np.full((h, w, 3), 40, np.uint8)
    img[row:, col:] = 220
    return img


def crossing(profile):
    """Sub-pixel position where a rising step profile crosses half way."""
    p = np.asarray(profile, np.float64)
    mid = (p.min() + p.max()) / 2
    i = int(np.argmax(p >= mid))
    return i - 1 + (mid - p[i - 1]) / (p[i] - p[i - 1])


@pytest.mark.parametrize('scale', [1.0, 1.3])
def test_padding_is_removed_before_resizing(checkpoints, scale):
    """DPT-DINOv2 pads 640x480 to 644x490: depth must line up with the camera pixels."""
    pipe = pipeline(checkpoints('tiny-dpt-dinov2'), **{'depth.mode': 'relative_inverse'})
    spec = pipe.depth_model.spec
    assert spec.do_pad and spec.size_divisor == 14 and not spec.do_resize
    pipe.depth_model.net = _Echo(scale)
    row, col = 452, 603  # near the far borders, where a squeezed output is off the most
    img = edge_image(480, 640, row, col)
    rel = pipe.process(Frame(img, 'rgb8'), None).arrays.get('relative')
    assert rel.shape == (480, 640)
    # the step is between pixels col - 1 and col: half way at col - 0.5
    assert abs(crossing(rel[470, :]) - (col - 0.5)) < 0.3
    assert abs(crossing(rel[:, 630]) - (row - 0.5)) < 0.3
    if scale == 1.0:  # same grid: the frame comes back exactly, normalised
        r = (img[..., 0].astype(np.float64) - 123.675) / 58.395
        assert np.allclose(rel, r, atol=1e-5)
    assert spec.placement(480, 640) == Placement((490, 644), (490, 644), (5, 2, 480, 640))


@pytest.mark.parametrize('width', [640, 641])
def test_mirrored_frame_has_its_padding_mirrored(checkpoints, width):
    """depth.confidence flip: the mirrored input pads its odd column on the other side.

    641 wide pads 3 columns, 1 left and 2 right; mirrored, 2 left. A network that commutes
    with mirroring (depth = its input) agrees with itself everywhere once that is undone.
    """
    pipe = pipeline(checkpoints('tiny-dpt-dinov2'), **{
        'depth.mode': 'metric', 'depth.confidence': 'flip', 'depth.min': 0.0,
        'depth.max': 100.0, 'depth.temporal': False})
    assert pipe.depth_model.spec.placement(480, width).box[1] == (644 - width) // 2
    echo = _Echo()
    pipe.depth_model.net = lambda pv: echo(pv) * 0.1 + 2.0
    img = np.zeros((480, width, 3), np.uint8)
    img[:, ::2] = 255  # one-pixel stripes: a column off turns agreement into disagreement
    conf = pipe.process(Frame(img, 'rgb8'), None, {'confidence'}).arrays['confidence']
    assert conf.shape == (480, width) and float(conf.min()) > 0.999
    place = Placement((490, 644), (490, 644), (5, 1, 480, 641))
    assert place.mirrored() == Placement((490, 644), (490, 644), (5, 2, 480, 641))


def test_labels_padding_is_removed():
    """Segmentation logits on a padded grid: labels line up with the camera pixels."""
    place = Placement((490, 644), (490, 644), (5, 2, 480, 640))
    logits = torch.full((1, 2, 245, 322), 0.5)  # half the padded grid; class 0 at 0.5
    logits[0, 1] = 0.0
    # class 1 from padded pixel (406, 602) on, i.e. camera pixel (401, 600)
    logits[0, 1, 406 // 2:, 602 // 2:] = 1.0
    labels = post.segment(logits, (480, 640), place)[0].numpy()
    assert labels.shape == (480, 640)
    assert np.flatnonzero(labels[470] == 1)[0] == 600
    assert np.flatnonzero(labels[:, 630] == 1)[0] == 401


def with_processor(src, dst, **changes):
    """Copy a checkpoint and change its preprocessor_config.json."""
    shutil.copytree(src, dst)
    p = dst / 'preprocessor_config.json'
    cfg = json.loads(p.read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    p.write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize('name', ['SegformerImageProcessorFast', 'Mask2FormerImageProcessor'])
def test_unsupported_processor_is_refused_in_one_line(tmp_path, tiny_metric, name):
    ckpt = with_processor(tiny_metric, tmp_path / 'c', image_processor_type=name)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(ckpt), 'depth', ModelConfig(device='cpu'), lambda m: None)
    text = str(info.value)
    assert '\n' not in text and name.replace('Fast', '') in text
    for supported in ('DPTImageProcessor', 'GLPNImageProcessor', 'ZoeDepthImageProcessor',
                      'Tipsv2DptImageProcessor', 'DepthProImageProcessor',
                      'PromptDepthAnythingImageProcessor'):
        assert supported in text, text


def test_prompt_depth_anything_without_prompts_is_refused_before_its_weights_are_read(
        tmp_path):
    from transformers import PromptDepthAnythingConfig
    ckpt = tmp_path / 'prompt_depth_anything'
    PromptDepthAnythingConfig(
        architectures=['PromptDepthAnythingForDepthEstimation']).save_pretrained(ckpt)
    (ckpt / 'model.safetensors').write_bytes(b'never read')
    (ckpt / 'preprocessor_config.json').write_text(json.dumps(
        {'image_processor_type': 'PromptDepthAnythingImageProcessor'}))
    with pytest.raises(ModelLoadError) as info:
        load_model(str(ckpt), 'depth', ModelConfig(device='cpu'), lambda m: None)
    text = str(info.value)
    assert '\n' not in text and 'metric prompt' in text and 'weights' not in text, text


def test_processor_found_as_transformers_finds_it(tmp_path, checkpoints):
    """Old feature_extractor_type names, Fast / Pil variants, or the model type's default."""
    old = with_processor(checkpoints('tiny-depth'), tmp_path / 'old', image_processor_type=None,
                         feature_extractor_type='DPTFeatureExtractor')
    assert load_model(str(old), 'depth', ModelConfig(device='cpu'), print).spec.kind == 'dpt'
    fast = with_processor(checkpoints('tiny-glpn'), tmp_path / 'fast',
                          image_processor_type='GLPNImageProcessorFast')
    assert load_model(str(fast), 'depth', ModelConfig(device='cpu'), print).spec.kind == 'glpn'
    bare = tmp_path / 'bare'
    shutil.copytree(checkpoints('tiny-zoedepth'), bare)
    (bare / 'preprocessor_config.json').unlink()
    notes = []
    m = load_model(str(bare), 'depth', ModelConfig(device='cpu'), notes.append)
    assert m.spec.kind == 'zoedepth' and (m.spec.height, m.spec.width) == (384, 512)
    assert any('zoedepth' in n and 'defaults' in n for n in notes), notes


def test_glpn_refuses_size_settings(checkpoints):
    with pytest.raises(ConfigError, match='GLPN'):
        load_model(str(checkpoints('tiny-glpn')), 'depth',
                   ModelConfig(device='cpu', input_height=64, input_width=64), print)


def test_depth_max_comes_from_the_checkpoint(checkpoints, tiny_metric):
    """Depth Anything outdoor declares max_depth 80: valid output past 20 m stays."""
    rgb = synthetic_scene(96, 72).rgb
    wide = pipeline(checkpoints('tiny-depth-anything-outdoor'), **{'depth.max': 1.0e4})
    raw = wide.process(Frame(rgb, 'rgb8'), None).arrays.get('depth')
    # sigmoid * 80: much of the scene past the old 20 m default, none past 80 m
    assert np.isfinite(raw).all() and (raw > 20.0).mean() > 0.2 and raw.max() <= 80.0
    outdoor = pipeline(checkpoints('tiny-depth-anything-outdoor'))
    d = outdoor.process(Frame(rgb, 'rgb8'), None).arrays.get('depth')
    assert np.isfinite(d).all() and np.allclose(d, raw)
    assert outdoor.depth_max() == 80.0
    assert outdoor.describe()['depth_max_m'] == '80 (checkpoint)'
    # the user's value wins, and is what diagnostics show
    set20 = pipeline(checkpoints('tiny-depth-anything-outdoor'), **{'depth.max': 20.0})
    d20 = set20.process(Frame(rgb, 'rgb8'), None).arrays.get('depth')
    assert np.array_equal(np.isfinite(d20), raw <= 20.0)
    assert np.allclose(d20[raw <= 20.0], raw[raw <= 20.0])
    assert set20.describe()['depth_max_m'] == '20 (depth.max)'
    # no max_depth declared (relative DPT): 20 m
    assert pipeline(checkpoints('tiny-depth')).depth_max() == 20.0
    # depth.min is checked against the checkpoint's maximum (10 m here), at start and live
    with pytest.raises(ConfigError, match=r'depth\.min .*depth\.max'):
        pipeline(tiny_metric, **{'depth.min': 12.0})
    p = pipeline(tiny_metric)
    with pytest.raises(ConfigError, match=r'depth\.min'):
        p.update(p.config.replace({'depth.min': 12.0}))
    assert p.config.depth.min == 0.1


def test_metric_checkpoint_in_relative_mode(tiny_metric):
    """depth/relative is inverse depth and depth/colored shows near bright, for any checkpoint."""
    rgb = synthetic_scene(96, 72).rgb
    metres = pipeline(tiny_metric, **{'depth.min': 0.0, 'depth.max': 1.0e4}).process(
        Frame(rgb, 'rgb8'), None).arrays.get('depth')
    pipe = pipeline(tiny_metric, **{'depth.mode': 'relative_inverse'})
    r = pipe.process(Frame(rgb, 'rgb8'), None)
    rel, colored = r.arrays.get('relative'), r.arrays.get('depth_colored')
    assert r.mode == 'relative_inverse' and 'depth' not in r.arrays
    assert rel is not None
    ok = np.isfinite(metres) & (metres > 0)
    assert ok.mean() > 0.99
    assert np.allclose(rel[ok], 1.0 / metres[ok], rtol=1e-5)
    # colored: the nearest pixel is brighter than the farthest one
    lum = colored.astype(np.float64).sum(-1)
    near = np.unravel_index(np.nanargmin(np.where(ok, metres, np.nan)), metres.shape)
    far = np.unravel_index(np.nanargmax(np.where(ok, metres, np.nan)), metres.shape)
    assert lum[near] > lum[far]
    expected = post.colorize_depth(torch.from_numpy(rel), 'inferno', inverse=True)
    assert np.array_equal(colored, expected.numpy())


def test_one_config_snapshot_per_frame(tiny_metric):
    """A live change arriving mid-frame applies from the next frame, never half-way."""
    rgb = synthetic_scene(96, 72).rgb
    pipe = pipeline(tiny_metric)
    before = pipe.process(Frame(rgb, 'rgb8'), None).arrays['depth']
    changed = pipe.config.replace({'depth.mode': 'affine_inverse', 'depth.scale': 0.5,
                                   'depth.shift': 0.01})
    net = pipe.depth_model.net

    class ChangeDuringForward(torch.nn.Module):
        def forward(self, x):
            pipe.update(changed)  # as the node's parameter callback does, from another thread
            return net(x)
    pipe.depth_model.net = ChangeDuringForward()
    during = pipe.process(Frame(rgb, 'rgb8'), None)
    pipe.depth_model.net = net
    assert during.mode == 'metric'
    assert np.array_equal(during.arrays['depth'], before, equal_nan=True)
    after = pipe.process(Frame(rgb, 'rgb8'), None)
    assert after.mode == 'affine_inverse'
    assert not np.allclose(after.arrays['depth'], before, equal_nan=True)


@pytest.mark.parametrize('preset', ['tiny-depth', 'tiny-depth-anything', 'tiny-dpt-dinov2',
                                    'tiny-glpn', 'tiny-zoedepth'])
def test_input_fixed_says_whether_the_network_size_follows_the_frame(checkpoints, preset):
    spec = load_model(str(checkpoints(preset)), 'depth', ModelConfig(device='cpu'),
                      lambda m: None).spec
    sizes = {spec.output_size(h, w) for h, w in ((480, 640), (720, 1280), (251, 333))}
    assert spec.input_fixed == (len(sizes) == 1), (preset, sizes)
    assert spec.input_fixed == (preset == 'tiny-depth')
