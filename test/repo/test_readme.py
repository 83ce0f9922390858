# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The README: the two commands first, short, a page list; launch file, YAML and node agree."""

import ast
from pathlib import Path

from dpt_ros.core.config import Config, iter_settings
from dpt_ros.core.params import config_from_params_file, read_params_file

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / 'README.md').read_text()
# The front door: what it is, the two commands, the demo output, a robot, the page list.
MOST_LINES = 250


def test_readme_starts_with_the_two_commands():
    blocks = README.split('```')
    first = [ln.split('#')[0].strip() for ln in blocks[1].splitlines()[1:] if ln.strip()]
    assert first == ['bash scripts/demo.sh', 'bash scripts/test.sh']
    for script in ('scripts/demo.sh', 'scripts/test.sh', 'scripts/setup_venv.sh'):
        assert (ROOT / script).is_file(), script
    assert 'bash scripts/test.sh' in (ROOT / '.ci' / 'run').read_text()


def test_readme_is_short_and_links_every_page():
    from docsutil import links, pages
    assert len(README.splitlines()) <= MOST_LINES, 'move the detail to a page in doc/'
    linked = {(ROOT / target.partition('#')[0]).resolve() for _, target in links(README)}
    unlisted = [p.name for p in pages()[1:] if p.resolve() not in linked]
    assert not unlisted, f'doc pages the README does not link: {unlisted}'


def _launch_defaults():
    """Return the launch file's argument defaults: its own, and the input table's topics."""
    from dpt_ros.core.inputs import launch_arguments
    tree = ast.parse((ROOT / 'launch' / 'dpt.launch.py').read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', '') == \
                'LAUNCH_DEFAULTS':
            return dict(ast.literal_eval(node.value),
                        **{arg: topic for arg, (topic, _) in launch_arguments().items()})
    raise AssertionError('LAUNCH_DEFAULTS not found in launch/dpt.launch.py')


def test_yaml_launch_and_node_defaults_agree():
    import pytest
    pytest.importorskip('rclpy', reason='rclpy (ROS 2) is not installed')
    from dpt_ros.ros import node as _node
    import inspect
    defaults = _launch_defaults()
    yaml_path = ROOT / 'config' / defaults['params_file']
    assert yaml_path.is_file()
    assert config_from_params_file(yaml_path) == Config()
    flat = read_params_file(yaml_path)
    assert set(flat) == {n for n, *_ in iter_settings()}
    sig = inspect.signature(_node.DptNode.__init__)
    assert sig.parameters['node_name'].default == defaults['node_name']
    assert defaults['use_sim_time'] == 'false' and defaults['namespace'] == ''
    assert (defaults['image'], defaults['camera_info']) == ('image', 'camera_info')
    assert f"named `{defaults['node_name']}`" in README and '`config/dpt.yaml`' in README
