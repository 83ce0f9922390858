# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Dense outputs through the pipeline: one forward for several heads, normals, semantic clouds.

The node's and dpt_bag's road (test/ros/test_node_dense.py runs them over DDS).
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dpt_ros.core import normals as nm
from dpt_ros.core import postprocess as post
from dpt_ros.core import prompt as pr
from dpt_ros.core.config import Config, ConfigError
from dpt_ros.core.conversions import Frame, LABEL_FIELD, read_points
from dpt_ros.core.geometry import Intrinsics, ray_grid
from dpt_ros.core.metric import Anchors
from dpt_ros.core.models import HEAD_DEPTH, HEAD_NORMALS, HEAD_SEGMENTATION, ModelLoadError
from dpt_ros.core.outputs import encode, EncodeOptions
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.core.preprocess import Preprocessor, prompt_as, prompt_depth, to_rgb
from dpt_ros.tools.sample import default_intrinsics, synthetic_scene

from denseutil import plane_depth, plane_model, PLANE_NORMAL  # noqa: I100

QUIET = {'log': lambda _m: None}


def tips_pipe(checkpoints, **extra):
    tips = str(checkpoints('tiny-tipsv2'))
    cfg = Config().replace(dict({'model.depth': tips, 'model.segmentation': tips,
                                 'model.device': 'cpu'}, **extra))
    return Pipeline(cfg, **QUIET)


class Counter:
    """Count the calls of modules (forward hooks)."""

    def __init__(self, **modules):
        self.calls = dict.fromkeys(modules, 0)
        self._handles = [m.register_forward_hook(self._hook(k)) for k, m in modules.items()]

    def _hook(self, name):
        def hook(*_a):
            self.calls[name] += 1
        return hook

    def close(self):
        for h in self._handles:
            h.remove()


def test_one_checkpoint_named_twice_runs_one_forward_per_batch(checkpoints):
    pipe = tips_pipe(checkpoints)
    m = pipe.depth_model
    assert m is pipe.seg_model and pipe.models() == [m]
    assert 'one forward' in pipe.describe()['shared_forward']
    dense = m.net.model
    count = Counter(backbone=dense.backbone, depth=dense.depth_neck, seg=dense.segmentation_neck,
                    normals=dense.normals_neck)
    scenes = [synthetic_scene(96, 72, t=0.1 * i) for i in range(2)]
    frames = [Frame(s.rgb, 'rgb8') for s in scenes]
    intrs = [s.intrinsics for s in scenes]
    try:
        both = pipe.process_batch(frames, intrs, {'depth', 'labels', 'points'})
        assert count.calls == {'backbone': 1, 'depth': 1, 'seg': 1, 'normals': 0}
        assert pipe.forwards == 1
        only_labels = pipe.process_batch(frames, intrs, {'labels'})
        assert count.calls == {'backbone': 2, 'depth': 1, 'seg': 2, 'normals': 0}
        pipe.process_batch(frames, intrs, {'normals'})  # normals from its head, no depth
        assert count.calls == {'backbone': 3, 'depth': 1, 'seg': 2, 'normals': 1}
    finally:
        count.close()
    assert pipe.forwards == 3
    for r, lab in zip(both, only_labels):
        assert set(r.arrays) == {'depth', 'labels', 'points'}
        assert np.array_equal(r.arrays['labels'], lab.arrays['labels'])
    # What one forward gives equals what each single-task class of the checkpoint gives.
    tips = str(checkpoints('tiny-tipsv2'))
    alone = Pipeline(Config().replace({'model.depth': tips, 'model.device': 'cpu',
                                       'normals.source': 'depth'}), **QUIET)
    assert type(alone.depth_model.net.model).__name__ == 'Tipsv2DptForDepthEstimation'
    single = alone.process_batch(frames, intrs, {'depth'})
    for r, s in zip(both, single):
        assert np.allclose(r.arrays['depth'], s.arrays['depth'], rtol=1e-5, atol=1e-6,
                           equal_nan=True)


def test_asked_heads_equal_the_full_forward(checkpoints):
    pipe = tips_pipe(checkpoints)
    m = pipe.depth_model
    assert m.heads == (HEAD_DEPTH, HEAD_SEGMENTATION, HEAD_NORMALS)
    pv = Preprocessor(m.spec)(to_rgb(torch.from_numpy(synthetic_scene(80, 60).rgb)[None],
                                     'rgb8'))
    with torch.no_grad():
        full = m(pv)
        for asked in ((HEAD_SEGMENTATION,), (HEAD_DEPTH, HEAD_NORMALS), (HEAD_NORMALS,)):
            some = m(pv, heads=asked)
            for h, a, b in zip(m.heads, full, some):
                if h in asked:
                    assert torch.equal(a, b), (asked, h)
                else:
                    assert b is None, (asked, h)


