# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Write test bags with rosbags: frames + camera_info, raw or compressed, mcap or sqlite3."""

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import pytest

rosbags = pytest.importorskip('rosbags', reason='rosbags is not installed (requirements/test.txt)')

from rosbags.rosbag2 import Reader, StoragePlugin, Writer  # noqa: E402, I100
from rosbags.typesys import get_typestore, Stores  # noqa: E402

STORE = get_typestore(Stores.ROS2_JAZZY)
T = STORE.types
IMAGE_TOPIC = '/camera/color/image_raw'
INFO_TOPIC = '/camera/color/camera_info'


def header(stamp_ns: int, frame_id: str = 'camera_color_optical_frame'):
    """Return a rosbags std_msgs/Header."""
    return T['std_msgs/msg/Header'](
        stamp=T['builtin_interfaces/msg/Time'](sec=stamp_ns // 10**9,
                                               nanosec=stamp_ns % 10**9),
        frame_id=frame_id)


def camera_info(intr, stamp_ns: int):
    """Return a rosbags CameraInfo for an Intrinsics."""
    return T['sensor_msgs/msg/CameraInfo'](
        header=header(stamp_ns), height=intr.height, width=intr.width,
        distortion_model='plumb_bob', d=np.zeros(5),
        k=np.array([intr.fx, 0, intr.cx, 0, intr.fy, intr.cy, 0, 0, 1], float),
        r=np.eye(3).ravel(), p=np.array([intr.fx, 0, intr.cx, 0, 0, intr.fy, intr.cy, 0,
                                         0, 0, 1, 0], float),
        binning_x=0, binning_y=0,
        roi=T['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0,
                                                  do_rectify=False))


def image(rgb: np.ndarray, stamp_ns: int, compressed: bool):
    """Return a rosbags Image (rgb8) or CompressedImage (jpeg) message."""
    if compressed:
        ok, jpg = cv2.imencode('.jpg', rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        return T['sensor_msgs/msg/CompressedImage'](header=header(stamp_ns), format='jpeg',
                                                    data=jpg.ravel())
    h, w = rgb.shape[:2]
    return T['sensor_msgs/msg/Image'](header=header(stamp_ns), height=h, width=w,
                                      encoding='rgb8', is_bigendian=0, step=w * 3,
                                      data=np.ascontiguousarray(rgb).ravel())


def write_bag(path: Path, frames: Sequence[Tuple[np.ndarray, object, int]],
              storage: str = 'mcap', compressed: bool = False, with_info: bool = True,
              corrupt: Sequence[int] = (), extra_topics: bool = False) -> List[int]:
    """Write frames (rgb, intrinsics, stamp ns) and return the image stamps written."""
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    topic = IMAGE_TOPIC + ('/compressed' if compressed else '')
    mtype = 'sensor_msgs/msg/CompressedImage' if compressed else 'sensor_msgs/msg/Image'
    stamps = []
    with Writer(path, version=9, storage_plugin=plugin) as w:
        ci = w.add_connection(topic, mtype, typestore=STORE)
        cc = w.add_connection(INFO_TOPIC, 'sensor_msgs/msg/CameraInfo', typestore=STORE) \
            if with_info else None
        if extra_topics:
            w.add_connection('/tf_static_unused', 'std_msgs/msg/String', typestore=STORE)
        for i, (rgb, intr, stamp) in enumerate(frames):
            if cc is not None:
                w.write(cc, stamp, STORE.serialize_cdr(camera_info(intr, stamp),
                                                       'sensor_msgs/msg/CameraInfo'))
            data = STORE.serialize_cdr(image(rgb, stamp, compressed), mtype)
            if i in corrupt:
                data = bytes(data[:40]) + b'\x00garbage'
            w.write(ci, stamp + 1000, data)
            stamps.append(stamp)
    return stamps


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
