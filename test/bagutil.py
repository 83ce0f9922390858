# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Test bags: written with dpt_ros.tools.bag_sample, read back with rosbags."""

from pathlib import Path
from typing import Optional

import pytest

rosbags = pytest.importorskip('rosbags', reason='rosbags is not installed (requirements/test.txt)')

from rosbags.rosbag2 import Reader, StoragePlugin, Writer  # noqa: E402, I100

from dpt_ros.offline.bag import rosbags as _rosbags  # noqa: E402
from dpt_ros.tools.bag_sample import (camera_info, header, image, IMAGE_TOPIC,  # noqa: E402, F401
                                      INFO_TOPIC, Stream, synthetic_frames, write_bag,
                                      write_streams)

STORE = _rosbags().store
T = STORE.types


def read_bag(path: Path) -> dict:
    """Return {topic: [(logtime, message)]} for every message in a bag."""
    out: dict = {}
    with Reader(path) as r:
        for conn, t, raw in r.messages():
            out.setdefault(conn.topic, []).append((t, STORE.deserialize_cdr(raw, conn.msgtype)))
    return out


def stamp_ns(msg) -> int:
    """Header stamp of a rosbags message in nanoseconds."""
    return int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)


def empty_bag(path: Path, storage: str = 'mcap', topic: Optional[str] = IMAGE_TOPIC) -> None:
    """Write a bag with an image connection and no messages."""
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as w:
        if topic:
            w.add_connection(topic, 'sensor_msgs/msg/Image', typestore=STORE)
