# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Many cameras, one model, over real DDS: topic names, fair share, batching, sizes, remaps."""

import threading
import time

import numpy as np
import pytest

from dpt_ros.core import conversions as conv
from dpt_ros.tools.sample import synthetic_scene
from dpt_ros.tools.toolkit import write_params_file

from rosutil import Harness, header, NodeProcess, stamp_of  # noqa: I100

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402, I100
from rcl_interfaces.msg import Log  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from dpt_ros.ros import diagnostics  # noqa: E402

NS = '/robot'


def start(harness, cameras, **params):
    """Start a DptNode in the harness Context under NS serving these cameras; spin both."""
    return harness.start_node(NS, cameras=cameras, **params)


def spy_batches(node, sources=None):
    """Record the number of frames (and the sources) of every forward the node runs."""
    sizes = []
    real = node.pipeline.process_batch

    def spy(frames, intrs, want, **kwargs):
        sizes.append(len(frames))
        if sources is not None:
            sources.append(list(kwargs['sources']))
        return real(frames, intrs, want, **kwargs)
    node.pipeline.process_batch = spy
    return sizes


def camera_statuses(harness):
    """Latest per-camera /diagnostics values of the node, by camera name."""
    out = {}
    for arr in harness.get('/diagnostics'):
        out.update(diagnostics.camera_values(arr.status))
    return out


