# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The node's parameters (dpt_ros.ros.parameters): declared from the table, validated, live.

In-process over real DDS (`ros2 param set` through the service), and as a process started with
a params file (a bad or unknown parameter exits with one line).
"""

from pathlib import Path
import time

import numpy as np
import pytest

from dpt_ros.core import conversions as conv
from dpt_ros.core.config import Config
from dpt_ros.tools.sample import synthetic_scene
from dpt_ros.tools.toolkit import write_params_file

from rosutil import header, NodeProcess  # noqa: I100

from rcl_interfaces.msg import Log, ParameterType  # noqa: E402, I100
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402

from dpt_ros.ros.node import DptNode  # noqa: E402

NS = '/cam'


def call_set(harness, node_name, params, ns=NS):
    """Set parameters through the node's service, as `ros2 param set` does.

    params: name -> value, or a typed rclpy Parameter (an empty list of a given type).
    """
    cli = harness.node.create_client(SetParameters, f'{ns}/{node_name}/set_parameters')
    assert cli.wait_for_service(timeout_sec=10)
    req = SetParameters.Request()
    req.parameters = [(v if isinstance(v, Parameter) else Parameter(k, value=v)).to_parameter_msg()
                      for k, v in params.items()]
    fut = cli.call_async(req)
    assert harness.wait(fut.done, 10)
    return fut.result().results


def call_set_atomically(harness, params, node_name='dpt', ns=NS):
    """Set parameter messages all or none, through the node's service; return the result."""
    from rcl_interfaces.srv import SetParametersAtomically
    cli = harness.node.create_client(SetParametersAtomically,
                                     f'{ns}/{node_name}/set_parameters_atomically')
    assert cli.wait_for_service(timeout_sec=10)
    fut = cli.call_async(SetParametersAtomically.Request(parameters=params))
    assert harness.wait(fut.done, 10)
    return fut.result().result


def send_frame(harness, pubs, scene, i, topics, ns=NS):
    """Publish frame i (camera_info, then the image); return its message on each topic."""
    h = header(i)
    pubs[1].publish(conv.camera_info_from_intrinsics(scene.intrinsics, h))
    pubs[0].publish(conv.image_msg(h, scene.rgb, 'rgb8'))
    return [harness.wait_stamp(f'{ns}/{t}', conv.stamp_ns(h)) for t in topics]


