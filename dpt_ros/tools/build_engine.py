# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""`dpt_build_engine`: build the TensorRT engines the node would build at start-up, ahead of time.

It builds them the node's way (Pipeline.prepare under the same settings), so the node finds
them in model.engine_dir under the same cache keys: the same network input, precision and
batch sizes (cameras, batch.max_size, depth.confidence).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any, Callable, Dict, List, Optional

from dpt_ros.core.config import Config, config_from_flat, ConfigError
from dpt_ros.core.models import ModelLoadError
from dpt_ros.core.params import config_from_params_file
from dpt_ros.core.pipeline import Pipeline

PROG = 'dpt_build_engine'


def build_all(cfg: Config, height: int, width: int, cancel: Callable[[], bool],
              started: Callable[[Pipeline], None] = lambda p: None) -> int:
    """Build (or find cached) the engines of cfg's models for height x width frames.

    started(pipeline) is called once the models are loaded (its cancel() stops a build).
    Returns how many models have their engines.
    """
    pipe = Pipeline(cfg, log=print)
    started(pipe)
    if not cancel():
        pipe.prepare(height, width)
    built = 0
    for m in (pipe.depth_model, pipe.seg_model):
        if m is None:
            continue
        engines = pipe.backends.modules(m)
        if not engines:
            why = pipe.backends.why_eager(m) or 'cancelled'
            print(f'{PROG}: {m.task}: not built: {why}', file=sys.stderr)
            continue
        built += 1
        for e in engines:
            h, w = e.input_shape[-2:]
            verb = 'built' if e.built else 'loaded'
            print(f'{m.task}: engine for {width}x{height} frames (network input {w}x{h}, batch '
                  f'{e.batches[0]}-{e.batches[1]}): {verb} {e.path} in {e.seconds:.1f} s')
    pipe.close()
    return built


def main(argv: Optional[List[str]] = None) -> int:
    """`dpt_build_engine`: build and cache the TensorRT engines ahead of time."""
    ap = argparse.ArgumentParser(
        prog=PROG, description='Build the TensorRT engine the node would build '
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
        print(f'{PROG}: error: {exc}', file=sys.stderr)
        return 2
    # Loading and building run in a worker thread: a process that exits while a thread is
    # inside torch or TensorRT C++ aborts, so Ctrl-C cancels the build and waits for it.
    cancel, done = threading.Event(), threading.Event()
    box: Dict[str, Any] = {}

    def started(pipe: Pipeline) -> None:
        box['pipeline'] = pipe
        if cancel.is_set():
            pipe.cancel()

    def work() -> None:
        try:
            box['built'] = build_all(cfg, args.height, args.width, cancel.is_set, started)
        except BaseException as exc:  # noqa: B902 - reported by the main thread
            box['error'] = exc
        finally:
            done.set()
    threading.Thread(target=work, name=PROG, daemon=True).start()
    try:
        # An Event, not Thread.join: a join interrupted by Ctrl-C can mark the thread as
        # finished while it still runs, and a later join would not wait.
        while not done.wait(0.2):
            pass
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the wait
        cancel.set()
        if 'pipeline' in box:
            box['pipeline'].cancel()
        print(f'{PROG}: interrupted; stopping the build at its next step ...',
              file=sys.stderr, flush=True)
        done.wait()
        return 130
    error = box.get('error')
    if isinstance(error, (ConfigError, ModelLoadError)):
        print(f'{PROG}: error: {error}', file=sys.stderr)
        return 2
    if error is not None:
        raise error
    return 0 if box.get('built') else 1


if __name__ == '__main__':
    sys.exit(main())
