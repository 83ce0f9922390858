# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""TensorRT backend: fallback, cache key, ONNX export, build modes, cancel; engines on a GPU."""

import contextlib
import dataclasses
import importlib.machinery
from pathlib import Path
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
import torch

from dpt_ros.core import backends
from dpt_ros.core.backends import export
from dpt_ros.core.backends import tensorrt as trt_backend
from dpt_ros.core.config import Config, ModelConfig
from dpt_ros.core.conversions import Frame
from dpt_ros.core.models import load_model
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.tools.sample import synthetic_scene

ROOT = Path(__file__).resolve().parents[3]


def quiet(_msg):
    pass


def test_tensorrt_backend_falls_back_to_torch_with_one_line(tiny_metric):
    logs = []
    rgb = synthetic_scene(160, 120).rgb
    base = Config().replace({'model.depth': str(tiny_metric), 'model.device': 'cpu'})
    torch_out = Pipeline(base, log=quiet).process(Frame(rgb, 'rgb8')).arrays['depth']
    pipe = Pipeline(base.replace({'model.backend': 'tensorrt'}), log=logs.append)
    out = pipe.process(Frame(rgb, 'rgb8')).arrays['depth']
    why = [m for m in logs if 'tensorrt' in m.lower()]
    assert len(why) == 1 and 'running on torch' in why[0] and 'CUDA' in why[0], logs
    assert pipe.depth_model.backend == 'torch'
    assert np.allclose(out, torch_out, equal_nan=True)
    pipe.process(Frame(rgb, 'rgb8'))  # same shape: no second attempt, no second line
    pipe.process(Frame(synthetic_scene(320, 120).rgb, 'rgb8'))  # new shape: no retry either
    assert len([m for m in logs if 'tensorrt' in m.lower()]) == 1, logs


def test_cache_key_changes_with_shape_precision_weights_target_opset(tiny_depth, tiny_metric,
                                                                     monkeypatch):
    calls = []
    real = export.weights_hash
    monkeypatch.setattr(export, 'weights_hash', lambda net: calls.append(1) or real(net))
    a = load_model(str(tiny_depth), 'depth', ModelConfig(device='cpu'), quiet)
    b = load_model(str(tiny_metric), 'depth', ModelConfig(device='cpu'), quiet)
    key = trt_backend.engine_key
    k = key(a, (1, 3, 64, 64), 'fp16', 'NVIDIA H100', '10.3.0')
    assert k == key(a, (1, 3, 64, 64), 'fp16', 'NVIDIA H100', '10.3.0')
    # Every dimension of the input shape, the batch range of a profile included.
    shapes = [(2, 3, 64, 64), (1, 4, 64, 64), (1, 3, 96, 64), (1, 3, 64, 96),
              ('1-4', 3, 64, 64), ('1-8', 3, 64, 64), ('2-4', 3, 64, 64), ('1-4', 3, 64, 96)]
    by_shape = {key(a, s, 'fp16', 'NVIDIA H100', '10.3.0') for s in shapes}
    assert len(by_shape) == len(shapes) and k not in by_shape
    others = {key(a, (1, 3, 64, 64), 'fp32', 'NVIDIA H100', '10.3.0'),
              key(b, (1, 3, 64, 64), 'fp16', 'NVIDIA H100', '10.3.0'),
              key(a, (1, 3, 64, 64), 'fp16', 'NVIDIA L4', '10.3.0'),
              key(a, (1, 3, 64, 64), 'fp16', 'NVIDIA H100', '10.4.0'),
              export.cache_key(a, (1, 3, 64, 64), 'fp16', 'NVIDIA H100_trt10.3.0', opset=18)
              + '.engine'}
    assert k not in others | by_shape and len(others) == 5
    assert 'NVIDIA-H100' in k and '1x3x64x64' in k and 'opset17' in k and k.endswith('.engine')
    assert '_1-4x3x64x64_' in key(a, ('1-4', 3, 64, 64), 'fp16', 'NVIDIA H100', '10.3.0')
    # The weights are hashed once per loaded model, however many shapes are keyed.
    assert len(calls) == 2 and a.weights_hash and a.weights_hash != b.weights_hash
    assert export.cache_key(a.weights_hash, (1, 3, 64, 64), 'fp16',
                            'NVIDIA H100_trt10.3.0') + '.engine' == k


