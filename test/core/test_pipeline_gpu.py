# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The GPU path: its logic on the CPU (clock, backend fallback, warm-up, Ctrl-C), then on CUDA.

Tests marked gpu skip without CUDA; the others check, with stand-ins, the logic that decides
what happens on a GPU.
"""

import textwrap
import threading

import numpy as np
import pytest
import torch

from dpt_ros.core import outputs
from dpt_ros.core.backends import torch_compile
from dpt_ros.core.backends.export import eager_module
from dpt_ros.core.config import Config
from dpt_ros.core.conversions import Frame
from dpt_ros.core.pipeline import _Clock, Pipeline
from dpt_ros.tools.sample import synthetic_scene, synthetic_sequence

gpu = pytest.mark.gpu
NO_POINTS = outputs.ALL - {'points'}


def quiet(_msg):
    pass


# ------------------------------------------------------------------ the clock, with stand-ins

class FakeEvent:
    """A CUDA event as torch has it: elapsed_time refuses until both events completed."""

    log = []

    def __init__(self, enable_timing=False):
        self.t = None
        self.done = False

    def record(self, stream=None):
        self.t = len(FakeEvent.log)
        FakeEvent.log.append((self, stream))

    def synchronize(self):
        # The GPU runs in order: this event and every one recorded before it complete.
        for ev, _ in FakeEvent.log[:self.t + 1]:
            ev.done = True

    def elapsed_time(self, other):
        if not (self.done and other.done):
            raise RuntimeError('Both events must be completed before calculating elapsed time.')
        return float(other.t - self.t)


def test_clock_waits_for_its_last_event_and_records_on_its_stream(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'Event', FakeEvent)
    FakeEvent.log = []
    stream = object()
    clock = _Clock(torch.device('cuda', 1), stream)
    for stage in ('upload', 'forward', 'download'):
        clock.mark(stage)
    assert clock.result() == {'upload': 1.0, 'forward': 1.0, 'download': 1.0}
    assert [s for _, s in FakeEvent.log] == [stream] * 4  # never the current device's stream


# ------------------------------------------------------------------ backend fallback, warm-up

class Flaky(torch.nn.Module):
    """Stands in for a compiled module that raises on its n-th call (CUDA graph record...)."""

    def __init__(self, eager, fail_on):
        super().__init__()
        self.eager = eager
        self.fail_on = fail_on
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError(f'call {self.calls} failed')
        return self.eager(x)


def fake_backend(monkeypatch, fail_on=0, seen=None):
    """Stand in for torch.compile: each input shape gets a Flaky module; record (shape, cancel)."""
    seen = [] if seen is None else seen

    def build(m, shape, cache='', cancel=None, max_batch=0):
        seen.append((shape, cancel))
        module = torch_compile.CompiledModule(Flaky(eager_module(m), fail_on), shape,
                                              graphs=m.device.type == 'cuda')
        return module, 'stand-in'
    monkeypatch.setattr(torch_compile, 'try_build', build)
    return seen


def compile_pipe(ckpt, logs):
    cfg = Config().replace({'model.depth': str(ckpt), 'model.device': 'cpu',
                            'model.backend': 'compile'})
    return Pipeline(cfg, log=logs.append)


@pytest.mark.parametrize('fail_on', [1, 2, 3, 5])
def test_backend_failure_at_any_call_falls_back_once(tiny_metric, monkeypatch, fail_on):
    """CUDA graphs record on call 2 and replay from 3: a failure there loses no frame."""
    logs = []
    ref = Pipeline(Config().replace({'model.depth': str(tiny_metric), 'model.device': 'cpu'}),
                   log=quiet)
    seen = fake_backend(monkeypatch, fail_on)
    pipe = compile_pipe(tiny_metric, logs)
    frames = synthetic_sequence(6, 96, 72)
    for i, s in enumerate(frames):
        out = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics, NO_POINTS)
        want = ref.process(Frame(s.rgb, 'rgb8'), s.intrinsics, NO_POINTS)
        assert np.allclose(out.arrays['depth'], want.arrays['depth'], equal_nan=True), i
    assert pipe.depth_model.backend == 'torch'
    assert len([m for m in logs if 'failed' in m]) == 1 and f'call {fail_on}' in logs[-1], logs
    pipe.process(Frame(synthetic_scene(160, 72).rgb, 'rgb8'))  # new shape: no second try
    assert len(seen) == 1 and len([m for m in logs if 'failed' in m]) == 1


def test_graph_backend_pays_record_and_replay_on_the_first_frame(tiny_depth, monkeypatch):
    """On CUDA a new shape runs compile, record and replay at once; later frames call once."""
    logs = []
    fake_backend(monkeypatch)
    pipe = compile_pipe(tiny_depth, logs)
    pipe.depth_model.device = torch.device('cuda')  # graphs are a CUDA matter; runs on CPU
    s = synthetic_scene(96, 72)
    pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics)
    flaky = pipe.depth_model.net.compiled
    assert flaky.calls == 3
    pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics)
    assert flaky.calls == 4 and pipe.depth_model.backend == 'compile'


def test_graph_backend_failing_while_recording_still_delivers_frame_one(tiny_depth, monkeypatch):
    logs = []
    fake_backend(monkeypatch, fail_on=2)
    pipe = compile_pipe(tiny_depth, logs)
    pipe.depth_model.device = torch.device('cuda')
    s = synthetic_scene(96, 72)
    out = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics)
    assert np.isfinite(out.arrays['relative']).any()
    failed = [m for m in logs if 'failed' in m]
    assert pipe.depth_model.backend == 'torch' and len(failed) == 1 and 'call 2' in failed[0]


def test_prepare_warms_fixed_inputs_at_start_up_and_others_for_a_size(tiny_depth, tiny_metric,
                                                                      monkeypatch):
    seen = fake_backend(monkeypatch)
    cfg = Config().replace({'model.depth': str(tiny_metric), 'model.segmentation': '',
                            'model.device': 'cpu', 'model.backend': 'compile'})
    logs = []
    aspect = Pipeline(cfg, log=logs.append)  # Depth Anything: input follows the frame's aspect
    assert aspect.prepare() == {} and seen == []
    done = aspect.prepare(480, 640)
    assert 'depth' in done and seen[0][0] == (1, 3, 70, 98) and 'warm-up depth' in logs[-1]
    s = synthetic_scene(640, 480)
    aspect.process(Frame(s.rgb, 'rgb8'), s.intrinsics)
    assert len(seen) == 1  # the first frame found its backend ready

    square = Pipeline(cfg.replace({'model.depth': str(tiny_depth)}), log=quiet)  # ViT DPT
    assert 'depth' in square.prepare() and seen[-1][0] == (1, 3, 64, 64)
    cancel = seen[-1][1]
    assert cancel() is False
    square.cancel()
    assert cancel() is True  # what a TensorRT build polls between its steps
    n = len(seen)
    assert square.prepare(720, 1280) == {} and len(seen) == n  # cancelled: no more start-up work


def test_prepare_does_nothing_for_torch_on_cpu(tiny_depth, monkeypatch):
    seen = fake_backend(monkeypatch)
    pipe = Pipeline(Config().replace({'model.depth': str(tiny_depth), 'model.device': 'cpu'}),
                    log=quiet)
    assert pipe.prepare() == {} and pipe.prepare(480, 640) == {} and seen == []


def test_ctrl_c_during_start_up_warm_up_cancels_and_exits_cleanly(tiny_depth, tmp_path,
                                                                  ctrl_c_after):
    """Double Ctrl-C while the node warms up (an engine build): cancelled, no traceback."""
    pytest.importorskip('rclpy', reason='rclpy (ROS 2) is not installed')
    script = tmp_path / 'slow_node.py'
    script.write_text(textwrap.dedent("""
        import sys, time
        from dpt_ros.core import pipeline

        def slow_prepare(self, height=0, width=0, frame_sized_only=False, frames=0):
            print('warming up', flush=True)
            end = time.monotonic() + 60
            while time.monotonic() < end and not self._cancel.is_set():
                time.sleep(0.05)  # a TensorRT build polls cancel between its steps
            print('warm-up saw cancel' if self._cancel.is_set() else 'warm-up ran out',
                  flush=True)
            return {}
        pipeline.Pipeline.prepare = slow_prepare
        from dpt_ros.ros.entry import main
        sys.exit(main())
        """))
    params = tmp_path / 'p.yaml'
    params.write_text(f'/**:\n  ros__parameters:\n    model:\n      depth: {tiny_depth}\n'
                      '      device: cpu\n')
    rc, out = ctrl_c_after([script, '--ros-args', '--params-file', params], 'warming up')
    assert rc in (0, 130), out
    assert 'warm-up saw cancel' in out, out
    for bad in ('Traceback', 'Exception ignored', 'terminate called', 'dpt_ros ready'):
        assert bad not in out, out


# ------------------------------------------------------------------ on CUDA

def make(depth, seg, device, precision='fp32', backend='torch', **extra):
    cfg = Config().replace({'model.depth': str(depth), 'model.segmentation': str(seg),
                            'model.device': device, 'model.precision': precision,
                            'model.backend': backend, **extra})
    return Pipeline(cfg, log=quiet)


def run(ckpt, seg, device, precision='fp32', backend='torch'):
    pipe = make(ckpt, seg, device, precision, backend)
    s = synthetic_scene(640, 480)
    out = [pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics) for _ in range(3)][-1]
    pipe.close()
    return out


def rel_diff(a, b):
    ok = np.isfinite(a) & np.isfinite(b)
    assert ok.mean() > 0.9
    return np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-6)


@gpu
@pytest.mark.parametrize('precision, median_tol', [('fp32', 1e-4), ('fp16', 1e-2),
                                                   ('bf16', 3e-2)])
def test_cuda_matches_cpu(tiny_metric, tiny_seg, precision, median_tol):
    cpu = run(tiny_metric, tiny_seg, 'cpu')
    gpu_out = run(tiny_metric, tiny_seg, 'cuda', precision)
    d = rel_diff(gpu_out.arrays['depth'], cpu.arrays['depth'])
    assert np.median(d) <= median_tol and np.percentile(d, 99) <= 10 * median_tol + 0.02
    assert (gpu_out.arrays['labels'] == cpu.arrays['labels']).mean() >= 0.98
    a, b = gpu_out.arrays['points'][:, :3], cpu.arrays['points'][:, :3]
    ok = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    assert np.median(np.abs(a[ok] - b[ok])) < 0.05 * max(1.0, float(np.median(np.abs(b[ok]))))
    assert set(gpu_out.timings) == set(cpu.timings)


ALL_OUTPUTS = ('relative', 'depth', 'depth_colored', 'points', 'labels', 'seg_colored',
               'overlay')  # every array a relative depth model + a segmentation model make


def backends():
    found = ['torch', 'compile']
    try:
        import tensorrt  # noqa: F401
        found.append('tensorrt')
    except ImportError:
        pass
    return found


@gpu
@pytest.mark.parametrize('backend', ['torch', 'compile', 'tensorrt'])
def test_every_output_type_matches_cpu_in_fp16(tiny_depth, tiny_seg, tmp_path, backend):
    """Relative, metric depth, colours, points, labels, class colours, overlay vs the CPU."""
    if backend not in backends():
        pytest.skip(f'{backend} is not installed')
    extra = {'depth.mode': 'affine_inverse', 'depth.scale': 0.05, 'depth.shift': 0.05,
             'depth.min': 0.0, 'depth.max': 1e4, 'model.engine_dir': str(tmp_path)}
    cpu = make(tiny_depth, tiny_seg, 'cpu', **extra)
    dev = make(tiny_depth, tiny_seg, 'cuda', 'fp16', backend, **extra)
    for i, s in enumerate(synthetic_sequence(4, 640, 480)):
        a = dev.process(Frame(s.rgb, 'rgb8'), s.intrinsics)
        b = cpu.process(Frame(s.rgb, 'rgb8'), s.intrinsics)
        assert {k for k in ALL_OUTPUTS if k in a.arrays} == set(ALL_OUTPUTS)
        for name in ('relative', 'depth'):
            assert np.median(rel_diff(a.arrays[name], b.arrays[name])) < 1e-2, (i, name)
        pa, pb = a.arrays['points'], b.arrays['points']
        ok = np.isfinite(pa[:, :3]).all(1) & np.isfinite(pb[:, :3]).all(1)
        err = np.abs(pa[ok, :3] - pb[ok, :3]) / np.abs(pb[ok, :3]).max(1, keepdims=True)
        assert ok.mean() > 0.9 and np.median(err) < 1e-2, i
        assert np.array_equal(pa[:, 3].view(np.uint32), pb[:, 3].view(np.uint32))  # rgb
        assert (a.arrays['labels'] == b.arrays['labels']).mean() >= 0.98, i
        assert (a.arrays['seg_colored'] == b.arrays['seg_colored']).all(-1).mean() >= 0.98, i
        for name in ('depth_colored', 'overlay'):
            diff = np.abs(a.arrays[name].astype(int) - b.arrays[name].astype(int))
            assert np.median(diff) <= 2 and diff.mean() < 4, (i, name)
    want_backend = backend
    assert dev.depth_model.backend == want_backend and dev.seg_model.backend == want_backend


@gpu
def test_different_images_per_frame_stay_apart(tiny_metric):
    """Each frame's output is its own: a reused staging buffer overwritten early would show."""
    cpu = make(tiny_metric, '', 'cpu')
    dev = make(tiny_metric, '', 'cuda')
    seq = synthetic_sequence(8, 640, 480)
    for s in seq:
        a = dev.process(Frame(s.rgb, 'rgb8'), s.intrinsics, NO_POINTS)
        b = cpu.process(Frame(s.rgb, 'rgb8'), s.intrinsics, NO_POINTS)
        assert np.median(rel_diff(a.arrays['depth'], b.arrays['depth'])) < 1e-3
    # Back to back without reading in between: every result must still be its own frame.
    outs = [dev.process(Frame(s.rgb, 'rgb8'), s.intrinsics, NO_POINTS)
            for s in seq]
    refs = [cpu.process(Frame(s.rgb, 'rgb8'), s.intrinsics, NO_POINTS)
            for s in seq]
    for i, (a, b) in enumerate(zip(outs, refs)):
        assert np.median(rel_diff(a.arrays['depth'], b.arrays['depth'])) < 1e-3, i
    assert not np.allclose(outs[0].arrays['depth'], outs[1].arrays['depth'], equal_nan=True)
    batch = dev.process_batch([Frame(s.rgb, 'rgb8') for s in seq[:3]], [None] * 3,
                              NO_POINTS)
    for a, b in zip(batch, refs[:3]):
        assert np.median(rel_diff(a.arrays['depth'], b.arrays['depth'])) < 1e-3


