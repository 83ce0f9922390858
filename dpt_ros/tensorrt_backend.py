# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Optional TensorRT backend: ONNX export, cached engine build, engine runner, offline builder.

Nothing here is needed for torch inference: TensorRT is imported only when the backend is
asked for, and when it is missing or a build fails the caller gets the reason and keeps torch.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path
import re
import sys
import tempfile
from typing import Any, Dict, List, Optional, Tuple
import warnings

import torch

from dpt_ros.models import LoadedModel

DEFAULT_ENGINE_DIR = Path('~/.cache/dpt_ros/engines')


def engine_dir(path: str = '') -> Path:
    """Return the engine cache folder (model.engine_dir, default ~/.cache/dpt_ros/engines)."""
    return Path(path or DEFAULT_ENGINE_DIR).expanduser()


def weights_hash(net: torch.nn.Module) -> str:
    """SHA-256 over parameter and buffer names, shapes, dtypes and bytes (first 16 hex)."""
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        h.update(f'{name}:{tuple(t.shape)}:{t.dtype}'.encode())
        h.update(t.detach().to('cpu').contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _slug(text: str) -> str:
    return re.sub(r'[^A-Za-z0-9.]+', '-', text).strip('-')


def engine_key(net: torch.nn.Module, input_shape: Tuple[int, ...], precision: str,
               gpu_name: str, trt_version: str) -> str:
    """Engine file name: GPU name, TensorRT version, input shape, precision, weights hash."""
    shape = 'x'.join(str(int(s)) for s in input_shape)
    return (f'dpt_{_slug(gpu_name)}_trt{_slug(trt_version)}_{shape}_{precision}_'
            f'{weights_hash(net)}.engine')


def export_onnx(net: torch.nn.Module, input_shape: Tuple[int, ...], path: Path,
                dtype: torch.dtype = torch.float32, opset: int = 17) -> Path:
    """Export pixel_values -> output (depth or logits) at a fixed shape to ONNX."""
    net.eval()  # export restores the mode it finds: it must find eval
    device = next(net.parameters()).device
    dummy = torch.zeros(input_shape, dtype=dtype, device=device)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # tracer notes on shapes fixed by design
        torch.onnx.export(net, (dummy,), str(path), input_names=['pixel_values'],
                          output_names=['output'], opset_version=opset, dynamo=False)
    return path


_PRECISION = {torch.float16: 'fp16', torch.bfloat16: 'bf16', torch.float32: 'fp32'}


class TensorRTModule(torch.nn.Module):
    """A deserialized engine behind the LoadedModel.net contract: pixel_values -> output."""

    def __init__(self, engine: Any, path: Path) -> None:
        super().__init__()
        import tensorrt as trt
        self.engine = engine
        self.path = path
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names
                       if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self._torch_dtype = {trt.float32: torch.float32, trt.float16: torch.float16,
                             trt.bfloat16: torch.bfloat16}

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        name = self.inputs[0]
        want = self._torch_dtype[self.engine.get_tensor_dtype(name)]
        x = pixel_values.to(want).contiguous()
        self.context.set_input_shape(name, tuple(x.shape))
        self.context.set_tensor_address(name, x.data_ptr())
        out_name = self.outputs[0]
        shape = tuple(self.context.get_tensor_shape(out_name))
        out = torch.empty(shape, dtype=self._torch_dtype[self.engine.get_tensor_dtype(
            out_name)], device=x.device)
        self.context.set_tensor_address(out_name, out.data_ptr())
        stream = torch.cuda.current_stream(x.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f'TensorRT execution failed for {self.path}')
        return out


def _build(onnx_path: Path, engine_path: Path, precision: str) -> None:
    import tensorrt as trt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt, 'NetworkDefinitionCreationFlag') and \
            hasattr(trt.NetworkDefinitionCreationFlag, 'EXPLICIT_BATCH'):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f'ONNX parse failed: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 4 << 30)
    if precision == 'fp16':
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == 'bf16' and hasattr(trt.BuilderFlag, 'BF16'):
        config.set_flag(trt.BuilderFlag.BF16)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise RuntimeError('TensorRT could not build an engine (see its log above)')
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_suffix('.tmp')
    tmp.write_bytes(bytes(blob))
    os.replace(tmp, engine_path)  # atomic: a crashed build never leaves a broken cache file


