# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Dense outputs through the node over DDS: one forward, normals, semantic clouds, prompts.

Also Depth Pro's metres from camera_info's focal length.
"""

import time

import numpy as np
import pytest
import torch

from dpt_ros.core import conversions as conv
from dpt_ros.core import normals as nm
from dpt_ros.core import postprocess as post
from dpt_ros.core import prompt as pr
from dpt_ros.core.config import Config
from dpt_ros.core.conversions import Frame
from dpt_ros.core.metric import Anchors
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.tools.sample import default_intrinsics, synthetic_scene

from denseutil import (constant_normals_checkpoint, plane_depth, plane_model,  # noqa: I100
                       PLANE_NORMAL)
from rosutil import header  # noqa: I100

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402, I100
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from dpt_ros.ros import diagnostics as diag  # noqa: E402

NS = '/cam'


def node_values(harness, pred, timeout=20.0):
    """Wait for a /diagnostics message whose node values satisfy pred; return those values."""
    found = {}

    def check():
        for arr in reversed(harness.get('/diagnostics')):
            v = diag.values_of(arr.status)
            if v and pred(v):
                found.update(v)
                return True
        return False
    assert harness.wait(check, timeout), [diag.values_of(a.status)
                                          for a in harness.get('/diagnostics')[-2:]]
    return found


def send(harness, pubs, i, rgb, intr=None):
    """Publish frame i (with its camera_info when intr is given); return its stamp in ns."""
    h = header(i)
    if intr is not None:
        pubs[1].publish(conv.camera_info_from_intrinsics(intr, h))
    pubs[0].publish(conv.image_msg(h, rgb, 'rgb8'))
    return conv.stamp_ns(h)


def test_one_tipsv2_checkpoint_publishes_every_output_from_one_forward(harness, checkpoints):
    tips = str(checkpoints('tiny-tipsv2'))
    node = harness.start_node(NS, **{'model.depth': tips, 'model.segmentation': tips,
                                     'model.device': 'cpu', 'points.normals': True,
                                     'diagnostics.period': 0.2})
    pipe = node.pipeline
    assert pipe.depth_model is pipe.seg_model
    passes = []
    hook = pipe.depth_model.net.model.backbone.register_forward_hook(
        lambda *_a: passes.append(1))
    topics = ['depth/image', 'segmentation/image', 'normals/image', 'points']
    harness.record_outputs(NS, topics)
    harness.record('/diagnostics', DiagnosticArray)
    pubs = harness.publishers(NS)
    assert harness.wait_subscribed(pubs[0])
    harness.wait(lambda: all(node.cameras[0].subscribed(n) for n in
                             ('depth', 'labels', 'normals', 'points')), 10)
    try:
        for i in range(3):
            s = synthetic_scene(96, 72, t=0.1 * i)
            stamp = send(harness, pubs, i, s.rgb, s.intrinsics)
            got = {t: harness.wait_stamp(f'{NS}/{t}', stamp) for t in topics}
    finally:
        hook.remove()
    values = node_values(harness, lambda v: v.get('batches') == '3')
    # Depth, labels and normals of every frame came from one backbone pass each.
    assert values['forwards'] == '3' and len(passes) == 3
    assert 'one forward' in values['shared_forward'] and values['normals_source'] == 'head'
    labels = conv.image_to_array(got['segmentation/image'])
    normals = conv.image_to_array(got['normals/image'])
    assert got['normals/image'].encoding == '32FC3' and normals.shape == (72, 96, 3)
    assert np.allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-5)
    cloud = conv.read_points(got['points'])  # fields by name, as sensor_msgs_py reads them
    assert cloud.dtype.names == ('x', 'y', 'z', 'rgb') + nm.NORMAL_FIELDS + ('label',)
    assert got['points'].point_step == 32 and cloud.shape == (72, 96)
    assert np.array_equal(cloud['label'], labels.astype(np.uint32))
    stacked = np.stack([cloud[n] for n in nm.NORMAL_FIELDS], -1)
    assert np.array_equal(stacked, normals)


def test_normals_from_depth_of_a_rendered_plane_over_dds(harness):
    intr = default_intrinsics(80, 60)
    cfg = Config().replace({'model.depth': 'plane', 'model.device': 'cpu', 'depth.max': 50.0})
    pipe = Pipeline(cfg, log=lambda _m: None, depth_model=plane_model(plane_depth(intr)))
    harness.start_node(NS, pipeline=pipe, **{'model.depth': 'plane', 'model.device': 'cpu',
                                             'depth.max': 50.0, 'points.normals': True})
    topics = ['normals/image', 'normals/colored', 'points']
    harness.record_outputs(NS, topics)
    pubs = harness.publishers(NS)
    assert harness.wait_subscribed(pubs[0])
    stamp = send(harness, pubs, 0, synthetic_scene(80, 60).rgb, intr)
    got = {t: harness.wait_stamp(f'{NS}/{t}', stamp) for t in topics}
    n = conv.image_to_array(got['normals/image'])
    assert np.isfinite(n).all(), 'a plane filling the view has a normal at every pixel'
    assert np.allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)
    # The plane's normal in the optical frame (x right, y down, z forward), facing the camera.
    angle = np.degrees(np.arccos(np.clip(n @ PLANE_NORMAL, -1.0, 1.0)))
    assert angle.max() < 0.05
    colored = conv.image_to_array(got['normals/colored'])
    assert np.array_equal(colored, np.round((n + 1) * 127.5).astype(np.uint8))
    cloud = conv.read_points(got['points'])
    assert np.array_equal(np.stack([cloud[f] for f in nm.NORMAL_FIELDS], -1), n)


def test_a_normals_head_answers_in_the_optical_frame_over_dds(harness, checkpoints, tmp_path):
    """A head that says 'wall facing the camera' in TIPSv2's axes publishes the optical normal."""
    head = np.array([0.26, -0.2, 0.94]) / np.linalg.norm([0.26, -0.2, 0.94])
    ckpt = constant_normals_checkpoint(checkpoints('tiny-tipsv2'), tmp_path / 'wall', head)
    harness.start_node(NS, **{'model.depth': str(ckpt), 'model.device': 'cpu',
                              'normals.source': 'head'})
    harness.record_outputs(NS, ['normals/image'])
    pubs = harness.publishers(NS)
    assert harness.wait_subscribed(pubs[0])
    # No camera_info needed: the head gives normals without any geometry.
    stamp = send(harness, pubs, 0, synthetic_scene(90, 70).rgb)
    n = conv.image_to_array(harness.wait_stamp(f'{NS}/normals/image', stamp))
    assert n.shape == (70, 90, 3)
    assert np.allclose(n, -head, atol=1e-5)  # facing the camera: z < 0 in the optical frame


