# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Optional inference runtimes behind model.backend: ONNX export, ONNX Runtime, TensorRT."""
