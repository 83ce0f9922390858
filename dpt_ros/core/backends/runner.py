# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Run loaded models on the configured backend: each module built once, kept per input shape.

A backend module says which input shapes it runs (accepts): an ONNX Runtime session or a
TensorRT engine of a batch-free graph runs every batch size of its network input (TensorRT:
up to the largest it was built for), anything else its one shape. When the backend cannot be
used (not installed, no CUDA, refused, failed to build) or fails on a frame, the model goes
back to eager torch for good, with one log line saying why.

A model's first network input is built on its first frame. Outside warm-up (prepare), any
other is built the second time it comes, its first frame running eager torch: a camera whose
frame size keeps changing (a cropping driver, a broken one) costs eager forwards, not a build
per size that stalls every camera. At most MAX_MODULES modules are kept per model, the least
recently used dropped first.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from dpt_ros.core.backends import BY_NAME, EAGER
from dpt_ros.core.models import first_line, LoadedModel

LOG = logging.getLogger('dpt_ros')
MAX_MODULES = 8  # built modules kept per model (ONNX Runtime sessions, engines), LRU


class BackendRunner:
    """Builds, keeps and runs the backend modules of one pipeline's models; counts builds."""

    def __init__(self, backend: str, engine_dir: str = '',
                 log: Callable[[str], None] = LOG.info,
                 cancel: Callable[[], bool] = lambda: False) -> None:
        self.backend = BY_NAME[backend]
        self.engine_dir = engine_dir
        self.log = log
        self.cancel = cancel  # polled by long builds: True abandons them (shutdown)
        self.builds: Dict[str, int] = {}  # backend name -> modules built or loaded
        # Keyword arguments for the backend's try_build (e.g. cuda_graphs=False for compile).
        self.options: Dict[str, Any] = {}
        self._modules: Dict[int, List[torch.nn.Module]] = {}  # model id -> modules, LRU first
        self._off: Dict[int, str] = {}  # model id -> why it runs eager torch
        self._seen: Dict[Tuple[int, Tuple[int, ...]], int] = {}  # unbuilt network inputs met
        self.warming = False  # prepare() runs: build at once, whatever was seen

    def module_for(self, m: LoadedModel, shape: Tuple[int, ...],
                   max_batch: int = 0) -> Optional[torch.nn.Module]:
        """Return the module that runs this input shape, building it once; None: eager torch.

        max_batch: the largest batch of this network input the caller will run (an engine
        built now covers it).
        """
        name = self.backend.name
        if name == EAGER or id(m) in self._off:
            return None
        built = self._modules.setdefault(id(m), [])
        found = next((x for x in built if x.accepts(shape)), None)
        if found is not None:
            built.remove(found)
            built.append(found)  # the most recently used last
            return found
        if m.eager is None:
            m.eager = m.net
        why = self._unavailable(m)
        known = any(x.accepts((1,) + tuple(shape[1:])) for x in built)  # a larger batch only
        if not why and built and not known and not self.warming:
            key = (id(m), tuple(shape[1:]))  # the network input, whatever the batch
            self._seen[key] = self._seen.get(key, 0) + 1
            if self._seen[key] < 2:
                return None  # another input's first frame: eager; built if it comes again
        module, info = (None, why) if why else self.backend.load().try_build(
            m, shape, self.engine_dir, cancel=self.cancel, max_batch=max_batch, **self.options)
        if module is None:
            self.log(f'model.backend {name} unavailable ({info}); running on torch.')
            self._eager(m, info)
            return None
        built.append(module)
        self.builds[name] = self.builds.get(name, 0) + 1
        self.log(f'model.backend {name} for input {tuple(shape)}: {info}')
        if len(built) > MAX_MODULES:
            dropped = built.pop(0)
            was = getattr(dropped, 'input_shape', '?')  # every backend module names its input
            self.log(f'model.backend {name}: dropped the least recently used module, for input '
                     f'{was} (at most {MAX_MODULES} kept per model)')
        return module

    def run(self, m: LoadedModel, pixel_values: torch.Tensor, max_batch: int = 0,
            prompt_depth: Optional[torch.Tensor] = None,
            heads: Optional[Tuple[str, ...]] = None) -> Any:
        """Run a model on pixel values with its backend module for their shape, or eager.

        prompt_depth: a prompted model's metric prompt. heads: what this call needs (eager
        torch skips the other heads where the model can; a built module gives them all).
        """
        shape = tuple(pixel_values.shape)
        module = self.module_for(m, shape, max_batch)
        if module is None and m.eager is not None and id(m) not in self._off:
            m.net, m.backend = m.eager, EAGER  # an input not built (yet): eager this frame
        if module is not None:
            m.net, m.backend = module, self.backend.name
            try:
                if prompt_depth is not None:
                    return module(pixel_values, prompt_depth)
                return module(pixel_values)
            except Exception as exc:  # noqa: B902 - any backend failure falls back
                self.log(f'model.backend {m.backend} failed on input {shape} '
                         f'({first_line(exc)}); running eager torch from now on.')
                self._eager(m, first_line(exc))
        return m(pixel_values, prompt_depth, heads)

    def modules(self, m: LoadedModel) -> List[torch.nn.Module]:
        """Return the backend modules built for a model so far."""
        return list(self._modules.get(id(m), []))

    def why_eager(self, m: LoadedModel) -> str:
        """Why a model runs eager torch under another backend ('' when it does not)."""
        return self._off.get(id(m), '')

    def release(self) -> None:
        """Drop every built module (engines, sessions): the pipeline closes."""
        self._modules.clear()
        self._seen.clear()

    def _unavailable(self, m: LoadedModel) -> str:
        """Why the backend cannot run this model here ('' when it may)."""
        if self.backend.cuda_only and m.device.type != 'cuda':
            return f'{self.backend.name} needs a CUDA device; model.device resolved to {m.device}'
        if self.backend.one_output and (len(m.heads) > 1 or m.needs_prompt):
            return (f"it runs single-output models only; {m.source} gives {', '.join(m.heads)}"
                    f"{' from a prompt' if m.needs_prompt else ''}")
        return self.backend.missing()

    def _eager(self, m: LoadedModel, why: str) -> None:
        # For good: one line said why; no new attempt on every new shape.
        self._off[id(m)] = why
        self._modules.pop(id(m), None)
        if m.eager is not None:
            m.net = m.eager
        m.backend = EAGER
