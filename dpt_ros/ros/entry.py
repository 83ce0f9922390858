# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Entry points of dpt_node and dpt_lifecycle_node: process settings, quiet Ctrl-C in imports.

Before anything is imported or started: every thread on one malloc arena (core/memory.py),
and OpenMP threads that sleep when they run out of work (wait_passively).
"""

import faulthandler
import os
import signal
from typing import Any, Dict, Mapping

from dpt_ros.core import memory

# What libgomp (torch's OpenMP) reads when torch loads it, unless the user set its own.
OPENMP_ENV = {'OMP_WAIT_POLICY': 'PASSIVE'}
# What libgomp reads about waiting: a user who sets either keeps their own.
OPENMP_VARS = ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT')


def openmp_env(environ: Mapping[str, str]) -> Dict[str, str]:
    """Return what the node adds to an environment for OpenMP: nothing if it says its own."""
    if any(k in environ for k in OPENMP_VARS):
        return {}
    return dict(OPENMP_ENV)


def wait_passively() -> bool:
    """Make OpenMP threads sleep when out of work, unless the environment says otherwise.

    By default libgomp spins about 300,000 rounds (4 ms here) after each parallel region
    before it sleeps. In the node its threads share the cores with the worker's own Python,
    the publishing thread, DDS, and on a robot every other node: a spinning thread holds a
    core they need, and a parallel region stalls whenever one of its threads is preempted.
    What it costs a large model's forward (each region wakes a sleeping thread) is measured
    in doc/performance.md. Returns True when set here.
    """
    add = openmp_env(os.environ)
    os.environ.update(add)
    return bool(add)


def _leave(signum: int, _frame: Any) -> None:
    # Nothing runs yet (no ROS context, no model, no thread): leave at once, without the
    # KeyboardInterrupt traceback an interrupted import prints, whatever signal comes next.
    os._exit(128 + signum)


def _enter(name: str) -> int:
    # A crash in native code (a driver, the middleware, torch) prints every thread's Python
    # stack to stderr, which ros2 launch keeps in its log, instead of only 'exit code -11'.
    try:
        faulthandler.enable()
    except (AttributeError, OSError, ValueError):  # no usable stderr
        pass
    # Before any thread allocates: the worker thread's buffers then come from the main heap,
    # which memory.keep_freed keeps; a thread arena maps those over 64 MiB afresh each time.
    memory.one_arena()
    wait_passively()  # before torch loads libgomp
    signal.signal(signal.SIGINT, _leave)
    from dpt_ros.ros import node
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return getattr(node, name)()


def main() -> int:
    """Run dpt_ros.ros.node.main once the imports are done."""
    return _enter('main')


def lifecycle_main() -> int:
    """Run the managed node (dpt_ros.ros.node.lifecycle_main) once the imports are done."""
    return _enter('lifecycle_main')
