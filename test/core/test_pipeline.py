# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The pipeline object: requested outputs only, timings, batches, live settings, warnings."""

import gc
import weakref

import numpy as np
import pytest
import torch

from dpt_ros.core import outputs
from dpt_ros.core import pipeline as pipeline_mod
from dpt_ros.core.config import Config
from dpt_ros.core.conversions import Frame
from dpt_ros.core.geometry import Intrinsics
from dpt_ros.core.outputs import STAGES
from dpt_ros.core.pipeline import FrameTensors, Pipeline
from dpt_ros.tools.sample import synthetic_sequence


@pytest.fixture(scope='module')
def pipe(checkpoints):
    cfg = Config().replace({'model.depth': str(checkpoints('tiny-depth-anything')),
                            'model.segmentation': str(checkpoints('tiny-seg')),
                            'model.device': 'cpu'})
    return Pipeline(cfg, log=lambda m: None)


def test_only_requested_outputs(pipe):
    s = synthetic_sequence(1, 96, 72)[0]
    for o in outputs.OUTPUTS:
        r = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics, {o.name})
        # A metric model has no relative output; depth/camera_info is encoded from depth;
        # depth/confidence needs depth.confidence flip.
        expected = set() if o.name in ('relative', 'confidence') else {o.source}
        assert set(r.arrays) == expected, o.name
    r = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics, frozenset())
    assert not r.arrays
    r = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics)
    assert set(r.arrays) == outputs.ALL - {'relative', 'depth_info', 'confidence'}
    assert set(STAGES) <= set(r.timings) and all(v >= 0 for v in r.timings.values())
    a = r.arrays
    # With a segmentation model the cloud carries each point's class (points.labels).
    assert a['points'].shape == (96 * 72, 8) and r.points_shape == (72, 96)
    assert r.points_extra == ('label', '', '', '')
    assert np.array_equal(a['points'][:, 4].view(np.uint32).reshape(72, 96), a['labels'])
    assert a['depth'].dtype == np.float32 and a['labels'].dtype == np.uint8
    encoded = outputs.encode(r, outputs.EncodeOptions('32FC1', camera_info=True))
    assert [o.name for o, _ in encoded] == [o.name for o in outputs.OUTPUTS
                                            if o.name not in ('relative', 'confidence')]
    names_only = outputs.encode(r, outputs.EncodeOptions(), {'points', 'depth_info'})
    assert [o.name for o, _ in names_only] == ['points']  # no CameraInfo at hand


def test_output_table_is_consistent():
    topics = [o.topic for o in outputs.OUTPUTS]
    assert len(set(topics)) == len(topics) and all(not t.startswith('/') for t in topics)
    assert all(o.source in outputs.BY_NAME for o in outputs.OUTPUTS)
    viewers = {'depth_colored', 'seg_colored', 'overlay', 'normals_colored'}
    assert outputs.names(viewers=False) == outputs.ALL - viewers
    assert outputs.names(tasks=['segmentation']) == {'labels', 'seg_colored', 'overlay'}
    with pytest.raises(ValueError, match='nope'):
        outputs.names(exclude=['nope'])


def test_batch_equals_single_frames(pipe):
    seq = synthetic_sequence(3, 80, 60)
    frames = [Frame(s.rgb, 'rgb8') for s in seq]
    batch = pipe.process_batch(frames, [s.intrinsics for s in seq])
    for f, s, b in zip(frames, seq, batch):
        one = pipe.process(f, s.intrinsics).arrays
        assert np.allclose(one['depth'], b.arrays['depth'], equal_nan=True, rtol=1e-4,
                           atol=1e-5)
        assert (one['labels'] == b.arrays['labels']).mean() > 0.999


