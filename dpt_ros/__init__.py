# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""dpt_ros: DPT depth, point clouds and semantic segmentation for ROS 2."""

__version__ = '0.1.0'
