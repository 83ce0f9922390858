# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""ONNX Runtime backend: parity with torch, export cache, fallback to torch with one log line."""

import sys

import numpy as np
import pytest
import torch

from dpt_ros.core import outputs
from dpt_ros.core.backends import onnxruntime as onnx_backend
from dpt_ros.core.config import BACKENDS, Config, ModelConfig
from dpt_ros.core.conversions import Frame
from dpt_ros.core.models import load_model, RUNTIMES
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.tools.sample import synthetic_scene

RGB = synthetic_scene(160, 120).rgb


def _pipelines(ckpt, task, tmp_path, logs):
    # No depth limits: a value within rounding of a limit must not flip between NaN and metres.
    base = Config().replace({f'model.{task}': str(ckpt), 'model.device': 'cpu',
                             'model.engine_dir': str(tmp_path), 'depth.min': 0.0,
                             'depth.max': 1.0e4})
    if task == 'segmentation':
        base = base.replace({'model.depth': ''})
    ref = Pipeline(base, log=lambda m: None)
    ort = Pipeline(base.replace({'model.backend': 'onnxruntime'}), log=logs.append)
    return ref, ort


def test_every_runtime_backend_is_a_choice():
    assert set(RUNTIMES) <= set(BACKENDS) and 'onnxruntime' in BACKENDS
    assert 'onnxruntime' in ModelConfig.__dataclass_fields__['backend'].metadata['description']


@pytest.mark.parametrize('preset, task', [('tiny-depth', 'depth'),
                                          ('tiny-depth-anything', 'depth'),
                                          ('tiny-seg', 'segmentation')])
def test_onnxruntime_matches_torch(checkpoints, tmp_path, preset, task, record_figure):
    pytest.importorskip('onnxruntime', reason='onnxruntime is not installed')
    logs = []
    ref, ort = _pipelines(checkpoints(preset), task, tmp_path, logs)
    want = outputs.names(exclude=('points',))
    a = ref.process(Frame(RGB, 'rgb8'), None, want)
    b = ort.process(Frame(RGB, 'rgb8'), None, want)
    m = ort.depth_model or ort.seg_model
    assert m.backend == 'onnxruntime', logs
    assert isinstance(m.net, onnx_backend.OnnxRuntimeModule)
    assert len([x for x in logs if 'onnxruntime' in x]) == 1, logs
    if task == 'depth':
        key = 'relative' if 'relative' in a.arrays else 'depth'
        ra, rb = a.arrays[key], b.arrays[key]
        ok = np.isfinite(ra)
        assert ok.mean() > 0.5 and np.array_equal(ok, np.isfinite(rb))
        err = float(np.max(np.abs(rb[ok] - ra[ok])) / max(np.max(np.abs(ra[ok])), 1e-6))
        record_figure(f'onnxruntime {preset}', f'max |ort - torch| / max |torch| = {err:.2e}')
        assert err < 1e-4
        assert a.arrays['depth_colored'].shape == b.arrays['depth_colored'].shape
    else:
        agree = float(np.mean(a.arrays['labels'] == b.arrays['labels']))
        record_figure(f'onnxruntime {preset}', f'labels equal to torch on {agree:.4f} of pixels')
        assert agree > 0.999
    # A second frame of the same size reuses the session: no new export, no new log line.
    ort.process(Frame(RGB, 'rgb8'), None, want)
    assert len([x for x in logs if 'onnxruntime' in x]) == 1