@pytest.mark.parametrize('preset, shape', [('tiny-depth', (1, 3, 64, 64)),
                                           ('tiny-depth-anything', (1, 3, 70, 98)),
                                           ('tiny-seg', (1, 3, 64, 64))])
def test_onnx_export_matches_torch(checkpoints, tmp_path, preset, shape, record_figure):
    ort = pytest.importorskip('onnxruntime', reason='onnxruntime is not installed')
    task = 'segmentation' if 'seg' in preset else 'depth'
    m = load_model(str(checkpoints(preset)), task, ModelConfig(device='cpu'), quiet)
    path = export.export_onnx(m.net, shape, tmp_path / 'm.onnx')
    x = torch.rand(shape) * 2 - 1
    with torch.no_grad():
        ref = m.net(x).numpy()
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    out = sess.run(None, {export.INPUT_NAME: x.numpy()})[0]
    assert out.shape == ref.shape
    err = float(np.max(np.abs(out - ref)) / max(np.max(np.abs(ref)), 1e-6))
    record_figure(f'onnx export {preset}', f'max |onnx - torch| / max |torch| = {err:.2e}')
    assert err < 1e-4


def test_bf16_model_exports_as_fp32_and_stays_bf16(tiny_metric, tmp_path):
    ort = pytest.importorskip('onnxruntime', reason='onnxruntime is not installed')
    m = load_model(str(tiny_metric), 'depth', ModelConfig(device='cpu'), quiet)
    m.net.to(torch.bfloat16)
    shape = (1, 3, 70, 98)
    with pytest.raises(Exception, match='ComplexDouble'):  # why bf16 is not exported as is
        torch.onnx.export(m.net, (torch.zeros(shape, dtype=torch.bfloat16),),
                          str(tmp_path / 'direct.onnx'), opset_version=17, dynamo=False)
    path = export.export_onnx(m.net, shape, tmp_path / 'bf16.onnx', torch.bfloat16)
    assert next(m.net.parameters()).dtype == torch.bfloat16  # the running model is untouched
    x = torch.rand(shape) * 2 - 1
    with torch.no_grad():
        ref = m.net.float()(x).numpy()
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    assert sess.get_inputs()[0].type == 'tensor(float)'
    out = sess.run(None, {export.INPUT_NAME: x.numpy()})[0]
    assert np.max(np.abs(out - ref)) / np.max(np.abs(ref)) < 1e-4


@pytest.mark.parametrize('version, precision, bf16_flag, refused', [
    ('10.3.0', 'fp16', True, ''), ('10.13.2', 'bf16', True, ''), ('11.1.0', 'fp16', False, ''),
    ('11.1.0', 'bf16', False, 'bf16'), ('8.6.1', 'fp16', True, '>=10,<12'),
    ('12.0.0', 'fp32', False, '>=10,<12')])
def test_supported_tensorrt_range(version, precision, bf16_flag, refused):
    why = trt_backend.unsupported(version, precision, bf16_flag)
    if refused:
        assert why is not None and refused in why and version in why and '\n' not in why
    else:
        assert why is None


def test_build_mode_strongly_typed_unless_bf16():
    # The ONNX carries fp32 / fp16: a strongly typed network keeps it, with no flag (the only
    # mode of TensorRT 11). bf16 is exported fp32 and needs the builder's BF16 choice.
    assert trt_backend.build_mode('fp16', True) == (True, None)
    assert trt_backend.build_mode('fp32', True) == (True, None)
    assert trt_backend.build_mode('bf16', True) == (False, 'BF16')
    assert trt_backend.build_mode('fp16', False) == (False, 'FP16')


