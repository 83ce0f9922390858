# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The ROS 2 layer: the nodes and what they hold, one concern per module.

node (DptNode, DptLifecycleNode, the Runtime their transitions run), parameters, cameras
(camera I/O), worker (the frame path on its thread), scheduler, diagnostics, entry. No torch:
everything computed comes from dpt_ros.core.
"""
