# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""ONNX Runtime backend: parity with torch, export cache, fallback to torch with one log line."""

import shutil
import sys

import numpy as np
import pytest
import torch

from dpt_ros.core import outputs
from dpt_ros.core.backends import export
from dpt_ros.core.backends import onnxruntime as onnx_backend
from dpt_ros.core.backends.runner import BackendRunner
from dpt_ros.core.config import Config, ModelConfig
from dpt_ros.core.conversions import Frame
from dpt_ros.core.models import load_model
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
    free = onnx_backend.onnx_path(a, ('N', 3, 64, 64), f32, str(tmp_path))
    assert free not in others | {k} and 'Nx3x64x64_fp32_opset17' in free.name
    exports = []
    real = onnx_backend.export_batch_free
    monkeypatch.setattr(onnx_backend, 'export_batch_free',
                        lambda *args, **kw: exports.append(args[1]) or real(*args, **kw))
    first, info = onnx_backend.try_build(a, (1, 3, 64, 64), str(tmp_path))
    assert first is not None, info
    again, info2 = onnx_backend.try_build(a, (1, 3, 64, 64), str(tmp_path))
    assert again is not None and exports == [(1, 3, 64, 64)], 'exported once, then cached'
    # One batch-free export serves every batch size of the network input.
    other, _ = onnx_backend.try_build(a, (3, 3, 64, 64), str(tmp_path))
    assert other is not None and exports == [(1, 3, 64, 64)]
    assert first.path == again.path == other.path == free and 'CPUExecutionProvider' in info
    assert first.any_batch and first.accepts((5, 3, 64, 64)) and not first.accepts((1, 3, 64, 96))
    assert sorted(tmp_path.iterdir()) == [free], 'no temporary files left'