# ------------------------------------------------------------------ engines, stand-in TensorRT

class FakeTensorRT(types.ModuleType):
    """Enough of the tensorrt module to build, cache and load an engine on a CPU."""

    __version__ = '10.3.0'

    def __init__(self):
        super().__init__('tensorrt')
        self.__spec__ = importlib.machinery.ModuleSpec('tensorrt', None)  # probed by importers
        self.builds = []  # (ONNX bytes, profile or None) per engine built
        ns = types.SimpleNamespace
        self.BuilderFlag = ns(FP16='FP16', BF16='BF16')
        self.NetworkDefinitionCreationFlag = ns(STRONGLY_TYPED=0)
        self.MemoryPoolType = ns(WORKSPACE='workspace')
        self.TensorIOMode = ns(INPUT='in', OUTPUT='out')
        self.float32, self.float16 = 'f32', 'f16'
        self.Logger = type('Logger', (), {'WARNING': 2, '__init__': lambda s, level=0: None})
        trt = self

        class Config:
            def __init__(self):
                self.profiles = []

            def set_memory_pool_limit(self, pool, size):
                pass

            def set_flag(self, flag):
                pass

            def add_optimization_profile(self, profile):
                self.profiles.append(profile)

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                self.shape = (name, tuple(lo), tuple(opt), tuple(hi))

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                return ns()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                trt.builds.append((network.onnx, [p.shape for p in config.profiles] or None))
                return b'engine'

        class OnnxParser:
            def __init__(self, network, logger):
                self.network = network
                self.num_errors = 0

            def parse(self, data):
                self.network.onnx = data
                return True

        class Engine:
            num_io_tensors = 2

            def get_tensor_name(self, i):
                return ('pixel_values', 'output')[i]

            def get_tensor_mode(self, name):
                return trt.TensorIOMode.INPUT if name == 'pixel_values' else 'out'

            def get_tensor_dtype(self, name):
                return trt.float32

            def create_execution_context(self):
                return ns()

        self.Builder, self.OnnxParser = Builder, OnnxParser
        # What build_serialized_network wrote, or None as TensorRT gives for anything else.
        self.Runtime = lambda logger: ns(
            deserialize_cuda_engine=lambda blob: Engine() if blob == b'engine' else None)


@pytest.fixture
def fake_trt(monkeypatch):
    """Install a stand-in TensorRT; the CPU passes for a GPU where the backend asks for one."""
    trt = FakeTensorRT()
    monkeypatch.setitem(sys.modules, 'tensorrt', trt)
    monkeypatch.setattr(torch.cuda, 'device', lambda dev: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda dev=None: 'Stand-in GPU')
    return trt


@pytest.mark.parametrize('preset, batch_free', [('tiny-depth-anything', True),
                                                ('tiny-zoedepth', False)])
def test_one_engine_covers_every_batch_size_of_its_input(checkpoints, tmp_path, fake_trt,
                                                         preset, batch_free):
    """A batch-free graph: one engine, its profile 1..max_batch; else one engine per shape."""
    m = load_model(str(checkpoints(preset)), 'depth', ModelConfig(device='cpu'), quiet)
    shape = (1, 3) + m.spec.output_size(120, 160)
    module, info = trt_backend.try_build(m, shape, str(tmp_path), max_batch=8)
    assert module is not None and module.built, info
    chw = shape[1:]
    if batch_free:
        assert [p for _, p in fake_trt.builds] == [
            [('pixel_values', (1,) + chw, (8,) + chw, (8,) + chw)]]
        assert f"_1-8x{'x'.join(map(str, chw))}_" in module.path.name
        assert module.batches == (1, 8) and module.accepts((8,) + chw)
    else:
        assert [p for _, p in fake_trt.builds] == [None]
        assert f"_1x{'x'.join(map(str, chw))}_" in module.path.name
        assert module.batches == (1, 1) and not module.accepts((2,) + chw)
    assert module.accepts(shape) and not module.accepts((9,) + chw)
    assert not module.accepts((1, 3, chw[1], chw[2] + 14))
    again, info = trt_backend.try_build(m, shape, str(tmp_path), max_batch=8)
    assert again is not None and not again.built and info.startswith('loaded')
    assert len(fake_trt.builds) == 1 and again.path == module.path