def test_cameras_of_one_network_input_share_one_forward(checkpoints):
    """A 96x72 and a 128x72 camera under fixed-input models: one forward each, as alone.

    Each frame is preprocessed at its own size and resized back to it; the network inputs are
    stacked, never padded, so what a frame gets does not depend on who shared its forward.
    Labels must match exactly; depth within float32 rounding (rtol 1e-5): a matrix product
    of several rows may be summed in another order than one of a single row (as in
    test_batch_equals_single_frames).
    """
    cfg = Config().replace({'model.depth': str(checkpoints('tiny-depth')),
                            'model.segmentation': str(checkpoints('tiny-seg')),
                            'model.device': 'cpu', 'depth.temporal': False})
    pipe = Pipeline(cfg, log=lambda m: None)
    a, b, c = synthetic_sequence(3, 96, 72)
    wide = synthetic_sequence(1, 128, 72)[0]
    frames = [Frame(a.rgb, 'rgb8'), Frame(wide.rgb, 'rgb8'), Frame(c.rgb, 'bgr8')]
    intrs = [a.intrinsics, wide.intrinsics, c.intrinsics]
    assert len({pipe.batch_key(f) for f in frames}) == 1  # DPT ViT: 64 x 64 for every size
    inputs = []
    run = pipe.backends.run
    pipe.backends.run = lambda m, pv, *rest: inputs.append((m.task, len(pv))) or run(m, pv, *rest)
    batch = pipe.process_batch(frames, intrs)
    assert sorted(inputs) == [('depth', 3), ('segmentation', 3)]  # one forward per model
    inputs.clear()
    for f, intr, r in zip(frames, intrs, batch):
        one = pipe.process(f, intr)
        assert (r.height, r.width) == (f.height, f.width)
        assert set(r.arrays) == set(one.arrays)
        assert np.array_equal(r.arrays['labels'], one.arrays['labels'])
        assert np.allclose(r.arrays['relative'], one.arrays['relative'], rtol=1e-5, atol=0)
    assert sorted(inputs) == [('depth', 1)] * 3 + [('segmentation', 1)] * 3


def test_cameras_of_other_network_inputs_never_share_a_forward(pipe):
    """Depth Anything keeps the aspect ratio: 4:3 and 16:9 frames go through one forward each."""
    a, b = synthetic_sequence(1, 96, 72)[0], synthetic_sequence(1, 128, 72)[0]
    frames = [Frame(a.rgb, 'rgb8'), Frame(b.rgb, 'rgb8')]
    assert pipe.batch_key(frames[0]) != pipe.batch_key(frames[1])
    inputs = []
    run = pipe.backends.run
    pipe.backends.run = lambda m, pv, *rest: inputs.append(pv.shape) or run(m, pv, *rest)
    try:
        batch = pipe.process_batch(frames, [a.intrinsics, b.intrinsics], {'depth'})
    finally:
        pipe.backends.run = run
    assert len(inputs) == 2 and inputs[0] != inputs[1] and all(n == 1 for n, *_ in inputs)
    for f, intr, r in zip(frames, (a.intrinsics, b.intrinsics), batch):
        assert np.array_equal(r.arrays['depth'], pipe.process(f, intr, {'depth'}).arrays['depth'],
                              equal_nan=True)


def test_bad_layout_and_wrong_intrinsics(pipe):
    s = synthetic_sequence(1, 64, 48)[0]
    with pytest.raises(ValueError, match='layout'):
        pipe.process(Frame(s.rgb, 'bayer'), s.intrinsics)
    wrong = Intrinsics(fx=50, fy=50, cx=10, cy=10, width=320, height=240)
    r = pipe.process(Frame(s.rgb, 'rgb8'), wrong)
    assert 'points' not in r.arrays and 'depth' in r.arrays
    assert any('320x240' in w for w in r.warnings)


def test_live_update_applies_next_frame(pipe):
    s = synthetic_sequence(1, 64, 48)[0]
    before = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics).arrays['depth']
    old = pipe.config
    try:
        limit = float(np.nanpercentile(before, 50))
        pipe.update(old.replace({'depth.max': limit}))
        after = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics).arrays['depth']
        assert np.nanmax(after) <= limit
        assert np.isnan(after).sum() > np.isnan(before).sum()
    finally:
        pipe.update(old)


