# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The managed node through the real lifecycle services: states, topics, memory, events."""

import gc
import threading
import time
import weakref

import numpy as np
import pytest

from dpt_ros.core import conversions as conv
from dpt_ros.tools.sample import synthetic_scene
from dpt_ros.tools.toolkit import write_params_file

from rosutil import Harness, header, NodeProcess, stamp_of  # noqa: I100

from lifecycle_msgs.msg import State, Transition, TransitionEvent  # noqa: E402, I100
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.msg import Log  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from dpt_ros.ros import diagnostics as diag  # noqa: E402
from dpt_ros.ros.node import DptLifecycleNode  # noqa: E402

NS = '/cam'
FQN = f'{NS}/dpt'


class Lifecycle:
    """What `ros2 lifecycle set/get` and nav2's lifecycle manager call: the node's services."""

    def __init__(self, harness, fqn=FQN):
        self.harness = harness
        self.change = harness.node.create_client(ChangeState, f'{fqn}/change_state')
        self.get = harness.node.create_client(GetState, f'{fqn}/get_state')
        assert self.change.wait_for_service(timeout_sec=60)
        assert self.get.wait_for_service(timeout_sec=10)

    def _call(self, client, req, timeout=120.0, tries=1):
        for _ in range(tries):
            fut = client.call_async(req)
            if self.harness.wait(fut.done, timeout / tries):
                return fut.result()
            client.remove_pending_request(fut)
        raise AssertionError('no answer from the lifecycle service')

    def set(self, transition):
        """Trigger a transition by id (nav2) or by label (`ros2 lifecycle set`)."""
        req = ChangeState.Request()
        if isinstance(transition, str):
            req.transition.label = transition
        else:
            req.transition.id = transition
        return self._call(self.change, req).success

    def state(self):
        """Return the current state label."""
        # A query may be asked again: on a loaded machine the first answer of a just-found
        # service can be lost while the server's reply side is still being matched.
        return self._call(self.get, GetState.Request(), tries=4).current_state.label


def graph(harness, name='dpt', ns=NS):
    """Topics the node publishes and subscribes, from the ROS graph."""
    pubs = {t for t, _ in harness.node.get_publisher_names_and_types_by_node(name, ns)}
    subs = {t for t, _ in harness.node.get_subscriber_names_and_types_by_node(name, ns)}
    return pubs, subs


def send_frame(harness, pubs, i, scene):
    h = header(i)
    pubs[1].publish(conv.camera_info_from_intrinsics(scene.intrinsics, h))
    pubs[0].publish(conv.image_msg(h, scene.rgb, 'rgb8'))
    return conv.stamp_ns(h)


def got(harness, stamp, topic=f'{NS}/depth/image'):
    return any(stamp_of(m) == stamp for m in harness.get(topic))