def test_parameters_validated_and_live(harness, tiny_metric):
    node = harness.start_node(NS, **{'model.depth': str(tiny_metric), 'model.device': 'cpu'})
    harness.record_outputs(NS, ['depth/image', 'points'])
    pubs = harness.publishers(NS)
    assert harness.wait_subscribed(pubs[0])
    s = synthetic_scene(128, 96)

    def frame(i):
        return send_frame(harness, pubs, s, i, ['depth/image', 'points'])

    d0, p0 = frame(0)
    depth0 = conv.image_to_array(d0)
    assert np.nanmax(depth0) > 1.0
    # Refused with the reason; nothing changes.
    for bad, word in (({'depth.max': -3.0}, 'depth.max'), ({'depth.encoding': '8UC3'}, '32FC1'),
                      ({'depth.min': 50.0}, 'depth.min'), ({'points.stride': 0}, 'stride'),
                      ({'model.depth': '/elsewhere'}, 'read-only'),
                      ({'depth.colormap': 'rainbow'}, 'inferno'),
                      ({'depth.max': 'far'}, 'float'),
                      # names a setting read at start-up: says how to change that one
                      ({'depth.mode': 'fitted'}, 'anchors.source cannot change while the node '
                       'runs; read at start-up: restart the node with it set')):
        res = call_set(harness, 'dpt', bad)
        assert not res[0].successful, bad
        assert word in res[0].reason, (bad, res[0].reason)
    # A double stays a double to `ros2 param describe` after a value of another type was sent.
    assert node.describe_parameter('depth.max').type == ParameterType.PARAMETER_DOUBLE
    # Live: applied from the next frame, no reload.
    res = call_set(harness, 'dpt', {'depth.max': 1, 'points.stride': 4,
                                    'depth.encoding': '16UC1'})
    assert all(r.successful for r in res), [r.reason for r in res]
    d1, p1 = frame(1)
    assert d1.encoding == '16UC1'
    mm = conv.image_to_array(d1)
    assert mm.max() <= 1000 and (mm == 0).sum() > (~np.isfinite(depth0)).sum()
    assert (p1.height, p1.width) == (96 // 4, 128 // 4)
    # Relative depth by the mode chosen, on a metric checkpoint: the advice names the mode.
    harness.record('/rosout', Log, QoSProfile(depth=1000))
    assert call_set(harness, 'dpt', {'depth.mode': 'relative_inverse'})[0].successful
    h = header(2)
    pubs[0].publish(conv.image_msg(h, s.rgb, 'rgb8'))
    assert harness.wait(lambda: any(
        f"{NS}/points has a subscriber but is not published: no metres under depth.mode "
        "'relative_inverse': 'auto' or 'metric' for a metric checkpoint" in m.msg
        for m in harness.get('/rosout')), 10)


def test_node_defaults_match_yaml_and_table(harness, tiny_depth):
    """Declared defaults == config/dpt.yaml == the parameter table (no overrides given)."""
    from dpt_ros.core.params import config_from_params_file, param_table
    from dpt_ros.core.pipeline import Pipeline
    root = Path(__file__).resolve().parents[2]
    cfg = Config().replace({'model.depth': str(tiny_depth), 'model.device': 'cpu'})
    node = DptNode('dpt', context=harness.ctx, pipeline=Pipeline(cfg))
    harness.add_node(node)
    yaml_cfg = config_from_params_file(root / 'config' / 'dpt.yaml')
    assert yaml_cfg == Config()
    for spec in param_table():
        if spec.type is tuple:  # an empty list, set (never 'not set': test_param_dump.py)
            assert spec.default == ()
            assert list(node.get_parameter(spec.name).value) == []
            assert node.describe_parameter(spec.name).type == \
                ParameterType.PARAMETER_STRING_ARRAY
        else:
            assert node.get_parameter(spec.name).value == spec.default, spec.name
        desc = node.describe_parameter(spec.name)
        assert desc.description.startswith(spec.description), spec.name
        assert desc.read_only == spec.read_only, spec.name
        if spec.range is not None:
            rng = desc.floating_point_range or desc.integer_range
            assert rng and (rng[0].from_value, rng[0].to_value) == spec.range, spec.name
    assert ParameterType.PARAMETER_DOUBLE == node.describe_parameter('depth.max').type


@pytest.mark.parametrize('params, words', [
    ({'depth.max': -5.0}, ['depth.max']),
    ({'depth.encoding': '8UC3'}, ['depth.encoding', '32FC1']),
    ({'depth.min': 30.0}, ['depth.min', 'depth.max']),
    ({'depth.maxx': 3.0}, ['depth.maxx']),
    ({'model.precision': 'fp8'}, ['model.precision']),
    ({'points.stride': 'two'}, ['points.stride', "= 'two'"]),
    ({'model.warmup_sizes': ['640x480', '1280 by 720']},
     ['model.warmup_sizes', "'1280 by 720'", 'WIDTHxHEIGHT']),
    # A file ROS itself cannot read (rcl refuses a list mixing text and numbers).
    ({'points.exclude_classes': ['sky', 2]}, ['params file', 'same type', "['sky', '2']"]),
])
def test_bad_parameter_at_startup_exits_with_one_message(tmp_path, tiny_metric, params, words):
    params = dict({'model.depth': str(tiny_metric), 'model.device': 'cpu'}, **params)
    node = NodeProcess(['--params-file', str(write_params_file(tmp_path / 'p.yaml', params))])
    rc = node.wait_exit(60)
    err = ''.join(node.err)
    assert rc == 2, node.text()
    lines = [ln for ln in err.splitlines() if 'dpt_node: error:' in ln]
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], lines[0]
    assert 'Traceback' not in err