def test_mono_and_bgr_inputs(pipe):
    s = synthetic_sequence(1, 64, 48)[0]
    want = outputs.ALL - {'points'}
    rgb = pipe.process(Frame(s.rgb, 'rgb8'), None, want).arrays['depth']
    bgr = pipe.process(Frame(np.ascontiguousarray(s.rgb[:, :, ::-1]), 'bgr8'), None,
                       want).arrays['depth']
    assert np.allclose(rgb, bgr, equal_nan=True)
    grey = s.rgb[:, :, :1].copy()
    mono = pipe.process(Frame(grey, 'mono8'), None, want).arrays['depth']
    # A mono frame is its grey level in all three channels (not, say, one channel of three).
    grey_rgb = pipe.process(Frame(np.repeat(grey, 3, axis=2), 'rgb8'), None, want)
    assert mono.shape == (48, 64)
    assert np.allclose(mono, grey_rgb.arrays['depth'], equal_nan=True)
    assert not np.allclose(mono, rgb, equal_nan=True)  # the colour frame's depth differs


def test_cloud_colours_come_from_every_frame_layout(pipe):
    """The cloud's rgb bits are the frame's own colours for 8- and 16-bit layouts alike."""
    s = synthetic_sequence(1, 64, 48)[0]
    rgb = s.rgb.astype(np.uint32)
    grey = s.rgb[:, :, 1].copy()
    cases = {
        'rgb8': (s.rgb, rgb),
        'bgr8': (np.ascontiguousarray(s.rgb[:, :, ::-1]), rgb),
        'rgba8': (np.dstack([s.rgb, np.full((48, 64), 9, np.uint8)]), rgb),
        'bgra8': (np.dstack([s.rgb[:, :, ::-1], np.full((48, 64), 9, np.uint8)]), rgb),
        'mono8': (grey[:, :, None], np.repeat(grey[:, :, None], 3, 2).astype(np.uint32)),
        # 16-bit grey is scaled to 0..255 and rounded, as the network input is
        'mono16': ((grey.astype(np.uint16) * 257)[:, :, None],
                   np.repeat(grey[:, :, None], 3, 2).astype(np.uint32)),
    }
    for layout, (pixels, want) in cases.items():
        r = pipe.process(Frame(pixels, layout), s.intrinsics, {'points'})
        bits = r.arrays['points'][:, 3].copy().view(np.uint32).reshape(48, 64)
        packed = want[..., 0] << 16 | want[..., 1] << 8 | want[..., 2]
        assert (bits == packed).all(), layout


def test_frames_leave_no_reference_cycles(checkpoints):
    """What a batch holds (device tensors, results) is freed when it returns, not by the GC.

    Left to the cyclic collector, every frame's buffers would pile up between its runs (the
    node's memory grew by tens of MB per burst of frames).
    """
    cfg = Config().replace({'model.depth': str(checkpoints('tiny-depth-anything')),
                            'model.segmentation': str(checkpoints('tiny-seg')),
                            'model.device': 'cpu', 'depth.confidence': 'flip'})
    pipe = Pipeline(cfg, log=lambda m: None)
    seq = synthetic_sequence(2, 96, 72)
    gc.collect()
    gc.disable()
    try:
        for s in seq:
            pipe.process_batch([Frame(s.rgb, 'rgb8')] * 2, [s.intrinsics] * 2)
        # type(), not isinstance: some objects answer __class__ with a deprecation warning.
        alive = [type(o).__name__ for o in gc.get_objects()
                 if type(o) in (FrameTensors, pipeline_mod._Batch)]
        assert alive == []
        ref = weakref.ref(pipe)
        pipe.close()
        del pipe
        assert ref() is None, 'the pipeline is freed as soon as it is dropped'
    finally:
        gc.enable()


def test_a_frame_too_small_for_the_network_is_a_frame_error(pipe):
    """A 1 x 4000 frame resizes to no rows: a FrameError before any work, not torch's error.

    The node and dpt_bag check each frame as they decode it (FrameIn.decode with the
    pipeline) and skip it alone; process_batch refuses it before touching the others.
    """
    from dpt_ros.core.conversions import FrameError
    s = synthetic_sequence(1, 96, 72)[0]
    good, sliver = Frame(s.rgb, 'rgb8'), Frame(np.zeros((1, 4000, 3), np.uint8), 'rgb8')
    pipe.check_frame(good)
    pipe.check_frame(Frame(np.zeros((1, 1, 3), np.uint8), 'rgb8'))  # upscaled: fine
    with pytest.raises(FrameError, match='image 4000x1 is too small for the depth model'):
        pipe.check_frame(sliver)
    with pytest.raises(FrameError, match='too small'):
        pipe.process_batch([good, sliver], [None, None], {'depth'})
    assert pipe.process_batch([good], [None], {'depth'})[0].arrays['depth'].shape == (72, 96)