def plane_pipe(intr: Intrinsics, **extra) -> Pipeline:
    depth = plane_depth(intr)
    cfg = Config().replace(dict({'model.depth': 'plane', 'model.device': 'cpu',
                                 'depth.max': 50.0}, **extra))
    return Pipeline(cfg, depth_model=plane_model(depth), **QUIET)


def test_normals_from_depth_are_the_rendered_planes_in_the_optical_frame():
    intr = default_intrinsics(80, 60)
    pipe = plane_pipe(intr, **{'points.normals': True, 'points.organized': False})
    assert pipe.normals_source() == 'depth'
    s = synthetic_scene(80, 60)
    r = pipe.process(Frame(s.rgb, 'rgb8'), intr, {'normals', 'normals_colored', 'points'})
    n = r.arrays['normals']
    assert n.shape == (60, 80, 3) and n.dtype == np.float32
    ok = np.isfinite(n).all(-1)
    assert ok.all()  # a plane filling the view: a normal at every pixel
    assert np.allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)
    assert np.degrees(np.arccos(np.clip(n @ PLANE_NORMAL, -1, 1))).max() < 0.05
    assert np.array_equal(r.arrays['normals_colored'],
                          np.round((n + 1) * 127.5).clip(0, 255).astype(np.uint8))
    # The cloud's normal fields, by name, are the same normals (dense: every point valid).
    fields = dict(encode(r, EncodeOptions(), {'points'}))
    cloud = next(iter(fields.values()))
    names = [f[0] for f in cloud['fields']]
    assert names == ['x', 'y', 'z', 'rgb'] + list(nm.NORMAL_FIELDS)
    assert cloud['point_step'] == 32 and cloud['height'] == 1 and cloud['width'] == 80 * 60
    # Without camera_info there is no geometry and so no normals from depth.
    none = pipe.process(Frame(s.rgb, 'rgb8'), None, {'normals', 'normals_colored'})
    assert not none.arrays


def test_normals_source_head_needs_a_head_and_the_table_knows_it(checkpoints):
    with pytest.raises(ConfigError, match='no normals head'):
        Pipeline(Config().replace({'model.depth': str(checkpoints('tiny-depth-anything')),
                                   'model.device': 'cpu', 'normals.source': 'head'}), **QUIET)
    # normals.source depth: the head is not even loaded, normals come from depth.
    pipe = tips_pipe(checkpoints, **{'normals.source': 'depth'})
    assert HEAD_NORMALS not in pipe.depth_model.heads and pipe.normals_source() == 'depth'


def test_head_normals_are_unit_vectors_at_camera_resolution(checkpoints):
    pipe = tips_pipe(checkpoints)
    assert pipe.normals_source() == 'head'
    s = synthetic_scene(90, 70)
    r = pipe.process(Frame(s.rgb, 'rgb8'), None, {'normals'})
    n = r.arrays['normals']
    assert n.shape == (70, 90, 3) and np.isfinite(n).all()
    assert np.allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)
    # The head's own post-processing (L2 normalised, bilinear) mapped to the optical frame.
    m = pipe.depth_model
    pv = Preprocessor(m.spec)(to_rgb(torch.from_numpy(s.rgb)[None], 'rgb8'))
    with torch.no_grad():
        raw = m(pv)[m.index(HEAD_NORMALS)]
    head = nm.resize_head_normals(raw, (70, 90)).permute(0, 2, 3, 1)[0]
    assert np.allclose(n, -nm.unit(head).numpy(), atol=1e-5)  # optical = -head (TIPSv2)


def semantic_pipe(checkpoints, **extra):
    cfg = Config().replace(dict({'model.depth': str(checkpoints('tiny-depth-anything')),
                                 'model.segmentation': str(checkpoints('tiny-seg')),
                                 'model.device': 'cpu', 'depth.max': 9.99}, **extra))
    return Pipeline(cfg, **QUIET)


