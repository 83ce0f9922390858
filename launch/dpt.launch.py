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

from dpt_ros.core.params import parse_camera_list

# Argument defaults; test_launch_defaults.py checks them against the node and config/dpt.yaml.
LAUNCH_DEFAULTS = {
    'namespace': '',
    'node_name': 'dpt',
    'params_file': 'dpt.yaml',  # in this package's share/config folder
    'image': 'image',
    'camera_info': 'camera_info',
    'anchors_depth': 'anchors/depth',
    'anchors_camera_info': 'anchors/camera_info',
    'anchors_points': 'anchors/points',
    'use_sim_time': 'false',
    'large_frames': 'false',
    'cameras': '',
    'lifecycle': 'false',
}

DESCRIPTIONS = {
    'namespace': 'Namespace of the node (e.g. /camera); topics are relative to it.',
    'node_name': 'Node name (the params file section /**/<node_name> also applies).',
    'params_file': 'YAML parameters file (--ros-args --params-file).',
    'image': 'Input image topic (remap target, e.g. /camera/color/image_raw); with '
             'input.transport compressed the node subscribes to <image>/compressed.',
    'camera_info': 'Input CameraInfo topic (remap target, e.g. /camera/color/camera_info).',
    'anchors_depth': 'depth.mode fitted, anchors.source depth_image: depth registered to the '
                     'colour image (e.g. /camera/aligned_depth_to_color/image_raw).',
    'anchors_camera_info': 'CameraInfo of anchors_depth when its resolution differs.',
    'anchors_points': 'depth.mode fitted, anchors.source points: a PointCloud2 (lidar, ToF).',
    'use_sim_time': 'true when replaying a bag with `ros2 bag play --clock`.',
    'large_frames': 'true: use the packaged Fast DDS profile (64 MB shared memory segment) '
                    'for every process this launch starts; see the README.',
    'cameras': 'Camera names, e.g. [front,rear]: one node, one model, camera C on C/image and '
               'C/camera_info with its outputs under C/. Empty: the single camera of image '
               'and camera_info. Overrides cameras in params_file.',
    'lifecycle': 'true: start the managed node (dpt_lifecycle_node), unconfigured; bring it '
                 'up with `ros2 lifecycle set` or a lifecycle manager.',
}


def _node(context, *_args, **_kwargs):
    """Return the node action, once the camera list and the node kind are known."""
    parameters = [
        LaunchConfiguration('params_file'),
        {'use_sim_time': ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool)},
    ]
    cameras = parse_camera_list(LaunchConfiguration('cameras').perform(context))
    if cameras:  # an empty list has no parameter type: leave the params file's value
        parameters.append({'cameras': cameras})
    managed = LaunchConfiguration('lifecycle').perform(context).lower() in ('true', '1')
    kind, executable = (LifecycleNode, 'dpt_lifecycle_node') if managed else (Node, 'dpt_node')
    return [kind(
        package='dpt_ros',
        executable=executable,
        name=LaunchConfiguration('node_name'),
        namespace=LaunchConfiguration('namespace'),
        parameters=parameters,
        remappings=[
            ('image', LaunchConfiguration('image')),
            ('camera_info', LaunchConfiguration('camera_info')),
            *((name.replace('_', '/', 1), LaunchConfiguration(name))
              for name in ('anchors_depth', 'anchors_camera_info', 'anchors_points')),
        ],
        output='screen',
        emulate_tty=True,
    )]


def generate_launch_description():
    """Declare the arguments and the node (dpt_node or dpt_lifecycle_node)."""
    share = get_package_share_directory('dpt_ros')
    defaults = dict(LAUNCH_DEFAULTS)
    defaults['params_file'] = os.path.join(share, 'config', defaults['params_file'])
    args = [DeclareLaunchArgument(name, default_value=value, description=DESCRIPTIONS[name])
            for name, value in defaults.items()]
    profile = os.path.join(share, 'config', 'fastdds_large_frames.xml')
    large = IfCondition(LaunchConfiguration('large_frames'))
    env = [SetEnvironmentVariable(var, profile, condition=large)
           for var in ('FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE')]
    return LaunchDescription(args + env + [OpaqueFunction(function=_node)])