@gpu
def test_stage_timer_under_gpu_contention(tiny_metric):
    """Another stream keeps the GPU busy: no frame is lost to the stage timer."""
    dev = make(tiny_metric, '', 'cuda', 'fp16')
    stop = threading.Event()

    def hammer():
        side = torch.cuda.Stream()
        a = torch.randn(4096, 4096, device='cuda', dtype=torch.float16)
        with torch.cuda.stream(side):
            while not stop.is_set():
                for _ in range(8):
                    a @ a
                side.synchronize()
    t = threading.Thread(target=hammer, daemon=True)
    t.start()
    try:
        s = synthetic_scene(640, 480)
        for _ in range(50):
            r = dev.process(Frame(s.rgb, 'rgb8'), s.intrinsics)
            assert r.timings['forward'] > 0 and all(v >= 0 for v in r.timings.values())
    finally:
        stop.set()
        t.join()


@gpu
def test_second_gpu(tiny_metric, tiny_seg, tmp_path):
    """model.device cuda:1 does all its work on GPU 1 (memory, stream), for every backend."""
    if torch.cuda.device_count() < 2:
        pytest.skip('needs two CUDA GPUs')
    cpu = run(tiny_metric, tiny_seg, 'cpu')
    for backend in backends():
        torch.cuda.synchronize(0)
        before = torch.cuda.memory_allocated(0)
        pipe = make(tiny_metric, tiny_seg, 'cuda:1', 'fp16', backend,
                    **{'model.engine_dir': str(tmp_path)})
        pipe.prepare(480, 640)
        s = synthetic_scene(640, 480)
        out = [pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics) for _ in range(3)][-1]
        assert pipe.depth_model.backend == backend
        assert torch.cuda.memory_allocated(0) <= before, backend  # nothing landed on GPU 0
        assert pipe._stream.device == torch.device('cuda', 1)
        assert np.median(rel_diff(out.arrays['depth'], cpu.arrays['depth'])) < 1e-2
        assert (out.arrays['labels'] == cpu.arrays['labels']).mean() >= 0.98
        assert out.timings['forward'] > 0 and set(out.timings) == set(cpu.timings)
        pipe.close()


@gpu
def test_compile_backend_really_compiles(tiny_metric, tiny_seg):
    """model.backend compile stays compiled through graph record and replay (no fallback)."""
    import torch._dynamo
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    logs = []
    cfg = Config().replace({'model.depth': str(tiny_metric), 'model.segmentation': str(tiny_seg),
                            'model.device': 'cuda', 'model.precision': 'fp16',
                            'model.backend': 'compile'})
    pipe = Pipeline(cfg, log=logs.append)
    warmed = pipe.prepare(480, 640)
    assert set(warmed) == {'depth', 'segmentation'}, logs
    eager = make(tiny_metric, tiny_seg, 'cuda', 'fp16')
    for s in synthetic_sequence(5, 640, 480):
        a = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics)
        b = eager.process(Frame(s.rgb, 'rgb8'), s.intrinsics)
        assert np.median(rel_diff(a.arrays['depth'], b.arrays['depth'])) <= 1e-2
        assert (a.arrays['labels'] == b.arrays['labels']).mean() >= 0.98
    assert pipe.depth_model.backend == 'compile' and pipe.seg_model.backend == 'compile', logs
    assert not [m for m in logs if 'failed' in m or 'eager' in m], logs
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] >= 2
