# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The core: settings, models, pre/postprocessing, geometry, metric fitting, the pipeline.

Also the input and output tables, and the one road of a frame (frames) the node and dpt_bag
share.

No rclpy and nothing from dpt_ros.ros, dpt_ros.offline or dpt_ros.tools: it runs and is
tested without ROS (test/repo/test_layers.py enforces it).
"""