def test_excluded_classes_drop_exactly_their_points_over_dds(harness, tiny_metric, tiny_seg):
    node = harness.start_node(NS, **{'model.depth': str(tiny_metric),
                                     'model.segmentation': str(tiny_seg), 'model.device': 'cpu',
                                     'depth.max': 9.99})
    topics = ['points', 'segmentation/image', 'depth/image']
    harness.record_outputs(NS, topics)
    pubs = harness.publishers(NS)
    assert harness.wait_subscribed(pubs[0])
    s = synthetic_scene(96, 72)

    def frame(i):
        stamp = send(harness, pubs, i, s.rgb, s.intrinsics)
        got = {t: harness.wait_stamp(f'{NS}/{t}', stamp) for t in topics}
        return (conv.read_points(got['points']), conv.image_to_array(got['segmentation/image']),
                np.isfinite(conv.image_to_array(got['depth/image'])))

    cloud, labels, valid = frame(0)
    assert np.array_equal(cloud['label'], labels.astype(np.uint32))
    present = np.unique(labels[valid])
    assert present.size >= 2, 'the check needs two classes among the valid pixels'
    drop = int(present[np.argmax([np.sum((labels == c) & valid) for c in present])])
    name = node.get_parameter('segmentation.class_names').value[drop]
    ok = node.set_parameters([Parameter('points.exclude_classes', value=[name])])
    assert ok[0].successful, ok[0].reason
    cloud, labels, valid = frame(1)
    assert np.array_equal(np.isnan(cloud['z']), ~valid | (labels == drop))
    assert node.set_parameters([Parameter('points.organized', value=False),
                                Parameter('points.colour', value='label')])[0].successful
    cloud, labels, valid = frame(2)
    keep = valid & (labels != drop)
    assert cloud.shape == (1, int(keep.sum())) and (cloud['label'] != drop).all()
    assert np.array_equal(cloud['label'][0], labels[keep])
    palette = post.label_palette(5)
    assert np.array_equal(conv.unpack_rgb(cloud['rgb'][0]), palette[labels[keep]])
    bad = node.set_parameters([Parameter('points.exclude_classes', value=['sky'])])[0]
    assert not bad.successful and "'sky' is not a class" in bad.reason


