# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""`ros2 param dump` of a running dpt_node loads back with `--ros-args --params-file`.

The dump is made as ros2param's dump verb (Jazzy) makes it: every name from the node's
list_parameters service, sorted, their values from one get_parameters call (Humble's asks name
by name), converted by rclpy's parameter_value_to_python, nested at each '.' under {fully
qualified name: {ros__parameters: ...}}, written by yaml.dump(default_flow_style=False). A
second node started from that file must come up without a new warning and hold the first one's
values. rcl reads that YAML back in its own way: null as the text 'null', [] as not set, a
quoted '2024' as text.
"""

import time

import yaml

from dpt_ros.tools.toolkit import write_params_file

from rosutil import NodeProcess  # noqa: I100

from rcl_interfaces.srv import GetParameters, ListParameters  # noqa: E402, I100
from rclpy.parameter import Parameter, parameter_value_to_python  # noqa: E402

from test_parameters import call_set  # noqa: E402


def _call(harness, srv_type, service, request):
    cli = harness.node.create_client(srv_type, service)
    try:
        assert cli.wait_for_service(timeout_sec=10), service
        fut = cli.call_async(request)
        assert harness.wait(fut.done, 10), service
        return fut.result()
    finally:
        harness.node.destroy_client(cli)


def ros2_param_dump(harness, fqn):
    """Return what `ros2 param dump FQN` prints for a running node."""
    names = sorted(_call(harness, ListParameters, f'{fqn}/list_parameters',
                         ListParameters.Request()).result.names)
    values = _call(harness, GetParameters, f'{fqn}/get_parameters',
                   GetParameters.Request(names=names)).values
    # One name rclpy cannot answer (a statically typed parameter never set) empties the
    # whole answer, and ros2param then dumps no parameters at all.
    assert len(values) == len(names), f'get_parameters answered {len(values)} of {len(names)}'
    tree = {}
    for name, value in zip(names, values):
        *groups, key = name.split('.')
        branch = tree
        for group in groups:
            branch = branch.setdefault(group, {})
        branch[key] = parameter_value_to_python(value)
    return yaml.dump({fqn: {'ros__parameters': tree}}, default_flow_style=False)


def _flat(tree, prefix=''):
    out = {}
    for key, value in tree.items():
        name = f'{prefix}{key}'
        out.update(_flat(value, name + '.') if isinstance(value, dict) else {name: value})
    return out


def _start(params_file, ns):
    node = NodeProcess(['--params-file', str(params_file), '-r', f'__ns:={ns}'])
    deadline = time.monotonic() + 90
    while 'dpt_ros ready' not in node.text() and node.proc.poll() is None and \
            time.monotonic() < deadline:
        time.sleep(0.2)
    assert 'dpt_ros ready' in node.text(), node.text()
    return node


def _complaints(node):
    return [ln for ln in node.text().splitlines() if '[WARN]' in ln or '[ERROR]' in ln or
            'error:' in ln or 'Traceback' in ln]


def _round_trip(harness, tmp_path, ns, params, live=None):
    """Start a node from params (then set live), dump it, restart from the dump; compare."""
    fqn = f'{ns}/dpt'
    harness.start()
    first = _start(write_params_file(tmp_path / 'first.yaml', params), ns)
    try:
        for name, value in (live or {}).items():
            if value == []:  # as `ros2 param set NODE NAME '[]'` sends it: an empty bool array
                value = Parameter(name, Parameter.Type.BOOL_ARRAY, [])
            res = call_set(harness, 'dpt', {name: value}, ns)
            assert res[0].successful, (name, res[0].reason)
        dumped = ros2_param_dump(harness, fqn)
    finally:
        first.stop()
    before = _complaints(first)
    dump_file = tmp_path / 'mine.yaml'
    dump_file.write_text(dumped)
    second = _start(dump_file, ns)
    try:
        again = ros2_param_dump(harness, fqn)
    finally:
        second.stop()
    new = [ln.split(']: ', 1)[-1] for ln in _complaints(second)]
    assert not [ln for ln in new if ln not in {b.split(']: ', 1)[-1] for b in before}], \
        (new, dumped)
    want, got = (_flat(yaml.safe_load(text)[fqn]['ros__parameters']) for text in (dumped, again))
    typed = {k: (type(v), v) for k, v in got.items()}  # 2 and 2.0 differ here
    assert typed == {k: (type(v), v) for k, v in want.items()}, (
        {k: (want.get(k), got.get(k)) for k in set(want) | set(got)
         if (type(want.get(k)), want.get(k)) != typed.get(k)}, dumped)
    return want


def test_dump_of_a_started_node_loads_back(harness, tmp_path, tiny_metric, tiny_seg):
    """Lists set and emptied, read-only ones changed, doubles, text that reads as a number."""
    import json
    labels = json.loads((tiny_seg / 'config.json').read_text())['id2label']
    params = {
        'model.depth': str(tiny_metric), 'model.segmentation': str(tiny_seg),
        'model.device': 'cpu',
        'model.keep_aspect_ratio': 'false',   # text that YAML reads as a bool unless quoted
        'model.engine_dir': '2024',           # text that YAML reads as a number unless quoted
        'model.warmup_sizes': [],             # a list emptied
        'points.exclude_classes': [labels['1']],  # a list set
        'anchors.extrinsic': '0 0 0.5 0 0 0 1',
        'depth.max': 7.5, 'depth.scale': 2,   # doubles, one written as an integer
        'output.history_depth': 3,            # read-only, changed
        'diagnostics.period': 0.5,
        'use_sim_time': False,
    }
    got = _round_trip(harness, tmp_path, '/dump_started', params)
    assert got['points.exclude_classes'] == [labels['1']]
    assert got['model.warmup_sizes'] == [] and got['cameras'] == []
    assert got['model.engine_dir'] == '2024' and got['model.keep_aspect_ratio'] == 'false'
    assert got['depth.max'] == 7.5 and got['depth.scale'] == 2
    assert got['output.history_depth'] == 3
    assert len(got['segmentation.class_names']) == len(labels)


def test_dump_after_ros2_param_set_loads_back(harness, tmp_path, tiny_metric):
    """A depth-only node tuned live (an integer for a double, a list emptied with '[]')."""
    params = {'model.depth': str(tiny_metric), 'model.device': 'cpu',
              'anchors.camera_extrinsics': [], 'model.warmup_sizes': ['64x48']}
    live = {'depth.max': 3, 'depth.encoding': '16UC1', 'depth.colormap': 'gray',
            'points.stride': 2, 'anchors.camera_extrinsics': []}
    got = _round_trip(harness, tmp_path, '/dump_live', params, live)
    assert got['depth.max'] == 3 and got['points.stride'] == 2
    assert got['depth.encoding'] == '16UC1' and got['depth.colormap'] == 'gray'
    assert got['anchors.camera_extrinsics'] == [] and got['model.warmup_sizes'] == ['64x48']


def test_null_lists_of_an_earlier_dump_load_as_empty(harness, tmp_path, tiny_metric):
    """Dumps made while empty lists were declared not set hold null there: rcl reads 'null'."""
    params = {'model.depth': str(tiny_metric), 'model.device': 'cpu', 'cameras': None,
              'model.warmup_sizes': None, 'points.exclude_classes': None,
              'anchors.camera_extrinsics': None, 'segmentation.class_names': None}
    path = write_params_file(tmp_path / 'old.yaml', params)
    assert 'cameras: null' in path.read_text()
    harness.start()
    node = _start(path, '/dump_null')
    try:
        got = _flat(yaml.safe_load(ros2_param_dump(harness, '/dump_null/dpt'))['/dump_null/dpt']
                    ['ros__parameters'])
    finally:
        node.stop()
    assert not [ln for ln in _complaints(node) if 'null' in ln], node.text()
    for name in ('cameras', 'model.warmup_sizes', 'points.exclude_classes',
                 'anchors.camera_extrinsics', 'segmentation.class_names'):
        assert got[name] == [], name
