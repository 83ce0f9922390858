# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The compile backend: torch.compile of the eager module, one per input shape.

On CUDA it uses CUDA graphs (mode reduce-overhead), which record on the second call and replay
from the third: a module pays all three on its first call, and hands out a copy of each output
because the next replay of any graph reuses its memory.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch

from dpt_ros.core.backends.export import eager_module
from dpt_ros.core.models import first_line, LoadedModel


class CompiledModule(torch.nn.Module):
    """A compiled module for one input shape behind the LoadedModel.net contract."""

    def __init__(self, compiled: torch.nn.Module, input_shape: Tuple[int, ...],
                 graphs: bool) -> None:
        super().__init__()
        self.compiled = compiled
        self.input_shape = tuple(input_shape)
        self.graphs = graphs  # CUDA graphs: record and replay on the first call
        self.calls = 0

    def accepts(self, shape: Tuple[int, ...]) -> bool:
        """Whether this module was compiled for pixel values of this shape."""
        return tuple(shape) == self.input_shape

    def forward(self, pixel_values: torch.Tensor, *prompt: torch.Tensor) -> Any:
        # The caller falls back to eager torch on a failure at any of these calls.
        for _ in range(3 if self.graphs and self.calls == 0 else 1):
            out = self.compiled(pixel_values, *prompt)
        self.calls += 1
        if not self.graphs:
            return out
        # Every head of a multi-head model lives in the graph's memory, not only the first.
        return tuple(t.clone() for t in out) if isinstance(out, tuple) else out.clone()


def try_build(loaded: LoadedModel, input_shape: Tuple[int, ...], cache: str = '',
              cancel: Optional[Callable[[], bool]] = None, max_batch: int = 0,
              cuda_graphs: bool = True) -> Tuple[Optional[CompiledModule], str]:
    """Return (compiled module, description) or (None, why not); compiles on its first call.

    cuda_graphs False: inductor alone on a GPU too (what benchmarks compare the graphs with).
    """
    graphs = cuda_graphs and loaded.device.type == 'cuda'
    try:
        # dynamic=False: every shape gets its own specialised graph, compiled before frames.
        compiled = torch.compile(eager_module(loaded), mode='reduce-overhead' if graphs else None,
                                 dynamic=False, fullgraph=False)
    except Exception as exc:  # noqa: B902 - any compile failure falls back to eager
        return None, f'torch.compile failed ({first_line(exc)})'
    mode = 'CUDA graphs' if graphs else 'no CUDA graphs'
    return CompiledModule(compiled, input_shape, graphs), f'torch.compile ({mode})'
