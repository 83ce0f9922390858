# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The inference backends behind model.backend: the one table of them (stdlib only).

Each row names a backend, says what it runs, which module builds it, whether it needs a CUDA
device and which package it imports. The parameter's choices and description, the pipeline's
build step (dpt_ros.core.backends.runner), dpt_bench's defaults and the GPU check all read it.
A row's module has try_build(loaded, input_shape, cache, cancel=..., max_batch=...) returning
(module, what happened) or (None, why not); it is imported only when the backend is used.
"""

from __future__ import annotations

from dataclasses import dataclass
import importlib
import importlib.util
from types import ModuleType
from typing import Dict, List, Tuple


@dataclass(frozen=True)
class Backend:
    """One row of the backend table."""

    name: str              # the model.backend value
    description: str       # what it runs (the parameter's description)
    module: str = ''       # module whose try_build builds it; '' for eager torch
    cuda_only: bool = False
    requires: str = ''     # package it imports ('' : torch alone)
    install: str = ''      # how to install that package
    bench_on_cpu: bool = True  # dpt_bench times it on a CPU by default
    one_output: bool = False  # an exported graph: one input (pixel values), one output

    def installed(self) -> bool:
        """Whether the package it needs is importable here (no import is done)."""
        try:
            return not self.requires or importlib.util.find_spec(self.requires) is not None
        except (ImportError, ValueError):
            return False

    def missing(self) -> str:
        """Why it cannot be imported here ('' when it can); imports its package."""
        if not self.requires:
            return ''
        try:
            importlib.import_module(self.requires)
        except ImportError:
            return f'{self.requires} is not installed ({self.install})'
        return ''

    def load(self) -> ModuleType:
        """Import the module that builds this backend."""
        return importlib.import_module(self.module)


TENSORRT_PIN = 'tensorrt>=10,<12'

BACKENDS: Tuple[Backend, ...] = (
    Backend('torch', 'eager PyTorch'),
    Backend('compile', 'torch.compile, CUDA graphs on GPU', 'dpt_ros.core.backends.torch_compile',
            bench_on_cpu=False),
    Backend('tensorrt', 'a TensorRT engine, CUDA only', 'dpt_ros.core.backends.tensorrt',
            cuda_only=True, requires='tensorrt', install=f'pip install "{TENSORRT_PIN}"',
            one_output=True),
    Backend('onnxruntime', 'ONNX Runtime: CPU provider, or CUDA / TensorRT providers with '
            'onnxruntime-gpu', 'dpt_ros.core.backends.onnxruntime', requires='onnxruntime',
            install='pip install onnxruntime, or onnxruntime-gpu for CUDA', one_output=True),
)

BY_NAME: Dict[str, Backend] = {b.name: b for b in BACKENDS}
NAMES: Tuple[str, ...] = tuple(BY_NAME)
EAGER = BACKENDS[0].name


def runnable(cuda: bool) -> List[str]:
    """Names of the backends that can run here: installed, and on a CUDA device if needed."""
    return [b.name for b in BACKENDS if b.installed() and (cuda or not b.cuda_only)]