def test_cameras_at_different_rates_and_sizes_share_one_model_fairly(harness, tiny_metric):
    # The tiny model keeps up with all three cameras here: every frame should be served.
    node = start(harness, ['front', 'rear', 'side'], **{
        'model.depth': str(tiny_metric), 'model.device': 'cpu', 'batch.max_size': 4,
        'batch.max_wait_ms': 20.0})
    sizes = spy_batches(node)
    rates = {'front': 30.0, 'rear': 5.0, 'side': 10.0}
    scenes = {'front': synthetic_scene(64, 48), 'rear': synthetic_scene(64, 48),
              'side': synthetic_scene(96, 72)}
    pubs = {c: harness.publishers(f'{NS}/{c}') for c in rates}
    for c in rates:
        harness.record_outputs(f'{NS}/{c}', ['depth/image', 'points'])
    harness.record(f'{NS}/depth/image', Image)
    harness.record('/diagnostics', DiagnosticArray)
    for img, _ in pubs.values():
        assert harness.wait_subscribed(img)
    harness.wait(lambda: False, 1.0)  # every output subscription matched
    sent = {c: [] for c in rates}
    duration = 4.0

    def camera(c, index):
        img, info = pubs[c]
        s = scenes[c]
        period = 1.0 / rates[c]
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < duration:
            h = header(1000 * index + i, frame_id=f'{c}_optical')
            info.publish(conv.camera_info_from_intrinsics(s.intrinsics, h))
            img.publish(conv.image_msg(h, s.rgb, 'rgb8'))
            sent[c].append(conv.stamp_ns(h))
            i += 1
            time.sleep(max(0.0, t0 + i * period - time.monotonic()))
    threads = [threading.Thread(target=camera, args=(c, k)) for k, c in enumerate(rates)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    harness.wait(lambda: False, 2.0)  # the last frames
    got = {}
    for c in rates:
        msgs = harness.get(f'{NS}/{c}/depth/image')
        clouds = harness.get(f'{NS}/{c}/points')
        got[c] = {stamp_of(m) for m in msgs}
        assert got[c] <= set(sent[c]), c  # each camera gets its own frames back, no others
        assert all(m.header.frame_id == f'{c}_optical' for m in msgs + clouds)
        s = scenes[c]
        assert all((m.height, m.width) == s.rgb.shape[:2] for m in msgs), c
    assert not harness.get(f'{NS}/depth/image')  # no single-camera topics
    # Fair share: the slow cameras lose (almost) nothing to the 30 Hz one.
    # Fair share: every camera keeps its newest frame in its own slot and every round takes
    # one from each camera that has one, so a slower camera never keeps a smaller fraction
    # of its frames than the 30 Hz one (on a loaded machine all of them lose some).
    kept = {c: len(got[c]) / len(sent[c]) for c in rates}
    for c in ('rear', 'side'):
        assert got[c] and kept[c] >= kept['front'], (c, kept, sizes)
    # Different sizes are never batched together: side (96x72) runs alone.
    assert sizes and max(sizes) <= 2, sizes
    # /diagnostics counts what was published (its next report, at most 1 s later).
    assert harness.wait(lambda: all(
        int(camera_statuses(harness).get(c, {}).get('frames_processed', -1)) == len(got[c])
        for c in rates), 5), (camera_statuses(harness), {c: len(g) for c, g in got.items()})
    status = camera_statuses(harness)
    for c in rates:
        assert float(status[c]['latency_p95_ms']) >= float(status[c]['latency_p50_ms']) > 0
        assert status[c]['input_topic'] == f'{NS}/{c}/image'


def test_frames_waiting_together_run_as_one_batch(harness, tiny_metric):
    node = start(harness, ['a', 'b'], **{'model.depth': str(tiny_metric), 'model.device': 'cpu',
                                         'batch.max_wait_ms': 500.0})
    sources = []
    sizes = spy_batches(node, sources)
    pubs = {c: harness.publishers(f'{NS}/{c}') for c in 'ab'}
    for c in 'ab':
        harness.record_outputs(f'{NS}/{c}', ['depth/image'])
        assert harness.wait_subscribed(pubs[c][0])
    harness.wait(lambda: False, 1.0)
    s = synthetic_scene(64, 48)
    for c in 'ab':  # a is held up to 500 ms for b
        pubs[c][0].publish(conv.image_msg(header(7), s.rgb, 'rgb8'))
    for c in 'ab':
        assert harness.wait(lambda c=c: harness.get(f'{NS}/{c}/depth/image'), 20), c
    assert sizes == [2]
    assert sorted(sources[0]) == ['a', 'b']  # each camera its own source (depth.temporal)
    # batch.max_size 1: cameras one at a time, live.
    node.set_parameters([Parameter('batch.max_size', value=1)])
    for c in 'ab':
        pubs[c][0].publish(conv.image_msg(header(8), s.rgb, 'rgb8'))
    for c in 'ab':
        assert harness.wait(lambda c=c: len(harness.get(f'{NS}/{c}/depth/image')) == 2, 20), c
    assert sizes == [2, 1, 1]


def test_one_cameras_undecodable_frame_costs_the_others_nothing(
        harness, tiny_metric, monkeypatch):
    """Any error decoding one camera's frame (OpenCV's own, say) is that frame's alone.

    Issue: only FrameError was caught per frame; another exception failed the whole batch,
    so every camera batched with the bad one lost its frame and was counted a bad frame.
    """
    from dpt_ros.core import frames
    real = frames.conv.decode_image

    def decode(msg):
        if msg.header.frame_id == 'broken':
            raise RuntimeError('a decoder error that is not a FrameError')
        return real(msg)
    monkeypatch.setattr(frames.conv, 'decode_image', decode)
    node = start(harness, ['good', 'bad'], **{'model.depth': str(tiny_metric),
                                              'model.device': 'cpu', 'batch.max_wait_ms': 300.0})
    sizes = spy_batches(node)
    pubs = {c: harness.publishers(f'{NS}/{c}') for c in ('good', 'bad')}
    for c in pubs:
        harness.record_outputs(f'{NS}/{c}', ['depth/image'])
        assert harness.wait_subscribed(pubs[c][0])
    harness.wait(lambda: False, 1.0)
    s = synthetic_scene(64, 48)
    for k in range(3):
        pubs['bad'][0].publish(conv.image_msg(header(30 + k, 'broken'), s.rgb, 'rgb8'))
        pubs['good'][0].publish(conv.image_msg(header(30 + k), s.rgb, 'rgb8'))
        harness.wait_stamp(f'{NS}/good/depth/image', conv.stamp_ns(header(30 + k)))
    cams = {c.name: c for c in node.cameras}
    assert harness.wait(lambda: cams['bad'].stats.errors == 3, 10)
    assert cams['good'].stats.errors == 0 and cams['good'].stats.processed == 3
    assert not harness.get(f'{NS}/bad/depth/image') and set(sizes) == {1}


def test_cameras_keep_their_frames_when_a_batch_runs_out_of_memory(harness, tiny_metric):
    """Three cameras, room on the device for one forward of one frame: none loses a frame.

    Before, the batch of three failed as a whole at every frame: every camera published
    nothing, forever, with an error per frame.
    """
    import torch
    node = start(harness, ['a', 'b', 'c'], **{'model.depth': str(tiny_metric),
                                              'model.device': 'cpu', 'batch.max_wait_ms': 500.0})
    harness.record('/rosout', Log, QoSProfile(depth=1000))
    run, sizes = node.pipeline.backends.run, []

    def short_of_memory(m, pv, *rest):
        sizes.append(len(pv))
        if len(pv) > 1:
            raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')
        return run(m, pv, *rest)
    node.pipeline.backends.run = short_of_memory
    pubs = {c: harness.publishers(f'{NS}/{c}') for c in 'abc'}
    for c in 'abc':
        harness.record_outputs(f'{NS}/{c}', ['depth/image'])
        assert harness.wait_subscribed(pubs[c][0])
    harness.wait(lambda: False, 1.0)
    s = synthetic_scene(64, 48)
    for k in range(2):
        for c in 'abc':  # published together: one batch of three (max_wait 500 ms)
            pubs[c][0].publish(conv.image_msg(header(40 + k), s.rgb, 'rgb8'))
        for c in 'abc':
            assert harness.wait_stamp(f'{NS}/{c}/depth/image', conv.stamp_ns(header(40 + k))), \
                (c, k, sizes)
    assert sizes[:4] == [3, 1, 1, 1] and set(sizes[4:]) == {1}  # no second failed try
    assert all(c.stats.errors == 0 for c in node.cameras)
    assert harness.wait(lambda: [m for m in harness.get('/rosout')
                                 if 'ran out of memory' in m.msg and m.level == Log.WARN], 10)


def test_cameras_of_two_sizes_share_a_forward_of_one_network_input(harness, checkpoints):
    """A 64x48 and a 96x48 camera, DPT (a fixed 64 x 64 network input): one forward.

    Each camera's output has its own size and is what its frame gives alone.
    """
    node = start(harness, ['a', 'b'], **{
        'model.depth': str(checkpoints('tiny-depth')), 'model.device': 'cpu',
        'batch.max_wait_ms': 500.0, 'depth.temporal': False})
    sizes = spy_batches(node)
    forwards = []
    run = node.pipeline.backends.run
    node.pipeline.backends.run = lambda m, pv, *rest: forwards.append(len(pv)) or \
        run(m, pv, *rest)
    scenes = {'a': synthetic_scene(64, 48), 'b': synthetic_scene(96, 48)}
    pubs = {c: harness.publishers(f'{NS}/{c}') for c in 'ab'}
    for c in 'ab':
        harness.record_outputs(f'{NS}/{c}', ['depth/relative'])
        assert harness.wait_subscribed(pubs[c][0])
    harness.wait(lambda: False, 1.0)
    for c in 'ab':  # a is held up to 500 ms for b
        pubs[c][0].publish(conv.image_msg(header(7), scenes[c].rgb, 'rgb8'))
    for c in 'ab':
        assert harness.wait(lambda c=c: harness.get(f'{NS}/{c}/depth/relative'), 20), c
    assert sizes == [2] and forwards == [2]
    del node.pipeline.process_batch  # the spies go: the class's own methods again
    node.pipeline.backends.run = run
    for c, s in scenes.items():
        msg, = harness.get(f'{NS}/{c}/depth/relative')
        got = conv.image_to_array(msg)
        assert got.shape == s.rgb.shape[:2], c
        alone = node.pipeline.process(conv.Frame(s.rgb, 'rgb8'), None, {'relative'})
        assert np.allclose(got, alone.arrays['relative'], rtol=1e-5, atol=0), c


def test_onnxruntime_builds_nothing_after_activation_at_any_batch_size(harness, checkpoints):
    """Four cameras under ONNX Runtime, batches of 1, 4, 2 and 3 frames: no build after start.

    What was built shows in /diagnostics (backend_builds, backend_builds_after_activation).
    """
    pytest.importorskip('onnxruntime', reason='onnxruntime is not installed')
    names = ['c0', 'c1', 'c2', 'c3']
    node = start(harness, names, **{
        'model.depth': str(checkpoints('tiny-depth')), 'model.device': 'cpu',
        'model.backend': 'onnxruntime', 'batch.max_size': 4, 'batch.max_wait_ms': 500.0})
    assert node.pipeline.depth_model.backend == 'onnxruntime'
    built = node.pipeline.backend_builds
    assert built.get('onnxruntime', 0) >= 1
    sizes = spy_batches(node)
    harness.record('/diagnostics', DiagnosticArray)
    pubs = {c: harness.publishers(f'{NS}/{c}') for c in names}
    for c in names:
        harness.record_outputs(f'{NS}/{c}', ['depth/relative'])
        assert harness.wait_subscribed(pubs[c][0])
    harness.wait(lambda: False, 1.0)
    s = synthetic_scene(64, 48)
    sent = dict.fromkeys(names, 0)
    for k, group in enumerate((['c0'], names, ['c1', 'c3'], ['c0', 'c2', 'c3'], ['c2'])):
        for c in group:  # the first is held up to 500 ms for the others
            pubs[c][0].publish(conv.image_msg(header(10 + k), s.rgb, 'rgb8'))
            sent[c] += 1
        for c in group:
            assert harness.wait(
                lambda c=c: len(harness.get(f'{NS}/{c}/depth/relative')) == sent[c], 20), c
    assert len(set(sizes)) >= 3, sizes  # mixed batch sizes really ran
    assert node.pipeline.backend_builds == built
    values = {}
    assert harness.wait(lambda: values.update(diagnostics.values_of(
        harness.get('/diagnostics')[-1].status) if harness.get('/diagnostics') else {}) or
        'backend_builds_after_activation' in values, 10)
    assert values['backend_builds_after_activation'] == '0', values
    assert values['backend_builds'] == f"onnxruntime {built['onnxruntime']}", values


@pytest.mark.parametrize('warmup_sizes, builds_on_first_frame', [((), 1), (('64x48',), 0)])
def test_a_frame_sized_network_input_is_built_before_frames_arrive(
        harness, tiny_metric, warmup_sizes, builds_on_first_frame):
    """Depth Anything's input follows the frame size: model.warmup_sizes builds it at start.

    Without it the first frame of a size pays the ONNX export (frames meanwhile are dropped).
    """
    pytest.importorskip('onnxruntime', reason='onnxruntime is not installed')
    params = {'model.depth': str(tiny_metric), 'model.device': 'cpu',
              'model.backend': 'onnxruntime', 'batch.max_size': 2, 'batch.max_wait_ms': 500.0}
    if warmup_sizes:  # rclpy has no typed empty list: not given is the default, empty
        params['model.warmup_sizes'] = list(warmup_sizes)
    node = start(harness, ['c0', 'c1'], **params)
    built = dict(node.pipeline.backend_builds)
    assert built.get('onnxruntime', 0) == len(warmup_sizes)
    sizes = spy_batches(node)
    pubs = {c: harness.publishers(f'{NS}/{c}') for c in ('c0', 'c1')}
    for c, (img, info) in pubs.items():
        harness.record_outputs(f'{NS}/{c}', ['depth/image'])
        assert harness.wait_subscribed(img)
    harness.wait(lambda: False, 1.0)
    s = synthetic_scene(64, 48)
    for k, group in enumerate((['c0'], ['c0', 'c1'], ['c1'])):  # batches of 1 and 2 frames
        for c in group:
            hd = header(20 + k)
            pubs[c][1].publish(conv.camera_info_from_intrinsics(s.intrinsics, hd))
            pubs[c][0].publish(conv.image_msg(hd, s.rgb, 'rgb8'))
        for c in group:
            assert harness.wait(lambda c=c, k=k: any(
                stamp_of(m) == conv.stamp_ns(header(20 + k)) for m in
                harness.get(f'{NS}/{c}/depth/image')), 30), (c, k)
    assert set(sizes) == {1, 2}, sizes
    assert node.pipeline.depth_model.backend == 'onnxruntime'
    after = node.pipeline.backend_builds.get('onnxruntime', 0) - built.get('onnxruntime', 0)
    assert after == builds_on_first_frame, node.pipeline.backend_builds


def test_camera_list_from_params_file_with_remaps(tmp_path, tiny_metric):
    """The process as launched: cameras from YAML, one camera's topics remapped."""
    params = write_params_file(tmp_path / 'p.yaml', {
        'cameras': ['left', 'right'], 'model.depth': str(tiny_metric), 'model.device': 'cpu'})
    node = NodeProcess(['--params-file', str(params), '-r', '__ns:=/rig',
                        '-r', 'left/image:=/drivers/left/image_raw',
                        '-r', 'left/camera_info:=/drivers/left/camera_info'])
    h = Harness().start()
    try:
        h.record('/rig/left/depth/image', Image)
        h.record('/rig/right/depth/image', Image)
        left = (h.node.create_publisher(Image, '/drivers/left/image_raw', 5),
                h.node.create_publisher(CameraInfo, '/drivers/left/camera_info', 5))
        right = h.publishers('/rig/right')
        assert h.wait_subscribed(left[0], 60), node.text()
        assert h.wait_subscribed(right[0], 30), node.text()
        s = synthetic_scene(64, 48)
        for k, (img, info) in enumerate((left, right)):
            hd = header(k)
            info.publish(conv.camera_info_from_intrinsics(s.intrinsics, hd))
            img.publish(conv.image_msg(hd, s.rgb, 'rgb8'))
        for k, c in enumerate(('left', 'right')):
            assert h.wait(lambda c=c, k=k: any(stamp_of(m) == conv.stamp_ns(header(k))
                                               for m in h.get(f'/rig/{c}/depth/image')), 30), \
                node.text()
        assert 'input /drivers/left/image_raw + /drivers/left/camera_info; /rig/right/image' \
            in node.text()
    finally:
        h.close()
        assert node.stop() == 0


def test_bad_camera_list_exits_with_reason(tmp_path, tiny_metric):
    params = write_params_file(tmp_path / 'p.yaml', {
        'cameras': ['front', 'front'], 'model.depth': str(tiny_metric), 'model.device': 'cpu'})
    node = NodeProcess(['--params-file', str(params)])
    assert node.wait_exit(60) == 2
    assert 'cameras: front given more than once' in node.text()
