# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Command-line tools and their helpers: benchmarks, evaluation, demo, checkpoints, samples."""