def test_transitions_through_the_services(harness, tiny_metric):
    params = [Parameter('model.depth', value=str(tiny_metric)),
              Parameter('model.device', value='cpu')]
    node = DptLifecycleNode('dpt', context=harness.ctx, namespace=NS,
                            parameter_overrides=params)
    harness.add_node(node)
    harness.record(f'{FQN}/transition_event', TransitionEvent)
    harness.record(f'{NS}/depth/image', Image)
    harness.start()
    lc = Lifecycle(harness)
    pubs = harness.publishers(NS)
    scene = synthetic_scene(64, 48)
    outputs = {f'{NS}/depth/image', f'{NS}/points', f'{NS}/depth/colored', '/diagnostics'}
    inputs = {f'{NS}/image', f'{NS}/camera_info'}

    def topics_are(present, timeout=10.0):
        def check():
            p, s = graph(harness)
            have = outputs <= p and inputs <= s
            none = not (outputs & p) and not (inputs & s)
            return have if present else none
        return harness.wait(check, timeout)

    assert lc.state() == 'unconfigured'
    assert node.pipeline is None and not node.cameras
    assert topics_are(False)
    # configure: parameters validated, weights in host memory; still no topics.
    assert lc.set(Transition.TRANSITION_CONFIGURE)
    assert lc.state() == 'inactive'
    host = node.runtime.host_models['depth']
    net = weakref.ref(host.net)
    assert host.device.type == 'cpu' and node.pipeline is None
    assert topics_are(False)
    # activate (by label, as `ros2 lifecycle set /cam/dpt activate` does)
    assert lc.set('activate')
    assert lc.state() == 'active'
    assert topics_are(True)
    assert harness.wait_subscribed(pubs[0])
    stamp = send_frame(harness, pubs, 1, scene)
    assert harness.wait(lambda: got(harness, stamp), 30)
    # deactivate: topics gone, frames ignored, device memory freed.
    assert lc.set(Transition.TRANSITION_DEACTIVATE)
    assert lc.state() == 'inactive'
    assert topics_are(False)
    assert node.pipeline is None and net() is not None  # weights kept in host memory
    stamp = send_frame(harness, pubs, 2, scene)
    harness.wait(lambda: False, 1.0)
    assert not got(harness, stamp)
    # and back
    assert lc.set(Transition.TRANSITION_ACTIVATE)
    assert topics_are(True)
    assert harness.wait_subscribed(pubs[0])
    stamp = send_frame(harness, pubs, 3, scene)
    assert harness.wait(lambda: got(harness, stamp), 30)
    # The node's counters are of this activation, all of them: one batch, one forward.
    values = diag.values(node.diagnostics_status()[0])
    assert (values['batches'], values['forwards']) == ('1', '1'), values
    # cleanup: everything released
    assert lc.set(Transition.TRANSITION_DEACTIVATE)
    assert lc.set(Transition.TRANSITION_CLEANUP)
    assert lc.state() == 'unconfigured'
    del host
    gc.collect()
    assert net() is None, 'the model is still referenced after cleanup'
    assert node.runtime.worker is None and not node.runtime.host_models
    # a second life, then shutdown from active
    assert lc.set('configure') and lc.set('activate')
    assert harness.wait_subscribed(pubs[0])
    stamp = send_frame(harness, pubs, 4, scene)
    assert harness.wait(lambda: got(harness, stamp), 30)
    net = weakref.ref(node.runtime.host_models['depth'].net)
    assert lc.set(Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert lc.state() == 'finalized'
    assert topics_are(False)
    gc.collect()
    assert net() is None
    # Every transition was announced on transition_event, in order.
    U, I, A, F = (State.PRIMARY_STATE_UNCONFIGURED, State.PRIMARY_STATE_INACTIVE,
                  State.PRIMARY_STATE_ACTIVE, State.PRIMARY_STATE_FINALIZED)

    def settled():
        return [e.goal_state.id for e in harness.get(f'{FQN}/transition_event')
                if e.goal_state.id in (U, I, A, F)]
    expected = [I, A, I, A, I, U, I, A, F]
    assert harness.wait(lambda: settled() == expected, 5), settled()


def test_configure_failure_leaves_it_unconfigured(harness, tmp_path):
    params = [Parameter('model.depth', value=str(tmp_path / 'no_such_model')),
              Parameter('model.device', value='cpu')]
    node = DptLifecycleNode('dpt', context=harness.ctx, namespace='/broken',
                            parameter_overrides=params)
    harness.add_node(node)
    harness.start()
    lc = Lifecycle(harness, '/broken/dpt')
    assert not lc.set(Transition.TRANSITION_CONFIGURE)
    assert lc.state() == 'unconfigured'
    assert node.runtime.worker is None and node.pipeline is None
    assert not lc.set(Transition.TRANSITION_ACTIVATE)  # not available from unconfigured
    assert lc.set(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert lc.state() == 'finalized'


def test_managed_process_as_nav2_drives_it(tmp_path, tiny_metric):
    """dpt_lifecycle_node as launched: configure, activate, a frame, Ctrl-C exits cleanly.

    nav2's lifecycle manager calls change_state then get_state for each node, in order
    (with bond_timeout 0 for nodes outside nav2, which have no bond).
    """
    ns = '/managed'  # not the in-process tests' names: no stale service endpoints to match
    params = write_params_file(tmp_path / 'p.yaml', {
        'cameras': ['front'], 'model.depth': str(tiny_metric), 'model.device': 'cpu'})
    node = NodeProcess(['--params-file', str(params), '-r', f'__ns:={ns}'],
                       executable='dpt_lifecycle_node')
    h = Harness().start()
    try:
        lc = Lifecycle(h, f'{ns}/dpt')
        h.record(f'{ns}/front/depth/image', Image)
        assert lc.state() == 'unconfigured', node.text()
        for transition, state in ((Transition.TRANSITION_CONFIGURE, 'inactive'),
                                  (Transition.TRANSITION_ACTIVATE, 'active')):
            assert lc.set(transition), node.text()
            assert lc.state() == state
        pubs = h.publishers(f'{ns}/front')
        assert h.wait_subscribed(pubs[0], 30), node.text()
        stamp = send_frame(h, pubs, 5, synthetic_scene(64, 48))
        assert h.wait(lambda: got(h, stamp, f'{ns}/front/depth/image'), 30), node.text()
        assert 'activate: done' in node.text()
    finally:
        h.close()
        rc = node.stop()
    assert rc == 0 and 'Traceback' not in node.text(), node.text()


@pytest.mark.gpu
def test_deactivate_returns_gpu_memory(harness, tiny_metric, tiny_seg):
    """configure: weights on the host; activate: on the GPU; deactivate: GPU memory back."""
    import torch
    params = [Parameter('model.depth', value=str(tiny_metric)),
              Parameter('model.segmentation', value=str(tiny_seg)),
              Parameter('model.device', value='cuda')]
    node = DptLifecycleNode('dpt', context=harness.ctx, namespace='/gpu',
                            parameter_overrides=params)
    harness.add_node(node)
    harness.record('/gpu/depth/image', Image)
    harness.start()
    lc = Lifecycle(harness, '/gpu/dpt')
    torch.cuda.synchronize()
    base, base_reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    assert lc.set('configure')
    assert torch.cuda.memory_allocated() == base  # weights in host memory only
    assert all(m.device.type == 'cpu' for m in node.runtime.host_models.values())
    scene = synthetic_scene(640, 480)
    for life in range(2):
        assert lc.set('activate')
        assert torch.cuda.memory_allocated() > base
        pubs = harness.publishers('/gpu')
        assert harness.wait_subscribed(pubs[0])
        stamp = send_frame(harness, pubs, 10 + life, scene)
        assert harness.wait(lambda: got(harness, stamp, '/gpu/depth/image'), 60)
        assert lc.set('deactivate')
        torch.cuda.synchronize()
        assert torch.cuda.memory_allocated() <= base + (1 << 20), \
            (torch.cuda.memory_allocated() - base)
        assert torch.cuda.memory_reserved() <= base_reserved + (64 << 20)  # cache emptied
    assert lc.set('cleanup')


def test_failed_configure_is_fixed_by_setting_the_parameter(harness, tmp_path, tiny_metric):
    """Settings configure reads: set while unconfigured, refused with the reason otherwise."""
    from test_parameters import call_set as set_on
    ns = '/refix'  # names no other test uses: no stale endpoints of another node to match
    params = [Parameter('model.depth', value=str(tmp_path / 'no_such_model')),
              Parameter('model.device', value='cpu')]
    node = DptLifecycleNode('dpt', context=harness.ctx, namespace=ns,
                            parameter_overrides=params)
    harness.add_node(node)
    harness.start()
    lc = Lifecycle(harness, f'{ns}/dpt')

    def call_set(harness, name, values):
        return set_on(harness, name, values, ns)
    desc = node.describe_parameter('model.depth')
    assert not desc.read_only and 'settable while the node is unconfigured' in desc.description
    assert not lc.set('configure') and lc.state() == 'unconfigured'
    # The fix the error asks for, as `ros2 param set /refix/dpt model.depth ...` makes it.
    res = call_set(harness, 'dpt', {'model.depth': str(tiny_metric)})
    assert res[0].successful, res[0].reason
    assert lc.set('configure') and lc.state() == 'inactive'
    assert node.runtime.host_models['depth'].source == str(tiny_metric)
    for state in ('inactive', 'active'):
        res = call_set(harness, 'dpt', {'model.depth': str(tmp_path / 'other')})
        assert not res[0].successful and f'it is {state}' in res[0].reason, res[0].reason
        assert 'model.depth' in res[0].reason and 'unconfigured' in res[0].reason
        assert node.get_parameter('model.depth').value == str(tiny_metric)
        if state == 'inactive':
            assert lc.set('activate')
    assert call_set(harness, 'dpt', {'depth.max': 5.0})[0].successful  # live ones stay live
    assert lc.set('deactivate') and lc.set('cleanup')
    assert call_set(harness, 'dpt', {'anchors.source': 'points'})[0].successful
    # A bad value is still refused while unconfigured.
    res = call_set(harness, 'dpt', {'model.precision': 'fp8'})
    assert not res[0].successful and 'model.precision' in res[0].reason


def test_deactivate_under_full_load_logs_no_traceback(harness):
    """Deactivate while frames and anchors stream at full rate, 20 times: no failed frame.

    Teardown takes the cameras' anchors and publishers away while the worker may be decoding
    a frame; a slow calibration lookup (the stand-in for a slow decode) widens that window.
    """
    from test_node_anchors import depth_anchors, start

    ns = '/loaded'
    scenes = [synthetic_scene(96, 72, t=0.05 * i) for i in range(3)]
    node = start(harness, scenes, {'depth.mode': 'fitted', 'anchors.source': 'depth_image'},
                 cameras=('front', 'rear'), lifecycle=True, ns=ns)
    lc = Lifecycle(harness, f'{ns}/dpt')
    assert lc.set('configure')
    for cam in node.cameras:
        real = cam.calibration.for_frame

        def slow(*args, real=real):
            time.sleep(0.01)
            return real(*args)
        cam.calibration.for_frame = slow
    qos = QoSProfile(depth=5)
    pubs = {c: [harness.node.create_publisher(kind, f'{ns}/{c}/{topic}', qos)
                for kind, topic in ((Image, 'image'), (Image, 'anchors/depth'))]
            for c in ('front', 'rear')}
    for c in pubs:
        harness.record(f'{ns}/{c}/depth/image', Image)
    info = {c: harness.node.create_publisher(CameraInfo, f'{ns}/{c}/camera_info', qos)
            for c in pubs}
    stop = threading.Event()
    rng = np.random.default_rng(0)

    def stream():
        i = 0
        while not stop.is_set():
            s = scenes[i % len(scenes)]
            h = header(i)
            for c, (img, anchors) in pubs.items():
                info[c].publish(conv.camera_info_from_intrinsics(s.intrinsics, h))
                anchors.publish(depth_anchors(s, h, rng))
                img.publish(conv.image_msg(h, s.rgb, 'rgb8'))
            i += 1
            time.sleep(0.005)
    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    try:
        for cycle in range(20):
            assert lc.set('activate'), cycle
            n = node.processed
            assert harness.wait(lambda: node.processed >= n + 2, 30), cycle
            assert lc.set('deactivate'), cycle
    finally:
        stop.set()
        thread.join(5)
    assert harness.get(f'{ns}/front/depth/image')  # metres were published meanwhile
    logs = [m.msg for m in harness.get('/rosout') if m.level >= Log.WARN]
    assert not [m for m in logs if 'Traceback' in m or 'failed' in m], logs
    assert sum(c.stats.errors for c in node.cameras) == 0


def test_unconfigured_settings_are_checked_one_at_a_time(harness, tiny_metric):
    """While unconfigured, a fix is not refused because another setting is still bad."""
    from test_parameters import call_set as set_on
    ns = '/onebyone'
    node = harness.start_node(ns, lifecycle=True, **{
        'model.depth': str(tiny_metric), 'model.device': 'cpu',
        'depth.encoding': '8UC3', 'depth.colormap': 'rainbow'})
    lc = Lifecycle(harness, f'{ns}/dpt')

    def call_set(values):
        return set_on(harness, 'dpt', values, ns)[0]
    assert not lc.set('configure') and lc.state() == 'unconfigured'
    # Each fix on its own, as `ros2 param set` sends them, while the other is still bad.
    res = call_set({'depth.encoding': '32FC1'})
    assert res.successful, res.reason
    # A value bad on its own is still refused, with the reason.
    res = call_set({'depth.encoding': '8UC3'})
    assert not res.successful and 'depth.encoding' in res.reason
    # A pair set one half at a time (model.input_height then model.input_width).
    for name in ('model.input_height', 'model.input_width'):
        res = call_set({name: 252})
        assert res.successful, (name, res.reason)
    assert not lc.set('configure') and lc.state() == 'unconfigured'  # the colormap still
    res = call_set({'depth.colormap': 'inferno'})
    assert res.successful, res.reason
    assert lc.set('configure') and lc.state() == 'inactive'
    assert node.runtime.cfg.depth.encoding == '32FC1'
    assert (node.runtime.cfg.model.input_height, node.runtime.cfg.model.input_width) == \
        (252, 252)
    assert lc.set('cleanup')


def test_class_names_follow_the_model_each_configure_loads(harness, tmp_path, tiny_metric,
                                                           tiny_seg):
    """segmentation.class_names: the loaded model's, after a reconfigure with another one too."""
    import json
    import shutil
    from test_parameters import call_set as set_on
    ns = '/classes'
    other = tmp_path / 'other-seg'
    shutil.copytree(tiny_seg, other)
    cfg = json.loads((other / 'config.json').read_text())
    first = [cfg['id2label'][str(i)] for i in range(len(cfg['id2label']))]
    second = [f'thing{i}' for i in range(len(first))]
    cfg['id2label'] = {str(i): n for i, n in enumerate(second)}
    cfg['label2id'] = {n: i for i, n in enumerate(second)}
    (other / 'config.json').write_text(json.dumps(cfg))
    # A value for it in the parameters (of the wrong type, even) is ignored, not fatal.
    node = harness.start_node(ns, lifecycle=True, **{
        'model.depth': str(tiny_metric), 'model.segmentation': str(tiny_seg),
        'model.device': 'cpu', 'segmentation.class_names': 5})
    lc = Lifecycle(harness, f'{ns}/dpt')
    assert lc.set('configure') and lc.set('activate')
    assert node.get_parameter('segmentation.class_names').value == first
    res = set_on(harness, 'dpt', {'segmentation.class_names': ['a', 'b']}, ns)[0]
    assert not res.successful and 'read-only' in res.reason
    assert lc.set('deactivate') and lc.set('cleanup')
    res = set_on(harness, 'dpt', {'model.segmentation': str(other)}, ns)[0]
    assert res.successful, res.reason
    assert lc.set('configure') and lc.set('activate')
    assert node.get_parameter('segmentation.class_names').value == second
    assert lc.set('deactivate') and lc.set('cleanup')


def test_inactive_node_refuses_what_activate_would_and_keeps_what_it_takes(
        harness, tiny_metric):
    """A live setting sent while inactive is checked against the loaded weights then.

    Accepted, it would fail the next activate (nav2's bring-up) until someone undid it.
    """
    from test_parameters import call_set
    ns = '/inactive'
    node = harness.start_node(ns, lifecycle=True, **{'model.depth': str(tiny_metric),
                                                     'model.device': 'cpu'})
    lc = Lifecycle(harness, f'{ns}/dpt')
    assert lc.set('configure') and lc.state() == 'inactive'
    for bad, word in (({'depth.min': 50.0}, "the checkpoint's 10 m"),
                      ({'points.exclude_classes': ['sky']}, 'needs a segmentation model')):
        res = call_set(harness, 'dpt', bad, ns)
        assert not res[0].successful and word in res[0].reason, (bad, res[0].reason)
    assert node.get_parameter('depth.min').value == 0.1
    assert call_set(harness, 'dpt', {'depth.max': 5.0}, ns)[0].successful
    assert lc.set('activate') and lc.state() == 'active'
    assert node.pipeline.config.depth.max == 5.0 and node.pipeline.config.depth.min == 0.1
