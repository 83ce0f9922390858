# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Entry points of dpt_node and dpt_lifecycle_node: one malloc arena; quiet Ctrl-C in imports."""

import os
import signal
from typing import Any

from dpt_ros.core import memory


def _leave(signum: int, _frame: Any) -> None:
    # Nothing runs yet (no ROS context, no model, no thread): leave at once, without the
    # KeyboardInterrupt traceback an interrupted import prints, whatever signal comes next.
    os._exit(128 + signum)


def _enter(name: str) -> int:
    # Before any thread allocates: the worker thread's buffers then come from the main heap,
    # which memory.keep_freed keeps; a thread arena maps those over 64 MiB afresh each time.
    memory.one_arena()
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