def test_depth_pro_metres_from_camera_info_or_its_field_of_view_over_dds(harness, checkpoints):
    params = {'model.depth': str(checkpoints('tiny-depth-pro')), 'model.device': 'cpu',
              'depth.min': 0.0, 'depth.max': 1e4, 'diagnostics.period': 0.2}
    harness.start_node(NS, **params)
    harness.record_outputs(NS, ['depth/image'])
    harness.record('/diagnostics', DiagnosticArray)
    pubs = harness.publishers(NS)
    assert harness.wait_subscribed(pubs[0])
    s = synthetic_scene(96, 72)
    ref = Pipeline(Config().replace(params), log=lambda _m: None)
    # No camera_info yet: the predicted field of view gives the focal length.
    stamp = send(harness, pubs, 0, s.rgb)
    fov = conv.image_to_array(harness.wait_stamp(f'{NS}/depth/image', stamp))
    want = ref.process(Frame(s.rgb, 'rgb8'), None, {'depth'})
    assert np.array_equal(fov, want.arrays['depth'], equal_nan=True)
    values = node_values(harness, lambda v: v.get('frames_processed') == '1')
    assert values['focal_source'] == 'predicted_fov'
    # With camera_info: its fx, said on /diagnostics.
    stamp = send(harness, pubs, 1, s.rgb, s.intrinsics)
    cam = conv.image_to_array(harness.wait_stamp(f'{NS}/depth/image', stamp))
    want = ref.process(Frame(s.rgb, 'rgb8'), s.intrinsics, {'depth'})
    assert np.array_equal(cam, want.arrays['depth'], equal_nan=True)
    values = node_values(harness, lambda v: v.get('frames_processed') == '2')
    assert values['focal_source'] == 'camera_info'
    assert float(values['focal_px']) == pytest.approx(s.intrinsics.fx, abs=1e-4)


def prompted_node(harness, checkpoints, **extra):
    """Start a Prompt Depth Anything node fed depth-image anchors.

    Return it, the prompts its network receives (a list a forward hook fills), the hook, and
    the image, camera_info and anchor publishers (subscribed).
    """
    node = harness.start_node(NS, **{
        'model.depth': str(checkpoints('tiny-prompt-depth-anything')), 'model.device': 'cpu',
        'anchors.source': 'depth_image', 'depth.max': 9.99, **extra})
    fed = []
    hook = node.pipeline.depth_model.net.register_forward_pre_hook(
        lambda _m, args: fed.append(args[1].clone()))
    harness.record_outputs(NS, ['depth/image'])
    pubs = harness.publishers(NS)
    anchors_pub = harness.node.create_publisher(Image, f'{NS}/anchors/depth', 5)
    assert harness.wait_subscribed(pubs[0]) and harness.wait_subscribed(anchors_pub)
    return node, fed, hook, pubs, anchors_pub


