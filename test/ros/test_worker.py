# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The node's worker (dpt_ros.ros.worker) over real DDS: CDR bytes, overlap, deactivation.

The outputs go out as serialized CDR (dpt_ros.core.frames.messages) and must arrive as exactly
the messages the message path builds; with output.overlap a batch is published on its own
thread while the worker runs the next forward, one batch in flight; deactivation never
publishes on destroyed publishers.
"""

import threading
import time

import pytest

from dpt_ros.core import cdr
from dpt_ros.core import conversions as conv
from dpt_ros.core import outputs
from dpt_ros.core.outputs import EncodeOptions
from dpt_ros.ros import serialized
from dpt_ros.tools.sample import synthetic_scene

from rosutil import header, same, stamp_of  # noqa: I100

from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402, I100
from rclpy.parameter import Parameter  # noqa: E402

NS = '/pub'
OK = TransitionCallbackReturn.SUCCESS


def start(harness, cameras=(), lifecycle=False, **params):
    """Start a DptNode (or a configured, active DptLifecycleNode) under NS; spin it."""
    node = harness.start_node(NS, cameras=cameras, lifecycle=lifecycle, **params)
    if lifecycle:
        assert node.trigger_configure() == OK and node.trigger_activate() == OK
    return node


def spy_results(node, delay_s=0.0):
    """Record every forward's (start, end, results); each Result gets its batch index."""
    forwards = []
    real = node.pipeline.process_batch

    def spy(*args, **kwargs):
        t0 = time.monotonic()
        results = real(*args, **kwargs)
        time.sleep(delay_s)  # the stand-in for a slower model
        for r in results:
            r.batch = len(forwards)
        forwards.append((t0, time.monotonic(), results))
        return results
    node.pipeline.process_batch = spy
    return forwards


def slow_publishing(node, delay_s, started=None):
    """Make publishing a batch take delay_s longer; record (batch, start, end) of each."""
    published = []
    worker = node.runtime.worker
    real = worker.publish_batch

    def slow(done, cfg):
        t0 = time.monotonic()
        if started is not None:
            started.set()
        time.sleep(delay_s)  # the stand-in for a slow transport
        real(done, cfg)
        published.append((done[0][1].batch, t0, time.monotonic()))
    worker.publish_batch = slow
    return published


def depth_from_one_camera(harness):
    """Record depth/image, send camera_info once; return the image publisher and the scene."""
    harness.record_outputs(NS, ['depth/image'])
    img, info = harness.publishers(NS)
    assert harness.wait_subscribed(img)
    harness.wait(lambda: False, 1.0)  # the output subscription matched
    s = synthetic_scene(64, 48)
    info.publish(conv.camera_info_from_intrinsics(s.intrinsics, header(0)))
    return img, s


@pytest.mark.parametrize('models, params', [
    (('tiny_metric', 'tiny_seg'), {'depth.confidence': 'flip', 'depth.encoding': '16UC1'}),
    (('tiny_depth',), {}),
])
def test_published_bytes_arrive_as_the_message_path_builds_them(harness, request, models,
                                                                params):
    """Every output: what a subscriber receives == conversions.fields_to_msg of the result."""
    checkpoints = [request.getfixturevalue(m) for m in models]
    node = start(harness, **{'model.depth': str(checkpoints[0]), 'model.device': 'cpu',
                             'model.segmentation': str(checkpoints[1:] and checkpoints[1] or ''),
                             **params})
    forwards = spy_results(node)
    # What the node gives each publisher: serialized CDR, written into the publisher's own
    # buffer and published in place by rcl, never through rclpy's publish.
    handed, through_rclpy = [], []
    for name, sender in node.cameras[0].senders.items():
        assert sender.in_place
        real = sender.write
        sender.write = lambda data, real=real, name=name: (handed.append((name, type(data))),
                                                           real(data))
        pub = node.cameras[0].pubs[name]
        real_publish = pub.publish
        pub.publish = lambda data, real=real_publish, name=name: (through_rclpy.append(name),
                                                                  real(data))
    harness.record_outputs(NS)
    pubs = harness.publishers(NS)
    assert harness.wait_subscribed(pubs[0])
    harness.wait(lambda: False, 1.0)  # every output subscription matched
    s = synthetic_scene(61, 47)  # odd sizes: rows of any length mod 4
    h = header(3, frame_id='cam_optical_x')
    pubs[1].publish(conv.camera_info_from_intrinsics(s.intrinsics, h))
    assert harness.wait(lambda: node.cameras[0].camera_info is not None, 10)
    pubs[0].publish(conv.image_msg(h, s.rgb, 'rgb8'))
    stamp = conv.stamp_ns(h)
    assert harness.wait(lambda: forwards, 20)
    result = forwards[0][2][0]
    opts = EncodeOptions(node.config.depth.encoding, camera_info=True)
    expected = {o.name: conv.fields_to_msg(o.msg_type, f, h, node.cameras[0].camera_info)
                for o, f in outputs.encode(result, opts)}
    want = {'relative', 'depth_colored'} if len(models) == 1 else outputs.ALL - {'relative'}
    assert set(expected) == want
    topics = {name: f'{NS}/{outputs.BY_NAME[name].topic}' for name in expected}
    assert harness.wait(lambda: all(any(stamp_of(m) == stamp for m in harness.get(t))
                                    for t in topics.values()), 20)
    for name, topic in topics.items():
        got = next(m for m in harness.get(topic) if stamp_of(m) == stamp)
        same(got, expected[name], name)
    assert dict(handed) == dict.fromkeys(expected, cdr.Serialized)
    assert through_rclpy == []