def test_names_outside_the_table_are_ignored_and_typos_named(tmp_path, tiny_metric):
    """A /** section may carry other nodes' settings: ignored, but a near miss is warned about."""
    params = {'model.depth': str(tiny_metric), 'model.device': 'cpu',
              'camera': ['front'], 'modle.precision': 'fp16', 'frame_rate': 30,
              'qos_overrides./camera/points.publisher.reliability': 'best_effort'}
    node = NodeProcess(['--params-file', str(write_params_file(tmp_path / 'p.yaml', params))])
    try:
        deadline = time.monotonic() + 60
        while 'dpt_ros ready' not in node.text() and node.proc.poll() is None and \
                time.monotonic() < deadline:
            time.sleep(0.2)
        text = node.text()
        assert 'dpt_ros ready' in text, text
        assert "'camera' is not a dpt_ros parameter and is ignored: did you mean 'cameras'?" \
            in text
        assert "did you mean 'model.precision'?" in text
        assert 'ignored, not dpt_ros parameters: frame_rate' in text
        assert "'frame_rate' is not" not in text  # no near miss: told, not warned
        # The standard QoS override parameters are not read here: said, with what is.
        assert 'qos_overrides./camera/points.publisher.reliability: not read: dpt_ros sets ' \
            'its QoS from input.reliability' in text
    finally:
        node.stop()


def test_list_parameter_set_back_to_empty_as_ros2_param_set_sends_it(harness, tiny_metric,
                                                                     tiny_seg):
    """`ros2 param set /cam/dpt points.exclude_classes '[]'` undoes [wall] from the next frame.

    ros2param guesses a value's type from its YAML: '[]' goes out as an empty bool array, '[2]'
    as an integer array; rclpy's client sends [] as a byte array. Neither is a string array.
    """
    from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterValue
    node = harness.start_node(NS, **{'model.depth': str(tiny_metric), 'model.device': 'cpu',
                                     'model.segmentation': str(tiny_seg)})
    harness.record_outputs(NS, ['points'])
    pubs = harness.publishers(NS)
    assert harness.wait_subscribed(pubs[0])
    s = synthetic_scene(96, 72)

    def points(i):
        return bytes(send_frame(harness, pubs, s, i, ['points'])[0].data)

    def cli_set(value_type, **values):
        msg = ParameterMsg(name='points.exclude_classes',
                           value=ParameterValue(type=value_type, **values))
        cli = harness.node.create_client(SetParameters, f'{NS}/dpt/set_parameters')
        assert cli.wait_for_service(timeout_sec=10)
        fut = cli.call_async(SetParameters.Request(parameters=[msg]))
        assert harness.wait(fut.done, 10)
        return fut.result().results[0]

    before = points(0)
    names = node.get_parameter('segmentation.class_names').value
    for i, empty in enumerate(({'value_type': ParameterType.PARAMETER_BOOL_ARRAY},
                               {'value_type': ParameterType.PARAMETER_BYTE_ARRAY})):
        assert call_set(harness, 'dpt', {'points.exclude_classes': names[:3]})[0].successful
        assert points(10 * i + 1) != before
        res = cli_set(**empty)
        assert res.successful, res.reason
        assert node.config.points.exclude_classes == ()
        assert points(10 * i + 2) == before  # as it was: every class kept again
    # Numbers where names go: refused, with the parameter and how to write ids.
    res = cli_set(ParameterType.PARAMETER_INTEGER_ARRAY, integer_array_value=[2])
    assert not res.successful
    assert 'points.exclude_classes' in res.reason and "['2']" in res.reason, res.reason
    for bad in ('wall', 5):
        res = call_set(harness, 'dpt', {'points.exclude_classes': bad})[0]
        assert not res.successful and 'points.exclude_classes' in res.reason, res.reason
    assert points(3) == before  # still publishing, under the settings it had
    assert node.config.points.exclude_classes == ()
    assert node.describe_parameter('points.exclude_classes').type == \
        ParameterType.PARAMETER_STRING_ARRAY
    # `ros2 param delete` (a value not set) is refused: rclpy would undeclare it.
    res = cli_set(ParameterType.PARAMETER_NOT_SET)
    assert not res.successful and 'cannot be deleted' in res.reason, res.reason
    assert node.has_parameter('points.exclude_classes')
    assert points(4) == before