def test_prompt_depth_anything_prompt_is_the_processors_for_the_anchors(harness, checkpoints):
    from transformers.models.prompt_depth_anything.image_processing_pil_prompt_depth_anything \
        import PromptDepthAnythingImageProcessorPil
    node, fed, hook, pubs, anchors_pub = prompted_node(
        harness, checkpoints, **{'diagnostics.period': 0.2})
    harness.record('/diagnostics', DiagnosticArray)
    cam = node.cameras[0]
    s = synthetic_scene(96, 72)
    rng = np.random.default_rng(2)
    sparse = np.full(s.depth.shape, np.nan, np.float32)
    pick = rng.choice(np.flatnonzero(np.isfinite(s.depth)), 300, replace=False)
    sparse.flat[pick] = s.depth.flat[pick]
    sparse.flat[pick[0]] = 60.0  # a stray far return: clamped to depth.max before the fill

    def frame(i, with_anchors):
        h = header(i)
        if with_anchors:
            n = cam.anchors.messages
            anchors_pub.publish(conv.image_msg(h, sparse, '32FC1'))
            assert harness.wait(lambda: cam.anchors.messages > n, 10)
        pubs[1].publish(conv.camera_info_from_intrinsics(s.intrinsics, h))
        pubs[0].publish(conv.image_msg(h, s.rgb, 'rgb8'))
        return conv.stamp_ns(h)

    try:
        depth = harness.wait_stamp(f'{NS}/depth/image', frame(0, True))
        assert len(fed) == 1
        v, u = np.divmod(np.flatnonzero(np.isfinite(sparse)), 96)
        z = np.clip(sparse[v, u], 0.1, 9.99)
        anchors = Anchors(u.astype(np.float32), v.astype(np.float32), z)
        dense, has = pr.dense_prompt([anchors], (72, 96), torch.device('cpu'))
        want = PromptDepthAnythingImageProcessorPil()(
            images=s.rgb, prompt_depth=dense[0].numpy(), prompt_scale_to_meter=1.0,
            return_tensors='pt')['prompt_depth']
        assert has == [True] and torch.equal(fed[0], want)
        assert np.isfinite(conv.image_to_array(depth)).mean() > 0.5
        # No anchors near this frame's stamp: no prompt, no forward, no depth.
        missed = frame(50, False)
        values = node_values(harness, lambda v: v.get('frames_processed') == '2')
        assert values['prompt'].startswith('none') and len(fed) == 1
        harness.wait_stamp(f'{NS}/depth/image', frame(51, True))
        assert missed not in {conv.stamp_ns(m.header) for m in
                              harness.get(f'{NS}/depth/image')}
    finally:
        hook.remove()


def test_a_prompted_frame_waits_for_its_own_prompt_as_dpt_bag_pairs(harness, checkpoints):
    """An aligned depth image comes after its colour frame: the frame waits for it.

    Issue: the wait for the anchor message stamped at or after a frame held frames only in
    depth.mode fitted; Prompt Depth Anything's frames took the previous frame's depth as their
    prompt (dpt_bag, on the same recording, pairs each frame with its own).
    """
    node, fed, hook, pubs, anchors_pub = prompted_node(
        harness, checkpoints, **{'anchors.max_age': 1.5})
    cam = node.cameras[0]
    s = synthetic_scene(96, 72)
    near = np.where(np.isfinite(s.depth), s.depth, np.nan).astype(np.float32)
    stamps = [header(0), header(0)]
    stamps[1].stamp.nanosec += 300_000_000  # 0.3 s later: within anchors.max_age of the first

    def anchors_for(h, scale):
        n = cam.anchors.messages
        anchors_pub.publish(conv.image_msg(h, near * scale, '32FC1'))
        assert harness.wait(lambda: cam.anchors.messages > n, 10)

    def image(h):
        pubs[1].publish(conv.camera_info_from_intrinsics(s.intrinsics, h))
        pubs[0].publish(conv.image_msg(h, s.rgb, 'rgb8'))

    try:
        anchors_for(stamps[0], 0.7)
        image(stamps[0])
        harness.wait_stamp(f'{NS}/depth/image', conv.stamp_ns(stamps[0]))
        image(stamps[1])  # its depth image comes 0.3 s after it, twice as far
        time.sleep(0.3)
        anchors_for(stamps[1], 1.4)
        harness.wait_stamp(f'{NS}/depth/image', conv.stamp_ns(stamps[1]))
        assert len(fed) == 2
        # The prompts in metres: the second is its own depth image, not the first frame's.
        first, second = (float(p[torch.isfinite(p) & (p > 0)].mean()) for p in fed)
        assert second == pytest.approx(2.0 * first, rel=0.05), (first, second)
    finally:
        hook.remove()