def test_without_rcl_in_reach_the_node_publishes_through_rclpy(harness, tiny_metric,
                                                               monkeypatch):
    """Where ctypes cannot reach rcl, outputs go through rclpy's publish(bytes), unchanged."""
    monkeypatch.setattr(serialized, '_api', None)
    monkeypatch.setattr(serialized, '_reason', 'rcl not reachable (test)')
    node = start(harness, **{'model.depth': str(tiny_metric), 'model.device': 'cpu'})
    senders = node.cameras[0].senders
    assert senders and not any(sender.in_place for sender in senders.values())
    forwards = spy_results(node)
    img, s = depth_from_one_camera(harness)
    h = header(7)
    img.publish(conv.image_msg(h, s.rgb, 'rgb8'))
    topic = f'{NS}/depth/image'
    assert harness.wait(lambda: any(stamp_of(m) == conv.stamp_ns(h) for m in harness.get(topic)),
                        20)
    got = next(m for m in harness.get(topic) if stamp_of(m) == conv.stamp_ns(h))
    opts = EncodeOptions('32FC1', camera_info=True)
    [(_, fields)] = outputs.encode(forwards[0][2][0], opts, {'depth'})
    same(got, conv.fields_to_msg(conv.IMAGE_TYPE, fields, h, node.cameras[0].camera_info))


@pytest.mark.parametrize('overlap', [True, False])
def test_each_camera_gets_its_own_headers_with_overlap_on_and_off(harness, tiny_metric,
                                                                  overlap):
    node = start(harness, ['left', 'right'], **{
        'model.depth': str(tiny_metric), 'model.device': 'cpu', 'output.overlap': overlap,
        'batch.max_wait_ms': 0.0})
    assert node.config.output.overlap is overlap
    pubs = {c: harness.publishers(f'{NS}/{c}') for c in ('left', 'right')}
    for c in pubs:
        harness.record_outputs(f'{NS}/{c}', ['depth/image', 'points', 'depth/camera_info'])
        assert harness.wait_subscribed(pubs[c][0])
    harness.wait(lambda: False, 1.0)
    scenes = {'left': synthetic_scene(64, 48), 'right': synthetic_scene(96, 72)}
    sent = {c: [] for c in pubs}
    for i in range(12):
        for k, c in enumerate(pubs):
            h = header(100 * k + i, frame_id=f'{c}_optical')
            pubs[c][1].publish(conv.camera_info_from_intrinsics(scenes[c].intrinsics, h))
            pubs[c][0].publish(conv.image_msg(h, scenes[c].rgb, 'rgb8'))
            sent[c].append(conv.stamp_ns(h))
        time.sleep(0.03)
    for c in pubs:  # the newest frame of each camera is always served
        assert harness.wait(lambda c=c: any(stamp_of(m) == sent[c][-1] for m in
                                            harness.get(f'{NS}/{c}/points')), 20), c
    harness.wait(lambda: False, 0.5)
    for c in pubs:
        for topic in ('depth/image', 'points', 'depth/camera_info'):
            msgs = harness.get(f'{NS}/{c}/{topic}')
            stamps = [stamp_of(m) for m in msgs]
            assert msgs and set(stamps) <= set(sent[c]), (c, topic)
            assert stamps == sorted(stamps), (c, topic)  # in order, never an older frame
            assert all(m.header.frame_id == f'{c}_optical' for m in msgs), (c, topic)
        h, w = scenes[c].rgb.shape[:2]
        assert all((m.height, m.width) == (h, w) for m in harness.get(f'{NS}/{c}/points'))


