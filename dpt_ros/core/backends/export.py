# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""ONNX export and cache keys shared by the ONNX-based backends (TensorRT, ONNX Runtime, ...).

A loaded model is exported for one network input (channels, height, width) with a free batch
axis when its graph does not depend on the batch size (checked: the exports traced at two batch
sizes must be identical), else at one fixed input shape (a marker file in the cache keeps that
verdict: the check runs once per model and network input). Whatever a backend builds from it is
cached under a key made of the model's hash (its weights, class, heads and config, and the
torch and transformers versions that trace it; computed once per loaded model), every
dimension of the input shape (the batch as 'N' when free, or the range an engine covers), the
precision, the ONNX opset and the backend's own target (runtime version and device). bf16
models are exported in fp32: the TorchScript exporter cannot write bf16 ("ScalarType
ComplexDouble is an unexpected tensor scalar type"), and the runtime chooses the precision of
an fp32 graph itself.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
import re
import tempfile
from typing import Callable, Optional, Sequence, Tuple, Union
import warnings

import torch

from dpt_ros.core.config import cache_dir
from dpt_ros.core.models import LoadedModel

ONNX_OPSET = 17
INPUT_NAME = 'pixel_values'
OUTPUT_NAME = 'output'
FREE_BATCH = 'N'  # the batch dimension of a cache key when the export takes any batch size
PRECISION_NAMES = {torch.float32: 'fp32', torch.float16: 'fp16', torch.bfloat16: 'bf16'}


def engine_dir(path: str = '') -> Path:
    """Return the engine cache folder (model.engine_dir, default config.cache_dir('engines'))."""
    return Path(path).expanduser() if path else cache_dir('engines')


def precision_name(dtype: torch.dtype) -> str:
    """Name a torch dtype: 'fp32', 'fp16' or 'bf16'."""
    return PRECISION_NAMES.get(dtype, 'fp32')


def export_dtype(dtype: torch.dtype) -> torch.dtype:
    """Return the dtype a model of this dtype is exported in (bf16 goes out as fp32)."""
    return torch.float32 if dtype == torch.bfloat16 else dtype


def eager_module(loaded: LoadedModel) -> torch.nn.Module:
    """Return the torch module of a loaded model, also when a backend replaced loaded.net."""
    return loaded.eager if loaded.eager is not None else loaded.net


def weights_hash(net: torch.nn.Module) -> str:
    """SHA-256 over parameter and buffer names, shapes, dtypes and bytes (first 16 hex)."""
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        h.update(f'{name}:{tuple(t.shape)}:{t.dtype}'.encode())
        flat = t.detach().to('cpu').contiguous().reshape(-1)  # 0-d buffers cannot be viewed
        h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def graph_identity(net: torch.nn.Module) -> str:
    """Describe what shapes an exported graph besides the weights: class, heads, config.

    A config field changes the graph with the same weights (max_depth scales a metric Depth
    Anything's output; hidden_act, readout_type ...), and so may another transformers or
    torch. Private config fields (the folder it was loaded from) are left out.
    """
    import transformers
    inner = getattr(net, 'model', net)
    config = getattr(inner, 'config', None)
    settings = {k: v for k, v in config.to_dict().items() if not k.startswith('_')} \
        if config is not None else {}
    return json.dumps({'class': type(inner).__name__, 'heads': list(getattr(net, 'heads', ())),
                       'config': settings, 'torch': torch.__version__,
                       'transformers': transformers.__version__}, sort_keys=True, default=str)


def model_hash(loaded: LoadedModel) -> str:
    """Return the cache hash of a loaded model (weights_hash and graph_identity), kept on it."""
    if not loaded.weights_hash:
        # DPT-Large is ~1 GB of weights: copy to the host and hash once, not per input shape.
        net = eager_module(loaded)
        h = hashlib.sha256(weights_hash(net).encode())
        h.update(graph_identity(net).encode())
        loaded.weights_hash = h.hexdigest()[:16]
    return loaded.weights_hash


def _slug(text: str) -> str:
    return re.sub(r'[^A-Za-z0-9.]+', '-', text).strip('-')


def cache_key(model: Union[LoadedModel, str], input_shape: Sequence[Union[int, str]],
              precision: str, target: str, opset: int = ONNX_OPSET) -> str:
    """File stem for a cached export or engine: target, shape, precision, opset, model hash.

    model is a LoadedModel (its hash is computed once and kept) or a model hash string;
    input_shape has every dimension: ints, and the batch as FREE_BATCH or a range ('1-8');
    target names what the artefact is built for, e.g. 'NVIDIA-H100_trt10.3.0' or 'onnx'.
    """
    digest = model if isinstance(model, str) else model_hash(model)
    shape = 'x'.join(_slug(str(s)) for s in input_shape)
    return f'dpt_{_slug(target)}_{shape}_{precision}_opset{int(opset)}_{digest}'


def batch_profile(input_shape: Tuple[int, ...], max_batch: int = 0
                  ) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]:
    """(min, opt, max) input shapes of an engine for batches 1..max_batch of this input.

    Tuned for the largest batch: the one that takes longest.
    """
    top = (max(int(max_batch), int(input_shape[0])),) + tuple(int(d) for d in input_shape[1:])
    return (1,) + top[1:], top, top


