# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The ROS 2 layer: the node and the lifecycle node, their entry points and the frame scheduler."""