def test_semantic_cloud_labels_exclusion_and_class_colours(checkpoints):
    pipe = semantic_pipe(checkpoints)
    s = synthetic_scene(96, 72)
    frame = Frame(s.rgb, 'rgb8')
    base = pipe.process(frame, s.intrinsics, {'points', 'labels', 'seg_colored', 'depth'})
    labels = base.arrays['labels']
    present = np.unique(labels)
    assert present.size >= 2, 'the check needs at least two classes in the frame'
    drop = int(present[np.argmax([np.sum(labels == c) for c in present])])
    name = pipe.labels[drop]

    def cloud(r):
        (_, fields), = encode(r, EncodeOptions(), {'points'})
        return read_points(SimpleNamespace(**dict(fields, fields=[
            SimpleNamespace(name=n, offset=o, datatype=t, count=c)
            for n, o, t, c in fields['fields']])))

    pts = cloud(base)
    assert pts.dtype.names == ('x', 'y', 'z', 'rgb', LABEL_FIELD)
    assert pts.dtype[LABEL_FIELD] == np.dtype('<u4')
    assert np.array_equal(pts[LABEL_FIELD], labels.astype(np.uint32))
    valid = np.isfinite(base.arrays['depth'])
    pipe.update(pipe.config.replace({'points.exclude_classes': (name.upper(),)}))
    r = pipe.process(frame, s.intrinsics, {'points'})
    organized = cloud(r)
    gone = np.isnan(organized['z'])
    # Exactly the pixels of that class are dropped; every other valid pixel stays.
    assert np.array_equal(gone, ~valid | (labels == drop))
    pipe.update(pipe.config.replace({'points.exclude_classes': (str(drop),),
                                     'points.organized': False, 'points.colour': 'label'}))
    r = pipe.process(frame, s.intrinsics, {'points'})
    dense = cloud(r)
    keep = valid & (labels != drop)
    assert dense.shape == (1, int(keep.sum()))
    assert np.array_equal(dense[LABEL_FIELD][0], labels[keep])
    colours = post.label_palette(len(pipe.labels))[labels[keep]]
    packed = dense['rgb'][0].view(np.uint32)
    assert np.array_equal(np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255],
                                   -1).astype(np.uint8), colours)
    pipe.update(pipe.config.replace({'points.labels': False, 'points.exclude_classes': (),
                                     'points.colour': 'rgb'}))
    r = pipe.process(frame, s.intrinsics, {'points'})
    assert r.points_extra == () and r.arrays['points'].shape[1] == 4


def test_a_live_update_never_swaps_the_classes_a_frame_excludes(checkpoints):
    """The node's update (executor thread) lands while a frame looks up its classes (worker).

    The frame's settings exclude class 1; the update, to class 2, came between the two reads
    of the lookup: the frame must still exclude class 1, not the update's class 2.
    """
    pipe = semantic_pipe(checkpoints)
    own, other = (pipe.config.replace({'points.exclude_classes': (c,)}) for c in ('1', '2'))
    assert pipe.excluded_ids(own).tolist() == [1]
    landed = []

    class Meanwhile(tuple):
        def __getitem__(self, i):
            if i == 0 and not landed:
                landed.append(True)
                pipe.update(other)
            return tuple.__getitem__(self, i)
    pipe._excluded = Meanwhile(pipe._excluded)
    assert pipe.excluded_ids(own).tolist() == [1]
    assert landed and pipe.config.points.exclude_classes == ('2',)
    assert pipe.excluded_ids(other).tolist() == [2]


def test_semantic_settings_that_cannot_work_are_refused(checkpoints):
    pipe = semantic_pipe(checkpoints)
    with pytest.raises(ConfigError, match="'sky' is not a class"):
        pipe.update(pipe.config.replace({'points.exclude_classes': ('sky',)}))
    with pytest.raises(ConfigError, match='needs a segmentation model'):
        Pipeline(Config().replace({'model.depth': str(checkpoints('tiny-depth-anything')),
                                   'model.device': 'cpu', 'points.colour': 'label'}), **QUIET)


def test_depth_normals_use_the_rays_of_the_camera(checkpoints):
    """Normals from depth back-project each pixel along its camera_info ray (the same grid)."""
    intr = default_intrinsics(64, 48)
    pipe = plane_pipe(intr)
    depth = plane_depth(intr)
    expect = nm.depth_normals(torch.from_numpy(depth)[None],
                              torch.from_numpy(ray_grid(intr)[0]))[0].numpy()
    r = pipe.process(Frame(synthetic_scene(64, 48).rgb, 'rgb8'), intr, {'normals'})
    assert np.array_equal(r.arrays['normals'], expect, equal_nan=True)


