# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Start dpt_node: ros2 launch dpt_ros dpt.launch.py image:=/camera/color/image_raw ...

Several cameras through one model: cameras:=[front,rear]. A managed (lifecycle) node that
a lifecycle manager or `ros2 lifecycle set` brings up: lifecycle:=true.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue

from dpt_ros.core.inputs import launch_arguments
from dpt_ros.core.params import parse_camera_list
from dpt_ros.ros.fastdds import fastdds_major, profile_env

# Argument defaults; test_readme.py checks them against the node and config/dpt.yaml. The
# input topics' arguments (image, camera_info, anchors_depth, ...) come from the input table
# (dpt_ros/core/inputs.py), declared after params_file.
LAUNCH_DEFAULTS = {
    'namespace': '',
    'node_name': 'dpt',
    'params_file': 'dpt.yaml',  # in this package's share/config folder
    'use_sim_time': 'false',
    'large_frames': 'false',
    'cameras': '',
    'lifecycle': 'false',
    'log_level': 'info',
    'respawn': 'false',
}
RESPAWN_DELAY_S = 2.0  # a node that exits is started again after this long (respawn:=true)

DESCRIPTIONS = {
    'namespace': 'Namespace of the node (e.g. /camera); topics are relative to it.',
    'node_name': 'Node name (the params file section /**/<node_name> also applies).',
    'params_file': 'YAML parameters file (--ros-args --params-file).',
    'use_sim_time': 'true when replaying a bag with `ros2 bag play --clock`.',
    'large_frames': 'true: use the packaged Fast DDS profile (64 MB shared memory segment) '
                    'for every process this launch starts; see doc/robot.md.',
    'cameras': 'Camera names, e.g. [front,rear]: one node, one model, camera C on C/image and '
               'C/camera_info with its outputs under C/. Empty: the single camera of image '
               'and camera_info. Overrides cameras in params_file.',
    'lifecycle': 'true: start the managed node (dpt_lifecycle_node), unconfigured; bring it '
                 'up with `ros2 lifecycle set` or a lifecycle manager.',
    'log_level': 'Log level of the node: debug, info, warn, error or fatal.',
    'respawn': 'true: start the node again 2 s after it exits (a managed node comes back '
               'unconfigured, for its lifecycle manager to bring up).',
}


def _flag(context, name):
    """Return a true/false launch argument as a bool."""
    return LaunchConfiguration(name).perform(context).lower() in ('true', '1')


def _node(context, *_args, **_kwargs):
    """Return the node action, once the camera list and the node kind are known."""
    parameters = [
        LaunchConfiguration('params_file'),
        {'use_sim_time': ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool)},
    ]
    cameras = parse_camera_list(LaunchConfiguration('cameras').perform(context))
    if cameras:  # an empty list has no parameter type: leave the params file's value
        parameters.append({'cameras': cameras})
    managed = _flag(context, 'lifecycle')
    kind, executable = (LifecycleNode, 'dpt_lifecycle_node') if managed else (Node, 'dpt_node')
    respawn = _flag(context, 'respawn')
    return [kind(
        package='dpt_ros',
        executable=executable,
        name=LaunchConfiguration('node_name'),
        namespace=LaunchConfiguration('namespace'),
        parameters=parameters,
        arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level')],
        respawn=respawn,
        respawn_delay=RESPAWN_DELAY_S if respawn else None,
        remappings=[(topic, LaunchConfiguration(name))
                    for name, (topic, _) in launch_arguments().items()],
        output='screen',
        emulate_tty=True,
    )]


def generate_launch_description():
    """Declare the arguments and the node (dpt_node or dpt_lifecycle_node)."""
    share = get_package_share_directory('dpt_ros')
    defaults = dict(LAUNCH_DEFAULTS)
    defaults['params_file'] = os.path.join(share, 'config', defaults['params_file'])
    args = []
    for name, value in defaults.items():
        args.append(DeclareLaunchArgument(name, default_value=value,
                                          description=DESCRIPTIONS[name]))
        if name == 'params_file':
            args += [DeclareLaunchArgument(topic_arg, default_value=topic, description=text)
                     for topic_arg, (topic, text) in launch_arguments().items()]
    profile = os.path.join(share, 'config', 'fastdds_large_frames.xml')
    large = IfCondition(LaunchConfiguration('large_frames'))
    # Only the variable this Fast DDS reads: Jazzy ignores FASTDDS_..., Kilted warns about
    # FASTRTPS_... in every process (dpt_ros/ros/fastdds.py).
    env = [SetEnvironmentVariable(var, profile, condition=large)
           for var in profile_env(profile, fastdds_major())]
    return LaunchDescription(args + env + [OpaqueFunction(function=_node)])
