# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Fixtures of the node's tests (real rclpy, real DDS)."""

import pytest


@pytest.fixture
def harness():
    """Yield a client node in its own Context (rosutil.Harness); close it after the test.

    harness.start_node(...) starts a node in it and spins both; harness.start() spins the
    client alone (for a node in another process).
    """
    from rosutil import Harness
    h = Harness()
    yield h
    h.close()