def test_export_is_cached_by_shape_precision_opset_and_weights(checkpoints, tmp_path,
                                                               monkeypatch):
    pytest.importorskip('onnxruntime', reason='onnxruntime is not installed')
    a = load_model(str(checkpoints('tiny-depth')), 'depth', ModelConfig(device='cpu'),
                   lambda m: None)
    b = load_model(str(checkpoints('tiny-depth-anything')), 'depth', ModelConfig(device='cpu'),
                   lambda m: None)
    f32, f16 = torch.float32, torch.float16
    k = onnx_backend.onnx_path(a, (1, 3, 64, 64), f32, str(tmp_path))
    assert k == onnx_backend.onnx_path(a, (1, 3, 64, 64), f32, str(tmp_path), 17)
    others = {onnx_backend.onnx_path(a, (1, 3, 96, 64), f32, str(tmp_path)),
              onnx_backend.onnx_path(a, (1, 3, 64, 64), f16, str(tmp_path)),
              onnx_backend.onnx_path(a, (1, 3, 64, 64), f32, str(tmp_path), 18),
              onnx_backend.onnx_path(b, (1, 3, 64, 64), f32, str(tmp_path))}
    assert k not in others and len(others) == 4
    assert k.parent == tmp_path and k.suffix == '.onnx' and '1x3x64x64_fp32_opset17' in k.name
    exports = []
    real = onnx_backend.export_onnx
    monkeypatch.setattr(onnx_backend, 'export_onnx',
                        lambda *args, **kw: exports.append(args[1]) or real(*args, **kw))
    first, info = onnx_backend.try_build(a, (1, 3, 64, 64), str(tmp_path))
    assert first is not None, info
    again, info2 = onnx_backend.try_build(a, (1, 3, 64, 64), str(tmp_path))
    assert again is not None and exports == [(1, 3, 64, 64)], 'exported once, then cached'
    assert first.path == again.path == k and 'CPUExecutionProvider' in info
    assert sorted(tmp_path.iterdir()) == [k], 'no temporary files left'


def test_cpu_session_uses_torch_thread_count(checkpoints, tmp_path):
    pytest.importorskip('onnxruntime', reason='onnxruntime is not installed')
    m = load_model(str(checkpoints('tiny-depth')), 'depth', ModelConfig(device='cpu'),
                   lambda x: None)
    module, info = onnx_backend.try_build(m, (1, 3, 64, 64), str(tmp_path))
    assert module is not None, info
    assert f'{torch.get_num_threads()} intra-op threads' in info
    assert module.session.get_providers() == ['CPUExecutionProvider']


def _check_fallback(ckpt, tmp_path, word):
    logs = []
    ref, ort = _pipelines(ckpt, 'depth', tmp_path, logs)
    a = ref.process(Frame(RGB, 'rgb8')).arrays['depth_colored']
    b = ort.process(Frame(RGB, 'rgb8')).arrays['depth_colored']
    lines = [x for x in logs if 'onnxruntime' in x]
    assert len(lines) == 1 and 'running on torch' in lines[0] and word in lines[0], logs
    assert ort.depth_model.backend == 'torch'
    assert np.array_equal(a, b)
    ort.process(Frame(RGB, 'rgb8'))  # same shape: no second attempt, no second line
    assert len([x for x in logs if 'onnxruntime' in x]) == 1


def test_falls_back_to_torch_when_onnxruntime_is_missing(tiny_depth, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # import raises ImportError
    _check_fallback(tiny_depth, tmp_path, 'pip install onnxruntime')


def test_falls_back_to_torch_when_the_export_fails(tiny_depth, tmp_path, monkeypatch):
    pytest.importorskip('onnxruntime', reason='onnxruntime is not installed')

    def broken(*args, **kwargs):
        raise RuntimeError('Exporting the operator aten::frobnicate is not supported')
    monkeypatch.setattr(onnx_backend, 'export_onnx', broken)
    _check_fallback(tiny_depth, tmp_path, 'aten::frobnicate')
    assert not list(tmp_path.glob('*.onnx')), 'a failed export leaves no cache file'


@pytest.mark.gpu
def test_onnxruntime_cuda_provider_matches_torch(tiny_metric, tmp_path):
    ort = pytest.importorskip('onnxruntime', reason='onnxruntime is not installed')
    if 'CUDAExecutionProvider' not in ort.get_available_providers():
        pytest.skip('this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)')
    m = load_model(str(tiny_metric), 'depth', ModelConfig(device='cuda', precision='fp16'),
                   lambda x: None)
    x = torch.rand(1, 3, 70, 98, device='cuda', dtype=torch.float16)
    with torch.no_grad():
        ref = m.net(x).float()
    module, info = onnx_backend.try_build(m, tuple(x.shape), str(tmp_path))
    assert module is not None and module.on_gpu, info
    out = module(x).float()
    assert out.device == x.device
    assert torch.allclose(out, ref, rtol=2e-2, atol=2e-2)
