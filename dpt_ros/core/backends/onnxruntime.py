# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Optional ONNX Runtime backend: cached ONNX export, one session per network input.

The CPU provider runs everywhere onnxruntime installs; with onnxruntime-gpu the CUDA (and,
where TensorRT's libraries are present, TensorRT) providers run on the GPU. A session serves
every batch size of its network input when the export is batch-free (most models), else its
one input shape. onnxruntime is imported only when the backend is asked for; when it is
missing or the export fails the caller gets the reason and keeps torch.
"""

from __future__ import annotations

import os
from pathlib import Path
import tempfile
from typing import Any, Callable, List, Optional, Tuple

import numpy as np
import torch

from dpt_ros.core.backends.export import (batch_profile, batch_tied_marker, cache_key,
                                          eager_module, engine_dir, export_batch_free,
                                          export_dtype, FREE_BATCH, INPUT_NAME, ONNX_OPSET,
                                          precision_name)
from dpt_ros.core.models import first_line, LoadedModel

_NUMPY = {torch.float16: np.float16, torch.float32: np.float32}


def onnx_path(loaded: LoadedModel, input_shape: Tuple[Any, ...], dtype: torch.dtype,
              cache: str = '', opset: int = ONNX_OPSET) -> Path:
    """Cache file of a model's export: input shape, precision, opset and model hash."""
    key = cache_key(loaded, input_shape, precision_name(dtype), 'onnx', opset)
    return engine_dir(cache) / f'{key}.onnx'


def cached_onnx(loaded: LoadedModel, input_shape: Tuple[int, ...], dtype: torch.dtype,
                cache: str = '', opset: int = ONNX_OPSET,
                cancel: Optional[Callable[[], bool]] = None) -> Tuple[Path, bool]:
    """Return (the cached export for this input, whether it runs any batch size), exporting once.

    A batch-free export is keyed with the batch as FREE_BATCH and serves every batch size;
    otherwise the export of this exact shape.
    """
    free = onnx_path(loaded, (FREE_BATCH,) + tuple(input_shape[1:]), dtype, cache, opset)
    fixed = onnx_path(loaded, input_shape, dtype, cache, opset)
    for path, any_batch in ((free, True), (fixed, False)):
        if path.exists():
            return path, any_batch
    free.parent.mkdir(parents=True, exist_ok=True)
    # Export beside the target, then rename: a crash never leaves a half-written cache file.
    with tempfile.TemporaryDirectory(dir=free.parent) as tmp:
        any_batch = export_batch_free(eager_module(loaded), input_shape, Path(tmp) / 'model.onnx',
                                      dtype, opset, cancel,
                                      batch_tied_marker(loaded, input_shape, dtype, cache, opset))
        path = free if any_batch else fixed
        os.replace(Path(tmp) / 'model.onnx', path)
    return path, any_batch


def providers(device: torch.device, available: List[str], cache: str = '', fp16: bool = False,
              profile: Optional[Tuple[Tuple[int, ...], ...]] = None) -> List[Any]:
    """Pick execution providers for a device, best first, among those onnxruntime has.

    profile: (min, opt, max) input shapes a batch-free graph's TensorRT engine is built for.
    """
    if device.type != 'cuda':
        return ['CPUExecutionProvider']
    index = device.index if device.index is not None else torch.cuda.current_device()
    wanted: List[Any] = []
    if 'TensorrtExecutionProvider' in available:
        options = {'device_id': index, 'trt_fp16_enable': fp16, 'trt_engine_cache_enable': True,
                   'trt_engine_cache_path': str(engine_dir(cache))}
        if profile is not None:
            # One engine for every batch size up to the largest, not one per size met.
            for name, shape in zip(('min', 'opt', 'max'), profile):
                options[f'trt_profile_{name}_shapes'] = \
                    f"{INPUT_NAME}:{'x'.join(str(d) for d in shape)}"
        wanted.append(('TensorrtExecutionProvider', options))
    if 'CUDAExecutionProvider' in available:
        wanted.append(('CUDAExecutionProvider', {'device_id': index}))
    return wanted + ['CPUExecutionProvider']


def session_options(ort: Any, threads: int) -> Any:
    """One intra-op pool of `threads` threads, sequential graph, all optimisations."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    # Torch runs pre- and postprocessing in the same process right after each forward: ORT's
    # pool must not keep spinning on the cores torch is about to use.
    so.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return so


class OnnxRuntimeModule(torch.nn.Module):
    """An onnxruntime session behind the LoadedModel.net contract: pixel_values -> output."""

    def __init__(self, session: Any, path: Path, device: torch.device, dtype: torch.dtype,
                 input_shape: Tuple[int, ...] = (), any_batch: bool = False,
                 max_batch: int = 0) -> None:
        super().__init__()
        self.session = session
        self.path = path
        self.device = device
        self.dtype = dtype
        self.input_shape = tuple(input_shape)
        self.any_batch = any_batch  # the export runs every batch size of its network input
        # The largest batch an engine of onnxruntime's TensorRT provider was sized for (0: no
        # such engine, no limit): a larger one gets a session of its own, counted and logged,
        # never a build inside a frame's run or a failure that ends the backend.
        self.max_batch = max_batch
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        self.on_gpu = device.type == 'cuda' and session.get_providers()[0] != \
            'CPUExecutionProvider'
        self._sample_shape: Optional[Tuple[int, ...]] = None

    def accepts(self, shape: Tuple[int, ...]) -> bool:
        """Whether this session runs pixel values of this shape."""
        if tuple(shape[1:]) != self.input_shape[1:]:
            return False
        if not self.any_batch:
            return tuple(shape) == self.input_shape
        return not self.max_batch or int(shape[0]) <= self.max_batch

    def sample_shape(self) -> Tuple[int, ...]:
        """Output shape of one input image (the exporter may leave those dimensions symbolic)."""
        if self._sample_shape is None:
            dims = self.session.get_outputs()[0].shape[1:]
            if not all(isinstance(d, int) for d in dims):
                probe = np.zeros(self.input_shape, _NUMPY[self.dtype])
                dims = self.session.run([self.output_name], {self.input_name: probe})[0].shape[1:]
            self._sample_shape = tuple(int(d) for d in dims)
        return self._sample_shape

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = pixel_values.to(self.dtype).contiguous()
        if not self.on_gpu:
            out = self.session.run([self.output_name], {self.input_name: x.cpu().numpy()})[0]
            return torch.from_numpy(out).to(self.device)
        # GPU: bind torch's buffers directly (no host round trip); torch's queued work on
        # the input must be finished before onnxruntime's stream reads it.
        index = self.device.index or 0
        out_shape = (x.shape[0],) + self.sample_shape()
        out = torch.empty(out_shape, dtype=self.dtype, device=self.device)
        torch.cuda.current_stream(self.device).synchronize()
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, 'cuda', index, _NUMPY[self.dtype], tuple(x.shape),
                           x.data_ptr())
        binding.bind_output(self.output_name, 'cuda', index, _NUMPY[self.dtype], out_shape,
                            out.data_ptr())
        self.session.run_with_iobinding(binding)
        return out


def try_build(loaded: LoadedModel, input_shape: Tuple[int, ...], cache: str = '',
              cancel: Optional[Callable[[], bool]] = None, max_batch: int = 0
              ) -> Tuple[Optional[OnnxRuntimeModule], str]:
    """Return (session module, description) or (None, why not); exports on first use.

    A batch-free export runs every batch size; max_batch, the largest the caller will run,
    sizes the engine of onnxruntime's TensorRT provider (that session then accepts batches up
    to it: a larger one builds another session).
    """
    import onnxruntime as ort
    dtype = export_dtype(loaded.dtype)  # bf16 runs as an fp32 graph
    try:
        threads = max(1, torch.get_num_threads())
        cached = [p for p in (onnx_path(loaded, (FREE_BATCH,) + tuple(input_shape[1:]), dtype,
                                        cache), onnx_path(loaded, input_shape, dtype, cache))
                  if p.exists()]
        redone = ''
        while True:
            path, any_batch = cached_onnx(loaded, input_shape, dtype, cache, cancel=cancel)
            if cancel is not None and cancel():
                return None, 'cancelled'
            profile = batch_profile(input_shape, max_batch) if any_batch else None
            wanted = providers(loaded.device, ort.get_available_providers(), cache,
                               dtype == torch.float16, profile)
            try:
                session = ort.InferenceSession(str(path), session_options(ort, threads),
                                               providers=wanted)
                break
            except Exception as exc:  # noqa: B902 - any load failure: export it once again
                if path not in cached:
                    raise
                # A cache file cut short (a full disk, a copy) or written by another version:
                # export it again rather than run eager torch from every start on.
                cached.remove(path)
                path.unlink(missing_ok=True)
                redone = f'; re-exported: the cached file could not be read ({first_line(exc)})'
        sized = profile is not None and session.get_providers()[0] == 'TensorrtExecutionProvider'
        module = OnnxRuntimeModule(session, path, loaded.device, dtype, input_shape, any_batch,
                                   profile[2][0] if sized else 0)
        if loaded.device.type == 'cuda' and not module.on_gpu:
            return None, ('this onnxruntime has no CUDA provider for model.device '
                          f'{loaded.device} (pip install onnxruntime-gpu)')
        used = session.get_providers()[0]
        return module, f'{path} ({used}, {threads} intra-op threads){redone}'
    except Exception as exc:  # noqa: B902 - any export/session failure falls back to torch
        return None, f'ONNX export or session failed: {first_line(exc)}'
