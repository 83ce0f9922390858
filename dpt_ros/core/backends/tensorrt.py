# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Optional TensorRT backend: ONNX export, cached engine build, engine runner.

Nothing here is needed for torch inference: TensorRT is imported only when the backend is
asked for, and when a build fails the caller gets the reason and keeps torch. A batch-free
graph gets one engine whose optimisation profile covers every batch size the pipeline forms;
a graph that holds its batch size gets one engine per input shape. `dpt_build_engine`
(dpt_ros.tools.build_engine) builds them ahead of time.
"""

from __future__ import annotations

import os
from pathlib import Path
import tempfile
import time
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import torch

from dpt_ros.core.backends import TENSORRT_PIN
from dpt_ros.core.backends.export import (batch_profile, batch_tied_marker, BuildCancelled,
                                          cache_key, eager_module, engine_dir,
                                          export_batch_free, export_dtype, INPUT_NAME,
                                          precision_name)
from dpt_ros.core.models import first_line, LoadedModel

# Built and run through the name-based API of TensorRT 10 (execute_async_v3, strongly typed
# networks) which TensorRT 11 keeps; 11 drops weak typing (BuilderFlag.FP16 / BF16).
SUPPORTED_MAJORS = (10, 11)
Profile = Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]


def engine_key(model: Any, input_shape: Sequence[Union[int, str]], precision: str,
               gpu_name: str, trt_version: str) -> str:
    """Engine file name: GPU, TensorRT version, input shape, precision, opset, model hash.

    input_shape has every dimension; an engine for a range of batch sizes names it '1-8'.
    """
    return cache_key(model, input_shape, precision, f'{gpu_name}_trt{trt_version}') + '.engine'


def unsupported(trt_version: str, precision: str, has_bf16_flag: bool) -> Optional[str]:
    """Why this TensorRT cannot build this precision (None when it can); one line."""
    try:
        major = int(trt_version.split('.')[0])
    except ValueError:
        major = -1
    if major not in SUPPORTED_MAJORS:
        return (f'TensorRT {trt_version} is not supported (dpt_ros uses TensorRT 10 and 11: '
                f'pip install "{TENSORRT_PIN}")')
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

    def __init__(self, engine: Any, path: Path, built: bool, seconds: float,
                 input_shape: Tuple[int, ...] = (), batches: Tuple[int, int] = (0, 0)) -> None:
        super().__init__()
        import tensorrt as trt
        self.engine = engine
        self.path = path
        self.built = built        # True: built by this process; False: loaded from the cache
        self.seconds = seconds    # build or load time
        self.input_shape = tuple(input_shape)
        self.batches = batches    # smallest and largest batch its profile covers
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

    def accepts(self, shape: Tuple[int, ...]) -> bool:
        """Whether this engine runs pixel values of this shape."""
        return tuple(shape[1:]) == self.input_shape[1:] and \
            self.batches[0] <= shape[0] <= self.batches[1]

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


def build_engine_file(onnx_path: Path, engine_path: Path, precision: str,
                      profile: Optional[Profile] = None,
                      cancel: Optional[Callable[[], bool]] = None) -> None:
    """Build an engine from an ONNX file (for batches min..max of profile, when given)."""
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
    if profile is not None:
        shapes = builder.create_optimization_profile()
        shapes.set_shape(INPUT_NAME, *profile)
        config.add_optimization_profile(shapes)
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
              cancel: Optional[Callable[[], bool]] = None, max_batch: int = 0
              ) -> Tuple[Optional[TensorRTModule], str]:
    """Return (engine module, what happened) or (None, why not); builds and caches once.

    A batch-free graph's engine covers batches 1..max_batch (at least input_shape's batch);
    any other graph's, input_shape alone.
    """
    import tensorrt as trt
    precision = precision_name(loaded.dtype)
    why = unsupported(trt.__version__, precision, hasattr(trt.BuilderFlag, 'BF16'))
    if why is not None:
        return None, why
    try:
        # Builder, runtime and engine use the current CUDA device: make it the model's (cuda:N).
        with torch.cuda.device(loaded.device):
            gpu = torch.cuda.get_device_name(loaded.device)
            profile = batch_profile(input_shape, max_batch)
            top = profile[2][0]
            free = engine_dir(cache) / engine_key(loaded, (f'1-{top}',) + profile[2][1:],
                                                  precision, gpu, trt.__version__)
            fixed = engine_dir(cache) / engine_key(loaded, input_shape, precision, gpu,
                                                   trt.__version__)
            t0 = time.perf_counter()
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            redone = ''
            while True:
                path = free if free.exists() else fixed if fixed.exists() else None
                built = path is None
                if path is None:
                    with tempfile.TemporaryDirectory() as tmp:
                        onnx_path = Path(tmp) / 'model.onnx'
                        any_batch = export_batch_free(
                            eager_module(loaded), input_shape, onnx_path,
                            export_dtype(loaded.dtype), cancel=cancel,
                            tied=batch_tied_marker(loaded, input_shape, loaded.dtype, cache))
                        path = free if any_batch else fixed
                        build_engine_file(onnx_path, path, precision,
                                          profile if any_batch else None, cancel)
                engine = runtime.deserialize_cuda_engine(path.read_bytes())
                if engine is not None:
                    break
                if built:
                    return None, f'cannot deserialize the engine just built, {path}'
                # A cache file cut short (a full disk, a copy): build it again, once.
                path.unlink()
                redone = f'; rebuilt {path.name}: the cached engine could not be deserialized'
            seconds = time.perf_counter() - t0
            batches = (1, top) if path == free else (input_shape[0], input_shape[0])
            module = TensorRTModule(engine, path, built, seconds, input_shape, batches)
        verb = 'built' if built else 'loaded'
        return module, (f'{verb} {path} (batch {batches[0]}-{batches[1]}) in {seconds:.1f} s'
                        f'{redone}')
    except Exception as exc:  # noqa: B902 - any export/build failure falls back to torch
        return None, f'engine build failed: {first_line(exc)}'