def scene_anchors(scene, n, rng, extra=()):
    """Return Anchors at n random pixels of a scene's true depth, plus (u, v, z) extras."""
    h, w = scene.depth.shape
    pick = rng.choice(np.flatnonzero(np.isfinite(scene.depth.reshape(-1))), n, replace=False)
    u, v, z = list(pick % w), list(pick // w), list(scene.depth.reshape(-1)[pick])
    for eu, ev, ez in extra:
        u.append(eu)
        v.append(ev)
        z.append(ez)
    return Anchors(np.array(u, np.float32), np.array(v, np.float32), np.array(z, np.float32))


def test_prompt_depth_anything_takes_the_anchors_as_its_prompt(checkpoints):
    from transformers.models.prompt_depth_anything.image_processing_pil_prompt_depth_anything \
        import PromptDepthAnythingImageProcessorPil
    pda = str(checkpoints('tiny-prompt-depth-anything'))
    base = {'model.depth': pda, 'model.device': 'cpu', 'depth.max': 9.99}
    with pytest.raises(ModelLoadError, match='prompt'):
        Pipeline(Config().replace(base), **QUIET)
    pipe = Pipeline(Config().replace(dict(base, **{'anchors.source': 'depth_image'})), **QUIET)
    m = pipe.depth_model
    assert pipe.prompted and pipe.uses_anchors() and pipe.depth_mode() == 'metric'
    fed, raw = [], []

    def keep(_mod, args, out):
        fed.append(args[1].clone())
        raw.append(out.clone())

    h1 = m.net.register_forward_hook(keep)
    rng = np.random.default_rng(5)
    scenes = [synthetic_scene(96, 72, t=0.1 * i) for i in range(3)]
    size = scenes[0].depth.shape
    # A stray far return and one too near: clamped to [depth.min, depth.max] first.
    anchors = [scene_anchors(s, 300, rng, [(3, 4, 80.0), (50, 40, 0.01)]) for s in scenes[:2]]

    def clamped(a):
        return Anchors(a.u, a.v, np.clip(a.z, 0.1, 9.99))

    proc = PromptDepthAnythingImageProcessorPil()
    try:
        r0 = pipe.process(Frame(scenes[0].rgb, 'rgb8'), scenes[0].intrinsics, anchors=anchors[0],
                          source='cam', stamp=10.0)
        # The first frame of a camera: push-pull filled anchors, prepared as the processor does.
        dense, has = pr.dense_prompt([clamped(anchors[0])], size, torch.device('cpu'))
        want = proc(images=scenes[0].rgb, prompt_depth=dense[0].numpy(),
                    prompt_scale_to_meter=1.0, return_tensors='pt')['prompt_depth']
        assert has == [True] and torch.equal(fed[0], want)
        assert r0.notes['prompt'] == '302 anchors' and 'depth' in r0.arrays
        # The next frame: filled between its anchors by the previous output of that camera.
        pipe.process(Frame(scenes[1].rgb, 'rgb8'), scenes[1].intrinsics, anchors=anchors[1],
                     source='cam', stamp=10.1)
        guide = post.resize_depth(raw[0], size, m.spec.placement(*size), m.spec.output_resample)
        dense, _ = pr.dense_prompt([clamped(anchors[1])], size, torch.device('cpu'), guide=guide)
        assert torch.equal(fed[1], prompt_depth(dense))
        assert not torch.equal(fed[1], prompt_depth(pr.dense_prompt(
            [clamped(anchors[1])], size, torch.device('cpu'))[0]))
        # No anchors: no prompt, no forward, no depth of any kind.
        forwards = pipe.forwards
        r2 = pipe.process(Frame(scenes[2].rgb, 'rgb8'), scenes[2].intrinsics, source='cam',
                          stamp=10.2)
        assert pipe.forwards == forwards and not r2.arrays
        assert r2.notes['prompt'].startswith('none') and any('no anchors' in w
                                                             for w in r2.warnings)
        # In one batch, the frame with anchors gets depth, the one without none.
        both = pipe.process_batch([Frame(s.rgb, 'rgb8') for s in scenes[:2]],
                                  [s.intrinsics for s in scenes[:2]], {'depth', 'points'},
                                  anchors=[anchors[0], None], sources=['a', 'b'],
                                  stamps=[11.0, 11.0])
        assert set(both[0].arrays) == {'depth', 'points'} and not both[1].arrays
    finally:
        h1.remove()


def test_a_forward_never_runs_a_head_the_model_was_not_loaded_for(checkpoints):
    """Depth and labels of TIPSv2-DPT (normals from depth): its normals neck never runs."""
    pipe = tips_pipe(checkpoints, **{'normals.source': 'depth'})
    m = pipe.depth_model
    assert m.heads == (HEAD_DEPTH, HEAD_SEGMENTATION)
    assert type(m.net.model).__name__ == 'Tipsv2DptForDensePrediction'  # the class with all
    dense = m.net.model
    count = Counter(normals=dense.normals_neck, seg=dense.segmentation_neck)
    s = synthetic_scene(80, 60)
    try:
        pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics, {'depth', 'labels', 'normals'})
        pipe.forward(m, pipe.pixel_values(m, Frame(s.rgb, 'rgb8')))
    finally:
        count.close()
    assert count.calls == {'normals': 0, 'seg': 2}