def _short_of_memory(pipe, most, error=None):
    """Make pipe's forwards of more than `most` frames fail as a full GPU does; log the sizes."""
    sizes = []
    run = pipe.backends.run

    def limited(m, pv, *rest):
        sizes.append(len(pv))
        if len(pv) > most:
            raise error or torch.OutOfMemoryError(
                'CUDA out of memory. Tried to allocate 1.50 GiB (GPU 0; 7.6 GiB total)')
        return run(m, pv, *rest)
    pipe.backends.run = limited
    return sizes


def test_a_batch_that_runs_out_of_memory_runs_in_halves_from_then_on(checkpoints):
    """Four cameras on a GPU with room for a forward of two: each frame still gets its outputs.

    Exactly as two batches of two give them (the failed try left no temporal state behind),
    and later batches at that input go two at a time without failing first.
    """
    cfg = Config().replace({'model.depth': str(checkpoints('tiny-depth')), 'model.device': 'cpu',
                            'batch.max_size': 4})
    pipe, ref = Pipeline(cfg, log=lambda m: None), Pipeline(cfg, log=lambda m: None)
    seq = synthetic_sequence(8, 96, 72)
    sources = ['a', 'b', 'c', 'd']
    sizes = _short_of_memory(pipe, 2)
    for t, scenes in enumerate((seq[:4], seq[4:])):
        frames = [Frame(s.rgb, 'rgb8') for s in scenes]
        intrs = [s.intrinsics for s in scenes]
        got = pipe.process_batch(frames, intrs, {'relative'}, sources=sources, stamps=[t] * 4)
        want = [r for k in (0, 2) for r in ref.process_batch(
            frames[k:k + 2], intrs[k:k + 2], {'relative'}, sources=sources[k:k + 2],
            stamps=[t] * 2)]
        for r, w in zip(got, want):
            assert np.array_equal(r.arrays['relative'], w.arrays['relative'], equal_nan=True)
        warned = [w for r in got for w in r.warnings if 'ran out of memory' in w]
        if t == 0:
            assert sizes == [4, 2, 2] and len(warned) == 4
            assert 'they ran 2 at a time' in warned[0] and 'batch.max_size (now 4)' in warned[0]
            assert 'CUDA out of memory' in warned[0]
        else:  # the limit is kept: no failed try, no new warning
            assert sizes == [4, 2, 2, 2, 2] and not warned
    assert list(pipe.batch_limits.values()) == [2]


def test_a_single_frame_out_of_memory_and_other_errors_fail_as_before(checkpoints):
    cfg = Config().replace({'model.depth': str(checkpoints('tiny-depth')), 'model.device': 'cpu'})
    pipe = Pipeline(cfg, log=lambda m: None)
    s = synthetic_sequence(1, 96, 72)[0]
    sizes = _short_of_memory(pipe, 0)
    with pytest.raises(torch.OutOfMemoryError):
        pipe.process_batch([Frame(s.rgb, 'rgb8')], [s.intrinsics], {'relative'})
    assert sizes == [1]
    sizes = _short_of_memory(pipe, 1, RuntimeError('CUDA error: an illegal memory access'))
    with pytest.raises(RuntimeError, match='illegal memory access'):
        pipe.process_batch([Frame(s.rgb, 'rgb8')] * 2, [s.intrinsics] * 2, {'relative'})
    assert sizes == [2] and not pipe.batch_limits  # not memory: not retried, nothing learnt


@pytest.mark.parametrize('text, oom', [
    ('CUDA out of memory. Tried to allocate 20.00 MiB', True),
    ("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123 bytes", True),
    ('[ONNXRuntimeError] : 6 : Failed to allocate memory for requested buffer', True),
    ('CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)', True),
    ('CUDA error: device-side assert triggered', False),
])
def test_what_counts_as_running_out_of_memory(text, oom):
    assert pipeline_mod.out_of_memory(RuntimeError(text)) is oom
    assert pipeline_mod.out_of_memory(ValueError(text)) is False
    assert pipeline_mod.out_of_memory(MemoryError()) and \
        pipeline_mod.out_of_memory(torch.OutOfMemoryError('x'))