def test_overlap_hides_a_slow_publish_and_keeps_one_batch_in_flight(harness, tiny_metric):
    """Forward and publish each take >= 250 ms (injected): overlap runs them side by side."""
    delay = 0.25
    node = start(harness, **{'model.depth': str(tiny_metric), 'model.device': 'cpu',
                             'output.overlap': False})
    forwards = spy_results(node, delay)
    published = slow_publishing(node, delay)
    img, s = depth_from_one_camera(harness)
    phases = {}
    sent = []
    for phase, overlap in enumerate((False, True)):
        node.set_parameters([Parameter('output.overlap', value=overlap)])
        first = len(forwards)
        stop = threading.Event()

        def stream(phase=phase):  # a 50 Hz camera: always a newer frame waiting
            i = 0
            while not stop.is_set():
                h = header(1000 * phase + i)
                img.publish(conv.image_msg(h, s.rgb, 'rgb8'))
                sent.append(conv.stamp_ns(h))
                i += 1
                time.sleep(0.02)
        t = threading.Thread(target=stream)
        t.start()
        try:
            assert harness.wait(lambda: len(published) >= first + 8, 60), (overlap, published)
        finally:
            stop.set()
            t.join()
        assert harness.wait(lambda: len(published) == len(forwards), 10)  # all published
        fw = {k: (a, b) for k, (a, b, _) in enumerate(forwards) if k >= first}
        pb = {k: (a, b) for k, a, b in published if k >= first}
        assert sorted(pb) == sorted(fw), 'each forward was published once, in order'
        ks = sorted(fw)[1:]  # the first batch of a phase may follow the previous phase's
        for k in ks[:-2]:
            # Never more than one batch in flight: forward k + 2 starts only after batch k
            # was published, and publications never run side by side.
            assert fw[k + 2][0] >= pb[k][1] - 1e-3, (overlap, k)
            assert pb[k + 1][0] >= pb[k][1] - 1e-3, (overlap, k)
        if overlap:  # the forward of k + 1 runs while k is published
            overlapped = sum(fw[k + 1][0] < pb[k][1] for k in ks[:-1])
            assert overlapped >= len(ks[:-1]) - 1, (overlapped, len(ks))
        else:  # the worker publishes before it takes the next frame
            assert all(fw[k + 1][0] >= pb[k][1] - 1e-3 for k in ks[:-1])
        ends = sorted(b for k, (_, b) in pb.items() if k in ks)
        phases[overlap] = (ends[-1] - ends[0]) / (len(ends) - 1)  # seconds per batch
        harness.wait(lambda: False, 0.5)
    # Sequential: forward + publish per batch (>= 0.5 s); overlapped: the slower of the two.
    assert phases[False] >= 2 * delay
    assert phases[True] < 0.8 * phases[False], phases
    got = [stamp_of(m) for m in harness.get(f'{NS}/depth/image')]
    assert got == sorted(got) and set(got) <= set(sent)
    assert node.dropped > 0  # the camera was faster: newest frame won, nothing queued


@pytest.mark.parametrize('overlap', [True, False])
def test_deactivate_while_publishing_never_publishes_on_destroyed_publishers(harness,
                                                                             tiny_metric,
                                                                             overlap):
    node = start(harness, lifecycle=True, **{'model.depth': str(tiny_metric),
                                             'model.device': 'cpu', 'output.overlap': overlap})
    forwards = spy_results(node)
    publishing = threading.Event()
    published = slow_publishing(node, 2.0, publishing)
    warnings = []
    real_warn = node.runtime.warn
    node.runtime.warn = lambda key, text: (warnings.append(text), real_warn(key, text))
    img, s = depth_from_one_camera(harness)
    img.publish(conv.image_msg(header(1), s.rgb, 'rgb8'))
    assert publishing.wait(20)  # batch 0 is being published (for 2 s)
    img.publish(conv.image_msg(header(2), s.rgb, 'rgb8'))
    if overlap:  # batch 1 runs its forward, then waits for batch 0's publication
        assert harness.wait(lambda: len(forwards) == 2, 10)
    t0 = time.monotonic()
    assert node.trigger_deactivate() == OK
    assert time.monotonic() - t0 < 10
    # The batch being published finished on live publishers; nothing was published after.
    assert [k for k, _, _ in published] == [0]
    assert published[0][2] <= time.monotonic()
    assert node.pipeline is None
    harness.wait(lambda: False, 1.0)
    stamps = [stamp_of(m) for m in harness.get(f'{NS}/depth/image')]
    assert stamps == [conv.stamp_ns(header(1))], stamps
    assert not warnings and not any(c.stats.errors for c in node.cameras), warnings
    # Active again: publishing works as before.
    assert node.trigger_activate() == OK
    forwards = spy_results(node)
    published = slow_publishing(node, 0.0)
    assert harness.wait_subscribed(img)
    img.publish(conv.image_msg(header(3), s.rgb, 'rgb8'))
    assert harness.wait(lambda: any(stamp_of(m) == conv.stamp_ns(header(3))
                                    for m in harness.get(f'{NS}/depth/image')), 20)
    assert node.trigger_deactivate() == OK and node.trigger_cleanup() == OK
    assert not warnings


def test_a_job_for_a_worker_whose_thread_has_ended_runs_instead_of_waiting_forever():
    """Worker.run after the worker thread stopped (a transition after Ctrl-C) never hangs."""
    from types import SimpleNamespace
    from dpt_ros.ros.worker import Worker
    worker = Worker(SimpleNamespace(cameras=[]))  # jobs only: no camera, no frame
    assert worker.run(threading.current_thread) is worker._thread  # on the worker thread
    worker.stop()
    assert not worker.alive
    got = []
    caller = threading.Thread(target=lambda: got.append(worker.run(threading.current_thread)),
                              daemon=True)
    caller.start()
    caller.join(10.0)
    assert not caller.is_alive(), 'Worker.run waited on a worker thread that had ended'
    assert got == [caller]  # run on the caller's thread, once
    with pytest.raises(ZeroDivisionError):  # what the job raises still reaches the caller
        worker.run(lambda: 1 / 0)
