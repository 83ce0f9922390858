# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Optional TensorRT backend: ONNX export, cached engine build, engine runner, offline builder.

Nothing here is needed for torch inference: TensorRT is imported only when the backend is
asked for, and when it is missing or a build fails the caller gets the reason and keeps torch.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import signal
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from dpt_ros.core.backends.export import (cache_key, eager_module, export_dtype, export_onnx,
                                          precision_name)
from dpt_ros.core.models import LoadedModel

DEFAULT_ENGINE_DIR = Path('~/.cache/dpt_ros/engines')
# Built and run through the name-based API of TensorRT 10 (execute_async_v3, strongly typed
# networks) which TensorRT 11 keeps; 11 drops weak typing (BuilderFlag.FP16 / BF16).
SUPPORTED_MAJORS = (10, 11)
SUPPORTED_PIN = 'tensorrt>=10,<12'


def engine_dir(path: str = '') -> Path:
    """Return the engine cache folder (model.engine_dir, default ~/.cache/dpt_ros/engines)."""
    return Path(path or DEFAULT_ENGINE_DIR).expanduser()


def engine_key(model: Any, input_shape: Tuple[int, ...], precision: str, gpu_name: str,
               trt_version: str) -> str:
    """Engine file name: GPU, TensorRT version, input shape, precision, opset, weights hash."""
    return cache_key(model, input_shape, precision, f'{gpu_name}_trt{trt_version}') + '.engine'


def unsupported(trt_version: str, precision: str, has_bf16_flag: bool) -> Optional[str]:
    """Why this TensorRT cannot build this precision (None when it can); one line."""
    try:
        major = int(trt_version.split('.')[0])
    except ValueError:
        major = -1
    if major not in SUPPORTED_MAJORS:
        return (f'TensorRT {trt_version} is not supported (dpt_ros uses TensorRT 10 and 11: '
                f'pip install "{SUPPORTED_PIN}")')
    if precision == 'bf16' and not has_bf16_flag:
        return (f'model.precision bf16 is not built with TensorRT {trt_version}: the ONNX export '
                'cannot carry bf16 and TensorRT 11 has no BF16 builder flag; use fp16 with '
                'tensorrt, or bf16 with the torch or compile backend')
    return None


def build_mode(precision: str, has_strong_typing: bool) -> Tuple[bool, Optional[str]]:
    """(strongly typed?, builder flag name or None) for a precision.

    fp32 / fp16: the ONNX carries the precision and a strongly typed network keeps it (the
    only mode TensorRT 11 has). bf16: the ONNX is fp32 and the BF16 flag (TensorRT 10) lets
    the builder choose bf16 kernels where they are faster.
    """
    if precision == 'bf16':
        return False, 'BF16'
    if has_strong_typing:
        return True, None
    return False, 'FP16' if precision == 'fp16' else None


class TensorRTModule(torch.nn.Module):
    """A deserialized engine behind the LoadedModel.net contract: pixel_values -> output."""

    def __init__(self, engine: Any, path: Path, built: bool, seconds: float) -> None:
        super().__init__()
        import tensorrt as trt
        self.engine = engine
        self.path = path
        self.built = built        # True: built by this process; False: loaded from the cache
        self.seconds = seconds    # build or load time
        self.calls = 0
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names
                       if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        dtypes = {trt.float32: torch.float32, trt.float16: torch.float16}
        if hasattr(trt, 'bfloat16'):
            dtypes[trt.bfloat16] = torch.bfloat16
        self.in_dtype = dtypes[engine.get_tensor_dtype(self.inputs[0])]
        self.out_dtype = dtypes[engine.get_tensor_dtype(self.outputs[0])]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = pixel_values.to(self.in_dtype).contiguous()
        # The engine, its context and the buffers live on one GPU: make it the current one
        # (cuda:N) and run on the caller's current stream of that GPU (the pipeline's own).
        with torch.cuda.device(x.device):
            name = self.inputs[0]
            self.context.set_input_shape(name, tuple(x.shape))
            self.context.set_tensor_address(name, x.data_ptr())
            out_name = self.outputs[0]
            shape = tuple(self.context.get_tensor_shape(out_name))
            out = torch.empty(shape, dtype=self.out_dtype, device=x.device)
            self.context.set_tensor_address(out_name, out.data_ptr())
            stream = torch.cuda.current_stream(x.device)
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f'TensorRT execution failed for {self.path}')
        self.calls += 1
        return out


class BuildCancelled(RuntimeError):
    """The engine build was abandoned (shutdown)."""


def _progress_monitor(trt: Any, cancel: Optional[Callable[[], bool]]) -> Any:
    """Make an IProgressMonitor whose step_complete cancels the build once cancel() is True."""

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.cancelled = False

        def phase_start(self, phase_name: str, parent_phase: Optional[str],
                        num_steps: int) -> None:
            pass

        def step_complete(self, phase_name: str, step: int) -> bool:
            # Called from TensorRT's C++: never let an exception (Ctrl-C's KeyboardInterrupt
            # in dpt_build_engine) unwind through it; cancel the build instead.
            try:
                self.cancelled = self.cancelled or bool(cancel is not None and cancel())
            except BaseException:  # noqa: B902
                self.cancelled = True
            return not self.cancelled

        def phase_finish(self, phase_name: str) -> None:
            pass

    return _Monitor()