def test_a_cut_short_cached_engine_is_built_again(tiny_metric, tmp_path, fake_trt):
    m = load_model(str(tiny_metric), 'depth', ModelConfig(device='cpu'), quiet)
    shape = (1, 3) + m.spec.output_size(120, 160)
    first, info = trt_backend.try_build(m, shape, str(tmp_path), max_batch=2)
    assert first is not None and first.built, info
    first.path.write_bytes(b'eng')  # a full disk, a copy cut short
    again, info = trt_backend.try_build(m, shape, str(tmp_path), max_batch=2)
    assert again is not None and again.built, info
    assert 'the cached engine could not be deserialized' in info
    assert again.path == first.path and again.path.read_bytes() == b'engine'
    assert len(fake_trt.builds) == 2


def test_prepare_builds_one_engine_for_every_batch_the_scheduler_forms(tiny_metric, tmp_path,
                                                                       fake_trt, monkeypatch):
    """Four cameras, depth.confidence flip: batches of 1-4 frames, 1-8 network inputs."""
    monkeypatch.setitem(backends.BY_NAME, 'tensorrt', dataclasses.replace(
        backends.BY_NAME['tensorrt'], cuda_only=False, requires=''))
    cfg = Config().replace({'model.depth': str(tiny_metric), 'model.device': 'cpu',
                            'model.backend': 'tensorrt', 'model.engine_dir': str(tmp_path),
                            'cameras': ('a', 'b', 'c', 'd'), 'depth.confidence': 'flip'})
    logs = []
    pipe = Pipeline(cfg, log=logs.append)
    m, eager, ran = pipe.depth_model, pipe.depth_model.net, []

    def forward(engine, x):  # the engine computes what the eager model does; which one ran?
        ran.append((engine, tuple(x.shape)))
        return eager(x)
    monkeypatch.setattr(trt_backend.TensorRTModule, 'forward', forward)
    pipe.prepare(120, 160)
    assert pipe.backend_builds == {'tensorrt': 1} and len(fake_trt.builds) == 1, logs
    assert sorted(n for _, (n, *_) in ran) == [1, 2, 3, 4, 6, 8]
    engine, chw = ran[-1][0], ran[-1][1][1:]
    assert engine.batches == (1, 8) and fake_trt.builds[0][1][0][3] == (8,) + chw
    frames = [Frame(synthetic_scene(160, 120).rgb, 'rgb8')] * 4
    for n in (1, 4, 2, 3, 1):
        for want in ({'depth'}, {'depth', 'confidence'}):
            pipe.process_batch(frames[:n], [None] * n, want)
            assert ran[-1] == (engine, (2 * n if 'confidence' in want else n,) + chw)
    assert pipe.backend_builds == {'tensorrt': 1} and len(fake_trt.builds) == 1, logs
    assert m.backend == 'tensorrt'


def test_progress_monitor_cancels_and_never_raises():
    class Base:
        def __init__(self):
            pass
    fake_trt = types.SimpleNamespace(IProgressMonitor=Base)
    state = {'stop': False}
    mon = trt_backend._progress_monitor(fake_trt, lambda: state['stop'])
    mon.phase_start('build', None, 3)
    assert mon.step_complete('build', 0) is True
    state['stop'] = True
    assert mon.step_complete('build', 1) is False and mon.cancelled

    def boom():
        raise KeyboardInterrupt
    mon = trt_backend._progress_monitor(fake_trt, boom)
    assert mon.step_complete('build', 0) is False  # Ctrl-C inside the callback: cancel, no raise


