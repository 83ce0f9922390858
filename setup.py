# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

from glob import glob

from setuptools import find_packages, setup

package_name = 'dpt_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*')),
    ],
    package_data={package_name: ['share/*']},
    python_requires='>=3.10',
    # Core needs; ROS 2 itself (rclpy, sensor_msgs, ...) comes from the robot's ROS install,
    # and the ROS wheels used in CI live in requirements/ros-jazzy.txt, never here.
    install_requires=[
        'setuptools',
        'numpy',
        'torch>=2.1',
        'transformers>=4.45',
        'safetensors',
        'opencv-python-headless',
        'pyyaml',
    ],
    extras_require={
        'bag': ['rosbags>=0.10'],
        'ray': ['rosbags>=0.10', 'ray>=2.9'],
        'test': ['pytest', 'rosbags>=0.10', 'mcap', 'flake8', 'pydocstyle'],
    },
    zip_safe=True,
    maintainer='dpt_ros maintainers',
    maintainer_email='maintainers@dpt-ros.invalid',
    description='DPT depth, point clouds and semantic segmentation for ROS 2',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'dpt_node = dpt_ros.ros.entry:main',
            'dpt_lifecycle_node = dpt_ros.ros.entry:lifecycle_main',
            'dpt_bag = dpt_ros.offline.cli:main',
            'dpt_bench = dpt_ros.tools.bench:main',
            'dpt_eval = dpt_ros.tools.evaluation:main',
            'dpt_demo = dpt_ros.tools.demo:main',
            'dpt_build_engine = dpt_ros.tools.build_engine:main',
            'dpt_checkpoints = dpt_ros.tools.checkpoints:main',
        ],
    },
)