def _build(onnx_path: Path, engine_path: Path, precision: str,
           cancel: Optional[Callable[[], bool]] = None) -> None:
    import tensorrt as trt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags_enum = trt.NetworkDefinitionCreationFlag
    strong, flag = build_mode(precision, hasattr(flags_enum, 'STRONGLY_TYPED'))
    network = builder.create_network(1 << int(flags_enum.STRONGLY_TYPED) if strong else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f'ONNX parse failed: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 4 << 30)
    if flag is not None:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    monitor = None
    if hasattr(trt, 'IProgressMonitor') and hasattr(config, 'progress_monitor'):
        monitor = _progress_monitor(trt, cancel)
        config.progress_monitor = monitor
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        if monitor is not None and monitor.cancelled:
            raise BuildCancelled('engine build cancelled')
        raise RuntimeError('TensorRT could not build an engine (see its log above)')
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_suffix(f'.{os.getpid()}.tmp')
    tmp.write_bytes(bytes(blob))
    os.replace(tmp, engine_path)  # atomic: a crashed build never leaves a broken cache file


def try_build(loaded: LoadedModel, input_shape: Tuple[int, ...], cache: str = '',
              cancel: Optional[Callable[[], bool]] = None
              ) -> Tuple[Optional[TensorRTModule], str]:
    """Return (engine module, what happened) or (None, why not); builds and caches once."""
    if loaded.device.type != 'cuda':
        return None, f'TensorRT needs a CUDA device; model.device resolved to {loaded.device}'
    try:
        import tensorrt as trt
    except ImportError:
        return None, f'tensorrt is not installed (pip install "{SUPPORTED_PIN}")'
    precision = precision_name(loaded.dtype)
    why = unsupported(trt.__version__, precision, hasattr(trt.BuilderFlag, 'BF16'))
    if why is not None:
        return None, why
    try:
        # Builder, runtime and engine use the current CUDA device: make it the model's (cuda:N).
        with torch.cuda.device(loaded.device):
            gpu = torch.cuda.get_device_name(loaded.device)
            path = engine_dir(cache) / engine_key(loaded, input_shape, precision, gpu,
                                                  trt.__version__)
            t0 = time.perf_counter()
            built = not path.exists()
            if built:
                with tempfile.TemporaryDirectory() as tmp:
                    onnx_path = export_onnx(eager_module(loaded), input_shape,
                                            Path(tmp) / 'model.onnx', export_dtype(loaded.dtype))
                    _build(onnx_path, path, precision, cancel)
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                return None, f'cannot deserialize {path} (delete it to rebuild)'
            seconds = time.perf_counter() - t0
            module = TensorRTModule(engine, path, built, seconds)
        verb = 'built' if built else 'loaded'
        return module, f'{verb} {path} in {seconds:.1f} s'
    except Exception as exc:  # noqa: B902 - any export/build failure falls back to torch
        text = str(exc).strip().splitlines()
        return None, f'engine build failed: {text[0][:300] if text else type(exc).__name__}'


def _build_all(cfg: Any, height: int, width: int, cancel: Callable[[], bool]) -> int:
    """Build (or find cached) the engines of cfg's models for height x width frames."""
    from dpt_ros.core.models import load_model
    built = 0
    for task, source in (('depth', cfg.model.depth), ('segmentation', cfg.model.segmentation)):
        if not source or cancel():
            continue
        loaded = load_model(source, task, cfg.model, log=print)
        h, w = loaded.spec.output_size(height, width)
        module, info = try_build(loaded, (1, 3, h, w), cfg.model.engine_dir, cancel=cancel)
        if module is None:
            print(f'dpt_build_engine: {task}: not built: {info}', file=sys.stderr)
        else:
            built += 1
            print(f'{task}: engine for {width}x{height} frames (network input {w}x{h}): '
                  f'{info}')
    return built


def main(argv: Optional[List[str]] = None) -> int:
    """`dpt_build_engine`: build and cache the TensorRT engine ahead of time."""
    from dpt_ros.core.config import config_from_flat, ConfigError
    from dpt_ros.core.models import ModelLoadError
    from dpt_ros.core.params import config_from_params_file
    ap = argparse.ArgumentParser(
        prog='dpt_build_engine', description='Build the TensorRT engine the node would build '
        'at start-up (model.backend: tensorrt), so start-up is fast.')
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
            cfg = config_from_flat(overrides)
    except ConfigError as exc:
        print(f'dpt_build_engine: error: {exc}', file=sys.stderr)
        return 2
    # Loading and building run in a worker thread: a process that exits while a thread is
    # inside torch or TensorRT C++ aborts, so Ctrl-C cancels the build and waits for it.
    cancel, done = threading.Event(), threading.Event()
    box: Dict[str, Any] = {}

    def work() -> None:
        try:
            box['built'] = _build_all(cfg, args.height, args.width, cancel.is_set)
        except BaseException as exc:  # noqa: B902 - reported by the main thread
            box['error'] = exc
        finally:
            done.set()
    threading.Thread(target=work, name='dpt_build_engine', daemon=True).start()
    try:
        # An Event, not Thread.join: a join interrupted by Ctrl-C can mark the thread as
        # finished while it still runs, and a later join would not wait.
        while not done.wait(0.2):
            pass
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the wait
        cancel.set()
        print('dpt_build_engine: interrupted; stopping the build at its next step ...',
              file=sys.stderr, flush=True)
        done.wait()
        return 130
    error = box.get('error')
    if isinstance(error, (ConfigError, ModelLoadError)):
        print(f'dpt_build_engine: error: {error}', file=sys.stderr)
        return 2
    if error is not None:
        raise error
    return 0 if box.get('built') else 1


if __name__ == '__main__':
    sys.exit(main())