def try_build(loaded: LoadedModel, input_shape: Tuple[int, ...],
              cache: str = '') -> Tuple[Optional[TensorRTModule], str]:
    """Return (engine module, path) or (None, why not); builds and caches on first use."""
    if loaded.device.type != 'cuda':
        return None, f'TensorRT needs a CUDA device; model.device resolved to {loaded.device}'
    try:
        import tensorrt as trt
    except ImportError:
        return None, 'tensorrt is not installed (pip install tensorrt)'
    precision = _PRECISION.get(loaded.dtype, 'fp32')
    net = loaded.eager if loaded.eager is not None else loaded.net
    try:
        gpu = torch.cuda.get_device_name(loaded.device)
        path = engine_dir(cache) / engine_key(net, input_shape, precision, gpu,
                                              trt.__version__)
        if not path.exists():
            with tempfile.TemporaryDirectory() as tmp:
                onnx_path = export_onnx(net, input_shape, Path(tmp) / 'model.onnx',
                                        torch.float32 if precision == 'bf16' else loaded.dtype)
                _build(onnx_path, path, precision)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            return None, f'cannot deserialize {path} (delete it to rebuild)'
        return TensorRTModule(engine, path), str(path)
    except Exception as exc:  # noqa: B902 - any export/build failure falls back to torch
        text = str(exc).strip().splitlines()
        return None, f'engine build failed: {text[0][:300] if text else type(exc).__name__}'


def main(argv: Optional[List[str]] = None) -> int:
    """`dpt_build_engine`: build and cache the TensorRT engine ahead of time."""
    from dpt_ros.config import ConfigError
    from dpt_ros.models import load_model, ModelLoadError
    from dpt_ros.params import config_from_params_file
    ap = argparse.ArgumentParser(
        prog='dpt_build_engine', description='Build the TensorRT engine the node would build '
        'on its first frame (model.backend: tensorrt), so start-up is fast.')
    ap.add_argument('--params-file', help="the node's params YAML")
    ap.add_argument('--node-name', default='dpt')
    ap.add_argument('--model', help='override model.depth')
    ap.add_argument('--segmentation', help='override model.segmentation')
    ap.add_argument('--device', default=None, help='override model.device (needs CUDA)')
    ap.add_argument('--height', type=int, required=True, help='camera image height')
    ap.add_argument('--width', type=int, required=True, help='camera image width')
    args = ap.parse_args(argv)
    overrides: Dict[str, Any] = {'model.backend': 'tensorrt'}
    for key, value in (('model.depth', args.model), ('model.segmentation', args.segmentation),
                       ('model.device', args.device)):
        if value is not None:
            overrides[key] = value
    try:
        if args.params_file:
            cfg = config_from_params_file(args.params_file, args.node_name, overrides)
        else:
            from dpt_ros.config import config_from_flat
            cfg = config_from_flat(overrides)
        built = 0
        for task, source in (('depth', cfg.model.depth),
                             ('segmentation', cfg.model.segmentation)):
            if not source:
                continue
            loaded = load_model(source, task, cfg.model, log=print)
            h, w = loaded.spec.output_size(args.height, args.width)
            module, info = try_build(loaded, (1, 3, h, w), cfg.model.engine_dir)
            if module is None:
                print(f'dpt_build_engine: {task}: not built: {info}', file=sys.stderr)
            else:
                built += 1
                print(f'{task}: engine for {args.width}x{args.height} frames '
                      f'(network input {w}x{h}): {info}')
    except (ConfigError, ModelLoadError) as exc:
        print(f'dpt_build_engine: error: {exc}', file=sys.stderr)
        return 2
    return 0 if built else 1


if __name__ == '__main__':
    sys.exit(main())