def test_build_engine_command_says_why_on_cpu(tiny_metric):
    proc = subprocess.run([sys.executable, '-m', 'dpt_ros.tools.build_engine', '--model',
                           str(tiny_metric), '--device', 'cpu', '--height', '120', '--width',
                           '160'], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and 'CUDA' in proc.stderr and 'not built' in proc.stderr


def test_ctrl_c_during_a_long_engine_build_cancels_it(tiny_metric, tmp_path, ctrl_c_after):
    """Ctrl-C (twice, as launch sends it) while the engine builds: cancelled, exit 130."""
    script = tmp_path / 'slow_build.py'
    script.write_text(textwrap.dedent("""
        import dataclasses, sys, time
        from dpt_ros.core import backends
        from dpt_ros.core.backends import tensorrt as tb
        from dpt_ros.tools import build_engine

        def slow_build(loaded, shape, cache='', cancel=None, max_batch=0):
            print('building', flush=True)
            end = time.monotonic() + 60
            while time.monotonic() < end:  # a build checks cancel() at every step
                if cancel():
                    print('build saw cancel', flush=True)
                    return None, 'engine build failed: engine build cancelled'
                time.sleep(0.05)
            return None, 'not cancelled in 60 s'
        tb.try_build = slow_build
        # A stand-in TensorRT on this CPU: its row needs neither CUDA nor the package.
        backends.BY_NAME['tensorrt'] = dataclasses.replace(backends.BY_NAME['tensorrt'],
                                                           cuda_only=False, requires='')
        sys.exit(build_engine.main(sys.argv[1:]))
        """))
    rc, out = ctrl_c_after([script, '--model', tiny_metric, '--device', 'cpu', '--height',
                            '120', '--width', '160'], 'building', start_timeout=90, cwd=ROOT)
    assert rc == 130, out
    assert 'build saw cancel' in out and 'interrupted' in out, out
    assert 'Traceback' not in out, out


# ------------------------------------------------------------------ on a GPU with TensorRT

def gpu_trt():
    pytest.importorskip('tensorrt', reason='TensorRT is not installed')


def pipe_for(ckpt, engine_dir, precision='fp16', task='depth', logs=None):
    key = 'model.depth' if task == 'depth' else 'model.segmentation'
    cfg = Config().replace({key: str(ckpt), 'model.device': 'cuda', 'model.precision': precision,
                            'model.backend': 'tensorrt', 'model.engine_dir': str(engine_dir),
                            **({'model.depth': ''} if task != 'depth' else {})})
    return Pipeline(cfg, log=(logs.append if logs is not None else quiet))


@pytest.mark.gpu
def test_tensorrt_engine_matches_torch_on_gpu(tiny_metric, tmp_path):
    gpu_trt()
    m = load_model(str(tiny_metric), 'depth', ModelConfig(device='cuda', precision='fp16'),
                   quiet)
    x = torch.rand(1, 3, 70, 98, device='cuda', dtype=torch.float16) * 2 - 1
    with torch.no_grad():
        ref = m.net(x).float()
    module, info = trt_backend.try_build(m, tuple(x.shape), str(tmp_path))
    assert module is not None, info
    assert module.built and info.startswith('built')
    out = module(x).float()
    torch.cuda.synchronize()
    assert torch.allclose(out, ref, rtol=2e-2, atol=2e-2)
    again, info2 = trt_backend.try_build(m, tuple(x.shape), str(tmp_path))  # cached
    assert again is not None and not again.built and info2.startswith('loaded'), info2


@pytest.mark.gpu
def test_pipeline_really_runs_tensorrt_and_reuses_the_engine(tiny_metric, tmp_path):
    """A second start loads the engine the first one built (what happened, not the path)."""
    gpu_trt()
    s = synthetic_scene(640, 480)
    ref_cfg = Config().replace({'model.depth': str(tiny_metric), 'model.device': 'cuda',
                                'model.precision': 'fp16'})
    ref = Pipeline(ref_cfg, log=quiet).process(Frame(s.rgb, 'rgb8'), s.intrinsics).arrays['depth']
    for start in range(2):
        logs = []
        pipe = pipe_for(tiny_metric, tmp_path, logs=logs)
        warmed = pipe.prepare(480, 640)  # start-up: build or load, before the first frame
        m = pipe.depth_model
        assert m.backend == 'tensorrt' and 'depth' in warmed, logs
        engine = m.net
        assert isinstance(engine, trt_backend.TensorRTModule)
        assert engine.built == (start == 0), (start, logs)
        calls = engine.calls
        for _ in range(3):
            out = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics)
        assert m.backend == 'tensorrt' and m.net is engine and engine.calls == calls + 3
        depth = out.arrays['depth']
        ok = np.isfinite(depth) & np.isfinite(ref)
        assert ok.mean() > 0.9
        assert np.median(np.abs(depth[ok] - ref[ok]) / ref[ok]) < 1e-2
        pipe.close()
    assert len(list(Path(tmp_path).glob('*.engine'))) == 1