def test_change_during_a_frame_applies_to_the_whole_of_the_next(harness, tiny_metric):
    """A change landing while a frame is decoded: that frame all old settings, the next all new.

    depth/image's encoding and its range and the points of one frame come under one set of
    settings. The worker read the settings when it took the frame, the model ran under those
    in force at the forward: a 32FC1 image cut at the new depth.max, points of another range.
    """
    import threading
    node = harness.start_node(NS, **{'model.depth': str(tiny_metric), 'model.device': 'cpu'})
    harness.record_outputs(NS, ['depth/image', 'points'])
    pubs = harness.publishers(NS)
    assert harness.wait_subscribed(pubs[0])
    s = synthetic_scene(96, 72)
    inside, go, hold = threading.Event(), threading.Event(), [False]
    cam = node.cameras[0]
    real = cam.calibration.for_frame

    def held(*args):  # a slow decode: the worker has the frame, the forward is still to come
        if hold[0]:
            hold[0] = False
            inside.set()
            go.wait(10)
        return real(*args)
    cam.calibration.for_frame = held

    def far(depth_msg, _points=None):
        """depth/image's encoding and farthest valid depth in metres."""
        d = conv.image_to_array(depth_msg).astype(np.float64)
        d = d / 1000.0 if depth_msg.encoding == '16UC1' else d
        return depth_msg.encoding, float(np.nanmax(np.where(d > 0, d, np.nan)))

    old = send_frame(harness, pubs, s, 0, ['depth/image', 'points'])
    assert far(*old)[1] > 1.0
    hold[0] = True
    h = header(1)
    pubs[1].publish(conv.camera_info_from_intrinsics(s.intrinsics, h))
    pubs[0].publish(conv.image_msg(h, s.rgb, 'rgb8'))
    assert inside.wait(20)
    assert call_set_atomically(harness, [
        Parameter(k, value=v).to_parameter_msg()
        for k, v in (('depth.encoding', '16UC1'), ('depth.max', 1.0))]).successful
    go.set()
    during = [harness.wait_stamp(f'{NS}/{t}', conv.stamp_ns(h)) for t in ('depth/image',
                                                                          'points')]
    after = send_frame(harness, pubs, s, 2, ['depth/image', 'points'])
    assert far(*during) == far(*old)  # the old settings, all of them
    assert bytes(during[1].data) == bytes(old[1].data)
    encoding, farthest = far(*after)
    assert encoding == '16UC1' and farthest <= 1.0
    assert bytes(after[1].data) != bytes(old[1].data)


# Every live parameter of the table: a new value, and the outputs it changes on a metric +
# segmentation node with depth.confidence flip, depth.temporal false (depth/confidence then
# depends on the frame alone) and no anchors (anchors.source is read-only: the anchors.*
# settings change nothing there, and must not). A live parameter added to the table and not
# here fails the walk.
LIVE_EFFECTS = {
    'depth.mode': ('affine_inverse', {'depth/image', 'depth/colored', 'points', 'normals/image',
                                      'normals/colored'}),
    'depth.scale': (2.0, {'depth/image', 'depth/colored', 'points', 'normals/image',
                          'normals/colored'}),
    'depth.shift': (0.5, set()),  # affine_inverse only
    'depth.min': (2.0, {'depth/image', 'depth/colored', 'points', 'normals/image',
                        'normals/colored'}),
    'depth.max': (3.0, {'depth/image', 'depth/colored', 'points', 'normals/image',
                        'normals/colored'}),
    'depth.encoding': ('16UC1', {'depth/image'}),
    'depth.colormap': ('gray', {'depth/colored'}),
    'depth.temporal': (False, set()),  # fitted and relative_inverse only
    # off: no depth/confidence; depth/image is no longer the mean of the two predictions
    'depth.confidence': ('off', {'depth/confidence', 'depth/image', 'points', 'normals/image',
                                 'normals/colored'}),
    'depth.confidence_tolerance': (0.01, {'depth/confidence', 'points'}),
    'points.stride': (3, {'points'}),
    'points.organized': (False, {'points'}),
    'points.rgb': (False, {'points'}),
    'points.min_confidence': (0.9, {'points'}),
    'points.normals': (True, {'points'}),
    'points.labels': (False, {'points'}),
    'points.exclude_classes': (['wall'], {'points'}),
    'points.colour': ('label', {'points'}),
    'normals.max_jump': (0.001, {'normals/image', 'normals/colored'}),
    'anchors.max_age': (1.0, set()),
    'anchors.hold': (5.0, set()),
    'anchors.hold_frames': (10, set()),
    'anchors.extrinsic': ('0 0 0 0 0 0 1', set()),
    'anchors.camera_extrinsics': ([], set()),  # only [] without cameras: as ros2 param sends it
    'anchors.fit': ('affine', set()),
    'anchors.min_count': (20, set()),
    'anchors.min_inlier_fraction': (0.9, set()),
    'anchors.min_gain': (0.9, set()),
    'anchors.min_spread': (0.9, set()),
    'anchors.max_points': (100, set()),
    # also the outlier bound of the flip alignment (its description says so)
    'anchors.inlier_threshold': (0.5, {'depth/confidence', 'points'}),
    'segmentation.overlay_alpha': (1.0, {'segmentation/overlay'}),
    'output.overlap': (False, set()),
    'batch.max_size': (1, set()),
    'batch.max_wait_ms': (0.0, set()),
}