def export_onnx(net: torch.nn.Module, input_shape: Tuple[int, ...], path: Union[str, Path],
                dtype: torch.dtype = torch.float32, opset: int = ONNX_OPSET,
                free_batch: bool = False) -> Path:
    """Export pixel_values -> output (depth or logits) traced at input_shape to ONNX.

    free_batch names the batch axis dynamic (the caller checks the graph is batch-free: see
    export_batch_free). A bf16 request exports an fp32 copy of the module (the model in
    memory is left as is).
    """
    dtype = export_dtype(dtype)
    params = next(net.parameters())
    device = params.device
    if params.dtype != dtype:
        net = copy.deepcopy(net).to(dtype)
    net.eval()  # export restores the mode it finds: it must find eval
    dummy = torch.zeros(input_shape, dtype=dtype, device=device)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # tracer notes on shapes fixed by design
        torch.onnx.export(net, (dummy,), str(path), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                          dynamic_axes=({INPUT_NAME: {0: 'batch'}, OUTPUT_NAME: {0: 'batch'}}
                                        if free_batch else None))
    return path


def batch_tied_marker(loaded: LoadedModel, input_shape: Sequence[int], dtype: torch.dtype,
                      cache: str = '', opset: int = ONNX_OPSET) -> Path:
    """File in the cache saying a model's graph holds its batch size for this network input.

    Written by export_batch_free when the check finds so: the next batch size of that input
    (a new session or engine) is exported at its fixed shape straight away, without the two
    trial exports of the check.
    """
    key = cache_key(loaded, (FREE_BATCH,) + tuple(input_shape[1:]),
                    precision_name(export_dtype(dtype)), 'onnx', opset)
    return engine_dir(cache) / f'{key}.batch-tied'


def export_batch_free(net: torch.nn.Module, input_shape: Tuple[int, ...],
                      path: Union[str, Path], dtype: torch.dtype = torch.float32,
                      opset: int = ONNX_OPSET, cancel: Optional[Callable[[], bool]] = None,
                      tied: Optional[Path] = None) -> bool:
    """Export to path with a free batch axis if the graph allows it; else at input_shape.

    Returns True for a graph that runs any batch size. A model whose traced graph holds its
    batch size (a split or reshape by a Python int, as ZoeDepth's neck does) exports
    differently at two batch sizes: that one is exported at the fixed input_shape instead.
    tied: the model's batch_tied_marker; where it exists the check is skipped (one export),
    and a check that finds the batch held creates it.
    """
    if tied is None or not tied.exists():
        b = int(input_shape[0])
        with tempfile.TemporaryDirectory() as tmp:
            other = export_onnx(net, (b + 1,) + tuple(input_shape[1:]),
                                Path(tmp) / 'other.onnx', dtype, opset, free_batch=True)
            if cancel is not None and cancel():
                raise BuildCancelled('export cancelled')
            export_onnx(net, input_shape, path, dtype, opset, free_batch=True)
            if Path(path).read_bytes() == other.read_bytes():
                return True
        if tied is not None:
            tied.parent.mkdir(parents=True, exist_ok=True)
            tied.touch()
    export_onnx(net, input_shape, path, dtype, opset)
    return False


class BuildCancelled(RuntimeError):
    """An export or engine build was abandoned (shutdown)."""