@pytest.mark.gpu
def test_bf16_engine_builds_or_is_refused_in_one_line(tiny_metric, tmp_path):
    gpu_trt()
    import tensorrt as trt
    if not torch.cuda.is_bf16_supported():
        pytest.skip('this GPU has no bf16')
    logs = []
    pipe = pipe_for(tiny_metric, tmp_path, precision='bf16', logs=logs)
    s = synthetic_scene(640, 480)
    for _ in range(2):
        out = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics)
    pipe.process(Frame(synthetic_scene(320, 240).rgb, 'rgb8'))
    trt_lines = [m for m in logs if 'tensorrt' in m.lower()]
    if hasattr(trt.BuilderFlag, 'BF16'):  # TensorRT 10: an fp32 ONNX, bf16 chosen by the builder
        assert pipe.depth_model.backend == 'tensorrt', logs
        assert np.isfinite(out.arrays['depth']).mean() > 0.9
    else:  # TensorRT 11: refused once, with the reason, not once per shape
        assert pipe.depth_model.backend == 'torch'
        assert len(trt_lines) == 1 and 'bf16' in trt_lines[0], logs


@pytest.mark.gpu
def test_segmentation_engine_matches_torch(tiny_seg, tmp_path):
    gpu_trt()
    s = synthetic_scene(640, 480)
    cfg = Config().replace({'model.depth': '', 'model.segmentation': str(tiny_seg),
                            'model.device': 'cuda', 'model.precision': 'fp16'})
    ref = Pipeline(cfg, log=quiet).process(Frame(s.rgb, 'rgb8'), s.intrinsics).arrays['labels']
    pipe = pipe_for(tiny_seg, tmp_path, task='segmentation')
    out = [pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics) for _ in range(2)][-1]
    assert pipe.seg_model.backend == 'tensorrt' and pipe.seg_model.net.calls >= 2
    assert (out.arrays['labels'] == ref).mean() > 0.98


@pytest.mark.gpu
def test_build_engine_command_end_to_end(tiny_metric, tmp_path):
    """dpt_build_engine builds; the node's pipeline then loads that engine, builds nothing."""
    gpu_trt()
    engines = tmp_path / 'engines'
    params = tmp_path / 'p.yaml'
    params.write_text(f'/**:\n  ros__parameters:\n    model:\n      depth: {tiny_metric}\n'
                      f"      device: cuda\n      engine_dir: '{engines}'\n")
    proc = subprocess.run([sys.executable, '-m', 'dpt_ros.tools.build_engine', '--params-file',
                           str(params), '--height', '480', '--width', '640'],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'depth: engine for 640x480' in proc.stdout and 'built' in proc.stdout, proc.stdout
    assert len(list(engines.glob('*.engine'))) == 1
    pipe = pipe_for(tiny_metric, engines)
    pipe.prepare(480, 640)
    assert pipe.depth_model.backend == 'tensorrt' and not pipe.depth_model.net.built
