# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""launch/dpt.launch.py, run against stand-ins for launch and launch_ros (not installable here).

Its arguments are its own plus one per remappable input of the input table, and the node it
starts remaps exactly those topics.
"""

import importlib.util
from pathlib import Path
import sys
import types

import pytest

from dpt_ros.core import inputs

ROOT = Path(__file__).resolve().parents[2]


class _Action:
    """Stands in for every launch action and substitution: keeps what it was given."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def perform(self, context):
        return context.get(self.args[0], '')


@pytest.fixture
def launch_file(monkeypatch):
    """Return launch/dpt.launch.py imported with stand-in launch modules."""
    def module(name, *names):
        m = types.ModuleType(name)
        for n in names:
            setattr(m, n, type(n, (_Action,), {}))
        monkeypatch.setitem(sys.modules, name, m)
        return m
    module('ament_index_python')
    module('ament_index_python.packages').get_package_share_directory = lambda p: f'/s/{p}'
    module('launch', 'LaunchDescription')
    module('launch.actions', 'DeclareLaunchArgument', 'OpaqueFunction', 'SetEnvironmentVariable')
    module('launch.conditions', 'IfCondition')
    module('launch.substitutions', 'LaunchConfiguration')
    module('launch_ros')
    module('launch_ros.actions', 'LifecycleNode', 'Node')
    module('launch_ros.parameter_descriptions', 'ParameterValue')
    spec = importlib.util.spec_from_file_location('dpt_launch', ROOT / 'launch' / 'dpt.launch.py')
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    return launch


def test_arguments_are_its_own_and_the_input_topics(launch_file):
    actions = launch_file.generate_launch_description().args[0]
    declared = [(a.args[0], a.kwargs['default_value'], a.kwargs['description'])
                for a in actions if type(a).__name__ == 'DeclareLaunchArgument']
    topics = [(arg, topic, text) for arg, (topic, text) in inputs.launch_arguments().items()]
    assert [a for a, _, _ in topics] == ['image', 'camera_info', 'anchors_depth',
                                         'anchors_camera_info', 'anchors_points']
    own = [(k, v, launch_file.DESCRIPTIONS[k]) for k, v in launch_file.LAUNCH_DEFAULTS.items()]
    own[2] = ('params_file', '/s/dpt_ros/config/dpt.yaml', own[2][2])
    assert own[2][0] == 'params_file'
    assert declared == own[:3] + topics + own[3:]


@pytest.mark.parametrize('lifecycle, kind', [('false', 'Node'), ('true', 'LifecycleNode')])
def test_the_node_remaps_the_input_topics(launch_file, lifecycle, kind):
    opaque = launch_file.generate_launch_description().args[0][-1]
    node, = opaque.kwargs['function']({'cameras': '', 'lifecycle': lifecycle})
    assert type(node).__name__ == kind
    assert node.kwargs['respawn'] is False and node.kwargs['respawn_delay'] is None
    remaps = [(topic, arg.args[0]) for topic, arg in node.kwargs['remappings']]
    assert remaps == [('image', 'image'), ('camera_info', 'camera_info'),
                      ('anchors/depth', 'anchors_depth'),
                      ('anchors/camera_info', 'anchors_camera_info'),
                      ('anchors/points', 'anchors_points')]


def test_large_frames_names_the_profile_the_way_this_fast_dds_reads_it(launch_file):
    """One variable: Fast DDS 2 (Jazzy) ignores FASTDDS_..., Fast DDS 3 warns about FASTRTPS_..."""
    from dpt_ros.ros import fastdds
    actions = launch_file.generate_launch_description().args[0]
    env = [a for a in actions if type(a).__name__ == 'SetEnvironmentVariable']
    major = fastdds.fastdds_major()
    assert major in (2, 3)  # rclpy is loaded in this process, as launch_ros loads it
    read = fastdds.FASTRTPS_VAR if major == 2 else fastdds.FASTDDS_VAR
    assert [a.args for a in env] == [(read, '/s/dpt_ros/config/fastdds_large_frames.xml')]
    assert type(env[0].kwargs['condition']).__name__ == 'IfCondition'
    assert env[0].kwargs['condition'].args[0].args == ('large_frames',)


@pytest.mark.parametrize('respawn', ['true', 'True', '1'])
def test_log_level_and_respawn_reach_the_node(launch_file, respawn):
    opaque = launch_file.generate_launch_description().args[0][-1]
    node, = opaque.kwargs['function']({'cameras': '', 'lifecycle': 'false', 'respawn': respawn,
                                       'log_level': 'debug'})
    args = node.kwargs['arguments']
    assert args[:2] == ['--ros-args', '--log-level']
    assert args[2].perform({'log_level': 'debug'}) == 'debug'
    assert node.kwargs['respawn'] is True
    assert node.kwargs['respawn_delay'] == launch_file.RESPAWN_DELAY_S > 0