def _invalid(spec):
    """Return a value of the parameter's type that its range or choices refuse (or None)."""
    if spec.choices:
        return 'bogus'
    if spec.range is not None:
        return spec.type(spec.range[1] * 2 + 1)
    return {tuple: [2], str: 'junk'}.get(spec.type)


def test_every_live_parameter_changes_what_it_says_and_back(harness, tiny_metric, tiny_seg):
    """Walk the table's live parameters: each changes its outputs and back, bit for bit.

    Each new value changes exactly its outputs from the next frame, the old value gives the
    first frame's outputs back, and a value out of range is refused, naming the parameter and
    what is allowed, with nothing changed.
    """
    from dpt_ros.core import outputs
    from dpt_ros.core.params import param_table
    live = {spec.name: spec for spec in param_table() if not spec.read_only}
    assert set(live) == set(LIVE_EFFECTS)
    node = harness.start_node(NS, **{'model.depth': str(tiny_metric), 'model.device': 'cpu',
                                     'model.segmentation': str(tiny_seg),
                                     'depth.confidence': 'flip', 'depth.temporal': False})
    # depth/relative comes and goes with depth.mode: a frame would be complete without it.
    topics = [o.topic for o in outputs.OUTPUTS if o.topic != 'depth/relative']
    harness.record_outputs(NS, topics)
    pubs = harness.publishers(NS)
    assert harness.wait_subscribed(pubs[0])
    s = synthetic_scene(96, 72)
    count = [0]

    def content(msg):
        """Return every field but the header (arrays as bytes)."""
        return tuple(v.tobytes() if hasattr(v, 'tobytes') else repr(v)
                     for v in (getattr(msg, f) for f in msg.get_fields_and_field_types()
                               if f != 'header'))

    def frame(gone=()):
        """Send the next frame; return its outputs: {topic: content}."""
        count[0] += 1
        names = [t for t in topics if t not in gone]
        return dict(zip(names, map(content, send_frame(harness, pubs, s, count[0], names))))

    def set_one(name, value):
        if value == []:  # `ros2 param set NODE NAME '[]'` sends an empty bool array
            return node.set_parameters([Parameter(name, Parameter.Type.BOOL_ARRAY, [])])[0]
        return call_set(harness, 'dpt', {name: value})[0]

    first = frame()
    assert set(first) == set(topics)
    cfg = node.config
    started = {n: node.get_parameter(n).value for n in live}
    for name, (value, changes) in LIVE_EFFECTS.items():
        bad = _invalid(live[name])
        if bad is not None:
            res = set_one(name, bad)
            assert not res.successful and name in res.reason, (name, res.reason)
            allowed = live[name].choices[:1] or \
                [str(live[name].type(v)) for v in live[name].range or ()]
            assert all(a in res.reason for a in allowed), (name, res.reason, allowed)
            assert node.config == cfg, name
        res = set_one(name, value)
        assert res.successful, (name, res.reason)
        gone = {'depth/confidence'} if name == 'depth.confidence' else set()
        got = frame(gone)
        changed = {t for t in topics if got.get(t) != first[t]}
        assert changed == changes, name
        assert set_one(name, started[name]).successful, name
        assert node.config == cfg, name
        assert frame() == first, name
    # Several at once, one of them out of range: none is taken.
    many = [Parameter(n, value=v).to_parameter_msg() for n, (v, _) in LIVE_EFFECTS.items()
            if v != []]
    many.append(Parameter('points.stride', value=0).to_parameter_msg())
    res = call_set_atomically(harness, many)
    assert not res.successful and 'points.stride' in res.reason
    assert node.config == cfg and frame() == first