def test_a_config_change_with_the_same_weights_gets_its_own_export(checkpoints, tmp_path):
    pytest.importorskip('onnxruntime', reason='onnxruntime is not installed')
    # The indoor and outdoor presets have the same weights and differ in max_depth only,
    # which scales the metric head's output: one must never be served the other's export.
    indoor = checkpoints('tiny-depth-anything')
    outdoor = checkpoints('tiny-depth-anything-outdoor')
    assert (indoor / 'model.safetensors').read_bytes() == \
        (outdoor / 'model.safetensors').read_bytes()
    moved = tmp_path / 'moved'
    shutil.copytree(indoor, moved)
    x = torch.rand(1, 3, 70, 98)
    paths = []
    for ckpt in (indoor, outdoor, moved):
        m = load_model(str(ckpt), 'depth', ModelConfig(device='cpu'), lambda s: None)
        module, info = onnx_backend.try_build(m, tuple(x.shape), str(tmp_path / 'cache'))
        assert module is not None, info
        with torch.no_grad():
            ref = m.net(x)
        assert torch.allclose(module(x), ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
        paths.append(module.path)
    assert paths[0] != paths[1], 'another config, another export'
    assert paths[0] == paths[2], 'the same checkpoint in another folder reuses its export'


@pytest.mark.parametrize('cut', [0.5, 0.0])
def test_a_cut_short_cache_file_is_exported_again(tiny_depth, tmp_path, cut):
    pytest.importorskip('onnxruntime', reason='onnxruntime is not installed')
    m = load_model(str(tiny_depth), 'depth', ModelConfig(device='cpu'), lambda s: None)
    first, info = onnx_backend.try_build(m, (1, 3, 64, 64), str(tmp_path))
    assert first is not None, info
    data = first.path.read_bytes()
    first.path.write_bytes(data[:int(len(data) * cut)])  # a full disk, a copy cut short
    again, info = onnx_backend.try_build(m, (1, 3, 64, 64), str(tmp_path))
    assert again is not None and 're-exported: the cached file could not be read' in info, info
    assert again.path == first.path and again.path.read_bytes() == data
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(again(x), m.net(x), rtol=1e-4, atol=1e-4)


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
    monkeypatch.setattr(export, 'export_onnx', broken)
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


@pytest.mark.parametrize('preset, builds', [('tiny-depth-anything', 1), ('tiny-zoedepth', 5)])
def test_nothing_is_rebuilt_when_batch_sizes_alternate_after_warm_up(
        checkpoints, tmp_path, monkeypatch, preset, builds):
    """Three cameras, depth.confidence flip: batches of 1-3 frames, network inputs of 1-6.

    A batch-free export is one session for every size; ZoeDepth's export holds its batch size
    (see export_batch_free), so it gets one per size: all built by prepare(), none later.
    """
    ort = pytest.importorskip('onnxruntime', reason='onnxruntime is not installed')
    sessions = []
    real = ort.InferenceSession
    monkeypatch.setattr(ort, 'InferenceSession',
                        lambda *a, **kw: sessions.append(a[0]) or real(*a, **kw))
    cfg = Config().replace({'model.depth': str(checkpoints(preset)), 'model.device': 'cpu',
                            'model.engine_dir': str(tmp_path), 'cameras': ('a', 'b', 'c'),
                            'batch.max_size': 3, 'depth.confidence': 'flip',
                            'depth.min': 0.0, 'depth.max': 1.0e4})
    logs = []
    pipe = Pipeline(cfg.replace({'model.backend': 'onnxruntime'}), log=logs.append)
    assert 'depth' in pipe.prepare(120, 160), logs
    assert len(sessions) == builds, logs
    assert pipe.backend_builds == {'onnxruntime': builds}
    ref = Pipeline(cfg, log=lambda m: None)
    frames = [Frame(synthetic_scene(160, 120, t=0.3 * k).rgb, 'rgb8') for k in range(3)]
    with_conf = outputs.names(exclude=('points',))
    for n, want in ((1, with_conf), (3, {'depth'}), (2, with_conf), (1, {'depth'}),
                    (3, with_conf), (2, {'depth'})):
        got = pipe.process_batch(frames[:n], [None] * n, want)
        assert pipe.depth_model.backend == 'onnxruntime', logs
        if n == 3 and 'confidence' in want:  # a batch of 6 network inputs: same as torch
            exp = ref.process_batch(frames[:n], [None] * n, want)
            for a, b in zip(got, exp):
                ok = np.isfinite(b.arrays['depth'])
                assert ok.mean() > 0.5 and 'confidence' in a.arrays
                assert np.allclose(a.arrays['depth'][ok], b.arrays['depth'][ok], rtol=1e-3)
    assert len(sessions) == builds and pipe.backend_builds == {'onnxruntime': builds}, logs


def test_a_graph_that_holds_its_batch_is_checked_once_per_network_input(
        checkpoints, tmp_path, monkeypatch):
    """A ZoeDepth export holds its batch size: the check (two trial exports) runs once.

    Issue: every batch size re-ran the check before its fixed-shape export, three exports
    where one does (a real ZoeDepth export takes tens of seconds at each activation).
    """
    pytest.importorskip('onnxruntime', reason='onnxruntime is not installed')
    calls = []
    real = export.export_onnx
    monkeypatch.setattr(export, 'export_onnx', lambda net, shape, *a, **kw: calls.append(
        (shape[0], kw.get('free_batch', False))) or real(net, shape, *a, **kw))
    cfg = Config().replace({'model.depth': str(checkpoints('tiny-zoedepth')),
                            'model.device': 'cpu', 'model.backend': 'onnxruntime',
                            'model.engine_dir': str(tmp_path), 'cameras': ('a', 'b'),
                            'batch.max_size': 2, 'depth.confidence': 'flip'})
    logs = []
    pipe = Pipeline(cfg, log=logs.append)
    assert 'depth' in pipe.prepare(120, 160), logs
    assert pipe.backend_builds == {'onnxruntime': 3}, logs  # network inputs of 1, 2 and 4
    # The first size: the check's two trial exports (free batch), then its fixed shape; the
    # others: their fixed shape alone.
    assert calls == [(2, True), (1, True), (1, False), (2, False), (4, False)], calls
    assert len(list(tmp_path.glob('*.batch-tied'))) == 1
    # A restart with a third camera: the cache still knows; one export per new size.
    calls.clear()
    pipe = Pipeline(cfg.replace({'cameras': ('a', 'b', 'c'), 'batch.max_size': 3}),
                    log=logs.append)
    assert 'depth' in pipe.prepare(120, 160), logs
    assert calls == [(3, False), (6, False)], calls
    assert pipe.depth_model.backend == 'onnxruntime'


def test_a_session_sized_for_tensorrt_takes_no_larger_batch(checkpoints, tmp_path, monkeypatch):
    """The TensorRT provider of onnxruntime builds its engine for batches 1..max_batch.

    Issue: such a session accepted any batch of its network input, so a larger batch (a live
    batch.max_size raised) ran outside the engine's profile. Now it gets a session of its own,
    counted as a build. The provider needs a GPU: its sizing is stood in for here.
    """
    pytest.importorskip('onnxruntime', reason='onnxruntime is not installed')
    m = load_model(str(checkpoints('tiny-depth')), 'depth', ModelConfig(device='cpu'),
                   lambda x: None)
    free, info = onnx_backend.try_build(m, (1, 3, 64, 64), str(tmp_path), max_batch=4)
    assert free is not None and free.max_batch == 0, info  # CPU provider: every batch
    assert free.accepts((9, 3, 64, 64))
    real = onnx_backend.try_build

    def sized(loaded, shape, *args, max_batch=0, **kwargs):
        module, why = real(loaded, shape, *args, max_batch=max_batch, **kwargs)
        module.max_batch = max(max_batch, shape[0])  # as the TensorRT provider's engine
        return module, why
    monkeypatch.setattr(onnx_backend, 'try_build', sized)
    runner = BackendRunner('onnxruntime', str(tmp_path))
    x = torch.rand(3, 3, 64, 64)
    runner.run(m, x[:2], max_batch=2)
    runner.run(m, x[:1], max_batch=2)
    assert runner.builds == {'onnxruntime': 1}
    assert [mod.max_batch for mod in runner.modules(m)] == [2]
    out = runner.run(m, x, max_batch=3)  # batch.max_size raised live
    assert runner.builds == {'onnxruntime': 2} and m.backend == 'onnxruntime'
    assert [mod.max_batch for mod in runner.modules(m)] == [2, 3]
    with torch.no_grad():
        assert torch.allclose(out, m.eager(x), atol=1e-4)


def test_a_new_network_input_is_built_when_it_comes_again_and_few_are_kept(
        checkpoints, tmp_path, monkeypatch):
    """A camera whose frame size keeps changing: eager forwards, not a build per size.

    Issue: each new network input ran an export and a session build (seconds on a CPU,
    minutes for an engine on a Jetson) on the one worker thread, while every camera's frames
    waited, and every module built stayed. Now the first input builds at once, another on its
    second frame (its first runs eager), prepare() builds at once, and at most MAX_MODULES
    are kept, the least recently used dropped.
    """
    from dpt_ros.core.backends import runner as runner_mod

    class Built(torch.nn.Module):  # stands in for a session: runs its network input only
        def __init__(self, net, chw):
            super().__init__()
            self.net, self.chw = net, chw

        def accepts(self, shape):
            return tuple(shape[1:]) == self.chw

        def forward(self, x):
            return self.net(x)
    made = []
    monkeypatch.setattr(onnx_backend, 'try_build', lambda m, shape, *a, **kw: (
        made.append(tuple(shape[1:])) or Built(m.eager, tuple(shape[1:])), 'built'))
    m = load_model(str(checkpoints('tiny-depth-anything')), 'depth',
                   ModelConfig(device='cpu'), lambda x: None)  # its input follows the frame
    runner = BackendRunner('onnxruntime', str(tmp_path))

    def run(h, w, n=1):
        runner.run(m, torch.rand(n, 3, h, w))
        return m.backend
    assert run(56, 56) == 'onnxruntime' and made == [(3, 56, 56)]  # the first: at once
    assert run(56, 56, n=2) == 'onnxruntime' and len(made) == 1     # any batch of it
    assert run(56, 70) == 'torch' and len(made) == 1                # another: eager first
    assert run(56, 70) == 'onnxruntime' and made[-1] == (3, 56, 70)  # built when it comes again
    for w in range(84, 84 + 14 * 6, 14):  # six sizes that never come again: no build
        assert run(56, w) == 'torch'
    assert len(made) == 2 and runner.builds == {'onnxruntime': 2}
    runner.warming = True  # prepare(): at once
    assert run(70, 70) == 'onnxruntime' and len(made) == 3
    runner.warming = False
    for w in range(28, 28 + 14 * 8, 14):  # eight more that repeat: at most MAX_MODULES kept
        run(42, w)
        run(42, w)
    kept = {mod.chw for mod in runner.modules(m)}
    assert len(kept) == runner_mod.MAX_MODULES and (3, 42, 126) in kept
    assert (3, 56, 56) not in kept  # the least recently used went first
