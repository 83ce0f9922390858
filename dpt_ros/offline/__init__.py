# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Offline processing: recorded bags in, bags of outputs out (`dpt_bag`), serial or on Ray."""
