# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""TensorRT backend: clean fallback on CPU, engine cache key, ONNX export parity."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from dpt_ros import tensorrt_backend as trt_backend
from dpt_ros.config import Config
from dpt_ros.conversions import Frame
from dpt_ros.models import load_model
from dpt_ros.pipeline import Pipeline
from dpt_ros.sample import synthetic_scene


def test_tensorrt_backend_falls_back_to_torch_with_one_line(tiny_metric):
    logs = []
    rgb = synthetic_scene(160, 120).rgb
    base = Config().replace({'model.depth': str(tiny_metric), 'model.device': 'cpu'})
    torch_out = Pipeline(base, log=lambda m: None).process(Frame(rgb, 'rgb8')).depth
    pipe = Pipeline(base.replace({'model.backend': 'tensorrt'}), log=logs.append)
    out = pipe.process(Frame(rgb, 'rgb8')).depth
    why = [m for m in logs if 'tensorrt' in m.lower()]
    assert len(why) == 1 and 'running on torch' in why[0] and 'CUDA' in why[0], logs
    assert pipe.depth_model.backend == 'torch'
    assert np.allclose(out, torch_out, equal_nan=True)
    pipe.process(Frame(rgb, 'rgb8'))  # same shape: no second attempt, no second line
    assert len([m for m in logs if 'tensorrt' in m.lower()]) == 1


def test_engine_key_changes_with_shape_precision_weights_gpu(tiny_depth, tiny_metric):
    from dpt_ros.config import ModelConfig
    a = load_model(str(tiny_depth), 'depth', ModelConfig(device='cpu'), lambda m: None).net
    b = load_model(str(tiny_metric), 'depth', ModelConfig(device='cpu'), lambda m: None).net
    k = trt_backend.engine_key(a, (1, 3, 64, 64), 'fp16', 'NVIDIA H100', '10.3.0')
    assert k == trt_backend.engine_key(a, (1, 3, 64, 64), 'fp16', 'NVIDIA H100', '10.3.0')
    others = {trt_backend.engine_key(a, (1, 3, 96, 64), 'fp16', 'NVIDIA H100', '10.3.0'),
              trt_backend.engine_key(a, (1, 3, 64, 64), 'fp32', 'NVIDIA H100', '10.3.0'),
              trt_backend.engine_key(b, (1, 3, 64, 64), 'fp16', 'NVIDIA H100', '10.3.0'),
              trt_backend.engine_key(a, (1, 3, 64, 64), 'fp16', 'NVIDIA L4', '10.3.0'),
              trt_backend.engine_key(a, (1, 3, 64, 64), 'fp16', 'NVIDIA H100', '10.4.0')}
    assert k not in others and len(others) == 5
    assert 'NVIDIA-H100' in k and '1x3x64x64' in k and k.endswith('.engine')


@pytest.mark.parametrize('preset, shape', [('tiny-depth', (1, 3, 64, 64)),
                                           ('tiny-depth-anything', (1, 3, 70, 98)),
                                           ('tiny-seg', (1, 3, 64, 64))])
def test_onnx_export_matches_torch(checkpoints, tmp_path, preset, shape, record_figure):
    ort = pytest.importorskip('onnxruntime', reason='onnxruntime is not installed')
    from dpt_ros.config import ModelConfig
    task = 'segmentation' if 'seg' in preset else 'depth'
    m = load_model(str(checkpoints(preset)), task, ModelConfig(device='cpu'), lambda x: None)
    path = trt_backend.export_onnx(m.net, shape, tmp_path / 'm.onnx')
    x = torch.rand(shape) * 2 - 1
    with torch.no_grad():
        ref = m.net(x).numpy()
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    out = sess.run(None, {'pixel_values': x.numpy()})[0]
    assert out.shape == ref.shape
    err = float(np.max(np.abs(out - ref)) / max(np.max(np.abs(ref)), 1e-6))
    record_figure(f'onnx export {preset}', f'max |onnx - torch| / max |torch| = {err:.2e}')
    assert err < 1e-4


@pytest.mark.gpu
def test_tensorrt_engine_matches_torch_on_gpu(tiny_metric, tmp_path):
    pytest.importorskip('tensorrt', reason='TensorRT is not installed')
    from dpt_ros.config import ModelConfig
    m = load_model(str(tiny_metric), 'depth', ModelConfig(device='cuda', precision='fp16'),
                   lambda x: None)
    x = torch.rand(1, 3, 70, 98, device='cuda', dtype=torch.float16)
    with torch.no_grad():
        ref = m.net(x).float()
    module, info = trt_backend.try_build(m, tuple(x.shape), str(tmp_path))
    assert module is not None, info
    out = module(x).float()
    assert torch.allclose(out, ref, rtol=2e-2, atol=2e-2)
    again, info2 = trt_backend.try_build(m, tuple(x.shape), str(tmp_path))  # cached
    assert info2 == info


def test_build_engine_command_says_why_on_cpu(tiny_metric):
    proc = subprocess.run([sys.executable, '-m', 'dpt_ros.tensorrt_backend', '--model',
                           str(tiny_metric), '--device', 'cpu', '--height', '120', '--width',
                           '160'], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and 'CUDA' in proc.stderr and 'not built' in proc.stderr
