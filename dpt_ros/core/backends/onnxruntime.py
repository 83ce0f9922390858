# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Optional ONNX Runtime backend: cached ONNX export, one session per input shape.

The CPU provider runs everywhere onnxruntime installs; with onnxruntime-gpu the CUDA (and,
where TensorRT's libraries are present, TensorRT) providers run on the GPU. onnxruntime is
imported only when the backend is asked for; when it is missing or the export fails the
caller gets the reason and keeps torch.
"""

from __future__ import annotations

import os
from pathlib import Path
import tempfile
from typing import Any, Callable, List, Optional, Tuple

import numpy as np
import torch

from dpt_ros.core.backends.export import (cache_key, eager_module, export_dtype, export_onnx,
                                          ONNX_OPSET,
                                          precision_name)
from dpt_ros.core.backends.tensorrt import engine_dir
from dpt_ros.core.models import LoadedModel

_NUMPY = {torch.float16: np.float16, torch.float32: np.float32}


def onnx_path(loaded: LoadedModel, input_shape: Tuple[int, ...], dtype: torch.dtype,
              cache: str = '', opset: int = ONNX_OPSET) -> Path:
    """Cache file of a model's export: input shape, precision, opset and weights hash."""
    key = cache_key(loaded, input_shape, precision_name(dtype), 'onnx', opset)
    return engine_dir(cache) / f'{key}.onnx'


def cached_onnx(loaded: LoadedModel, input_shape: Tuple[int, ...], dtype: torch.dtype,
                cache: str = '', opset: int = ONNX_OPSET) -> Path:
    """Return the cached ONNX export of a model at this shape and dtype, exporting it once."""
    path = onnx_path(loaded, input_shape, dtype, cache, opset)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Export beside the target, then rename: a crash never leaves a half-written cache file.
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            export_onnx(eager_module(loaded), input_shape, Path(tmp) / 'model.onnx', dtype,
                        opset)
            os.replace(Path(tmp) / 'model.onnx', path)
    return path


def providers(device: torch.device, available: List[str], cache: str = '',
              fp16: bool = False) -> List[Any]:
    """Pick execution providers for a device, best first, among those onnxruntime has."""
    if device.type != 'cuda':
        return ['CPUExecutionProvider']
    index = device.index if device.index is not None else torch.cuda.current_device()
    wanted: List[Any] = []
    if 'TensorrtExecutionProvider' in available:
        wanted.append(('TensorrtExecutionProvider', {
            'device_id': index, 'trt_fp16_enable': fp16, 'trt_engine_cache_enable': True,
            'trt_engine_cache_path': str(engine_dir(cache))}))
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

    def __init__(self, session: Any, path: Path, device: torch.device,
                 dtype: torch.dtype) -> None:
        super().__init__()
        self.session = session
        self.path = path
        self.device = device
        self.dtype = dtype
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        self.output_shape = tuple(int(s) for s in session.get_outputs()[0].shape)
        self.on_gpu = device.type == 'cuda' and session.get_providers()[0] != \
            'CPUExecutionProvider'

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = pixel_values.to(self.dtype).contiguous()
        if not self.on_gpu:
            out = self.session.run([self.output_name], {self.input_name: x.cpu().numpy()})[0]
            return torch.from_numpy(out).to(self.device)
        # GPU: bind torch's buffers directly (no host round trip); torch's queued work on
        # the input must be finished before onnxruntime's stream reads it.
        index = self.device.index or 0
        out = torch.empty(self.output_shape, dtype=self.dtype, device=self.device)
        torch.cuda.current_stream(self.device).synchronize()
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, 'cuda', index, _NUMPY[self.dtype], tuple(x.shape),
                           x.data_ptr())
        binding.bind_output(self.output_name, 'cuda', index, _NUMPY[self.dtype],
                            self.output_shape, out.data_ptr())
        self.session.run_with_iobinding(binding)
        return out


def try_build(loaded: LoadedModel, input_shape: Tuple[int, ...], cache: str = '',
              cancel: Optional[Callable[[], bool]] = None
              ) -> Tuple[Optional[OnnxRuntimeModule], str]:
    """Return (session module, description) or (None, why not); exports on first use."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None, ('onnxruntime is not installed (pip install onnxruntime, or '
                      'onnxruntime-gpu for CUDA)')
    dtype = export_dtype(loaded.dtype)  # bf16 runs as an fp32 graph
    try:
        path = cached_onnx(loaded, input_shape, dtype, cache)
        if cancel is not None and cancel():
            return None, 'cancelled'
        wanted = providers(loaded.device, ort.get_available_providers(), cache,
                           dtype == torch.float16)
        threads = max(1, torch.get_num_threads())
        session = ort.InferenceSession(str(path), session_options(ort, threads),
                                       providers=wanted)
        module = OnnxRuntimeModule(session, path, loaded.device, dtype)
        if loaded.device.type == 'cuda' and not module.on_gpu:
            return None, ('this onnxruntime has no CUDA provider for model.device '
                          f'{loaded.device} (pip install onnxruntime-gpu)')
        used = session.get_providers()[0]
        return module, f'{path} ({used}, {threads} intra-op threads)'
    except Exception as exc:  # noqa: B902 - any export/session failure falls back to torch
        text = str(exc).strip().splitlines()
        return None, f'ONNX export or session failed: {text[0][:300] if text else type(exc)}'