def test_multi_head_frames_of_two_sizes_share_one_forward_as_alone(checkpoints):
    """TIPSv2-DPT (a fixed network input): a 96x72 and a 128x72 frame, one forward of both.

    The heads it skips (normals here) come back as None and are split like the others; each
    frame gets what it gets alone.
    """
    pipe = tips_pipe(checkpoints, **{'depth.temporal': False})
    scenes = [synthetic_scene(96, 72), synthetic_scene(128, 72, t=0.3)]
    frames = [Frame(s.rgb, 'rgb8') for s in scenes]
    intrs = [s.intrinsics for s in scenes]
    assert pipe.batch_key(frames[0]) == pipe.batch_key(frames[1])
    dense = pipe.depth_model.net.model
    count = Counter(backbone=dense.backbone, normals=dense.normals_neck)
    try:
        both = pipe.process_batch(frames, intrs, {'depth', 'labels'})
        assert count.calls == {'backbone': 1, 'normals': 0} and pipe.forwards == 1
    finally:
        count.close()
    for f, intr, r in zip(frames, intrs, both):
        one = pipe.process(f, intr, {'depth', 'labels'})
        assert r.arrays['depth'].shape == (f.height, f.width)
        assert np.array_equal(r.arrays['labels'], one.arrays['labels'])
        assert np.allclose(r.arrays['depth'], one.arrays['depth'], rtol=1e-5, atol=0,
                           equal_nan=True)


def test_prompt_depth_anything_in_half_precision_keeps_a_constant_prompt_finite(checkpoints):
    """One anchor (or all clamped to depth.max) makes a constant prompt; fp16 must not NaN it.

    The model divides the prompt by its range: prompt_depth's 1e-6 nudge survives float32
    but not fp16 (the default on CUDA) or bf16. Run here on the CPU in fp16; depth/relative
    (1 / metres, no depth.min / max cut) shows the whole map.
    """
    pda = str(checkpoints('tiny-prompt-depth-anything'))
    pipe = Pipeline(Config().replace({'model.depth': pda, 'model.device': 'cpu',
                                      'depth.max': 9.99, 'depth.mode': 'relative_inverse',
                                      'depth.temporal': False, 'anchors.source': 'depth_image'}),
                    **QUIET)
    m = pipe.depth_model
    m.net.half()
    m.dtype = torch.float16
    s = synthetic_scene(96, 72)
    for z in ((2.5,), (30.0, 40.0)):  # one anchor; two beyond depth.max, both clamped
        a = Anchors(np.array([40.0, 60.0][:len(z)], np.float32),
                    np.array([30.0, 20.0][:len(z)], np.float32), np.array(z, np.float32))
        r = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics, {'relative'}, anchors=a,
                         source=str(z), stamp=1.0)
        rel = r.arrays['relative']
        assert np.isfinite(rel).all(), z
        assert np.allclose(1.0 / rel, min(z[0], 9.99), rtol=0.01), z
    for dtype in (torch.float16, torch.bfloat16):
        flat = prompt_depth(torch.full((2, 6, 8), 2.5))
        cast = prompt_as(flat, dtype)
        assert cast.dtype == dtype and bool((cast[:, 0, 0] > cast[:, 0, 1]).all())
        assert torch.equal(cast[:, :, 1:], flat[:, :, 1:].to(dtype))
        varied = prompt_depth(torch.rand((2, 6, 8)) + 1.0)
        assert torch.equal(prompt_as(varied, dtype), varied.to(dtype))
    assert torch.equal(prompt_as(flat, torch.float32), flat)
