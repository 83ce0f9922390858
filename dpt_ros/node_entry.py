# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""`dpt_node` entry point: a Ctrl-C while torch and rclpy are still importing leaves quietly."""

import os
import signal
from typing import Any


def _leave(signum: int, _frame: Any) -> None:
    # Nothing runs yet (no ROS context, no model, no thread): leave at once, without the
    # KeyboardInterrupt traceback an interrupted import prints, whatever signal comes next.
    os._exit(128 + signum)


def main() -> int:
    """Run dpt_ros.node.main once the imports are done."""
    signal.signal(signal.SIGINT, _leave)
    from dpt_ros.node import main as node_main
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return node_main()
