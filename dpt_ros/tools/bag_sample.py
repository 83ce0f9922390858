# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Write sample bags with rosbags: camera frames + camera_info, raw or compressed, any storage.

Used by the tests and by the bag benchmark (bag_bench.py); needs rosbags and cv2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Sequence, Tuple

import cv2
import numpy as np

from dpt_ros.offline.bag import CAMERA_INFO, COMPRESSED, IMAGE, rosbags
from dpt_ros.tools.sample import synthetic_sequence

IMAGE_TOPIC = '/camera/color/image_raw'
INFO_TOPIC = '/camera/color/camera_info'
FRAME_ID = 'camera_color_optical_frame'


def header(stamp_ns: int, frame_id: str = FRAME_ID) -> Any:
    """Return a rosbags std_msgs/Header."""
    T = rosbags().store.types
    return T['std_msgs/msg/Header'](
        stamp=T['builtin_interfaces/msg/Time'](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
        frame_id=frame_id)


def camera_info(intr: Any, stamp_ns: int, frame_id: str = FRAME_ID) -> Any:
    """Return a rosbags CameraInfo for an Intrinsics."""
    T = rosbags().store.types
    return T[CAMERA_INFO](
        header=header(stamp_ns, frame_id), height=intr.height, width=intr.width,
        distortion_model='plumb_bob', d=np.zeros(5),
        k=np.array([intr.fx, 0, intr.cx, 0, intr.fy, intr.cy, 0, 0, 1], float),
        r=np.eye(3).ravel(), p=np.array([intr.fx, 0, intr.cx, 0, 0, intr.fy, intr.cy, 0,
                                         0, 0, 1, 0], float),
        binning_x=0, binning_y=0,
        roi=T['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0,
                                                  do_rectify=False))


def image(rgb: np.ndarray, stamp_ns: int, compressed: bool, frame_id: str = FRAME_ID) -> Any:
    """Return a rosbags Image (rgb8) or CompressedImage (jpeg) message."""
    T = rosbags().store.types
    if compressed:
        ok, jpg = cv2.imencode('.jpg', rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        return T[COMPRESSED](header=header(stamp_ns, frame_id), format='jpeg', data=jpg.ravel())
    h, w = rgb.shape[:2]
    return T[IMAGE](header=header(stamp_ns, frame_id), height=h, width=w, encoding='rgb8',
                    is_bigendian=0, step=w * 3, data=np.ascontiguousarray(rgb).ravel())


def _latched() -> List[Any]:
    q = rosbags().qos
    return [q.Qos(q.QosHistory.KEEP_LAST, 1, q.QosReliability.RELIABLE,
                  q.QosDurability.TRANSIENT_LOCAL, q.QosTime(0, 0), q.QosTime(0, 0),
                  q.QosLiveliness.AUTOMATIC, q.QosTime(0, 0), False)]


@dataclass
class Stream:
    """One camera of a sample bag: its frames (rgb, intrinsics, stamp ns) and topics.

    info: 'every' (a camera_info just before each frame), 'once' (one latched camera_info
    before the first frame, as camera drivers publish it), or 'none'. Frames listed in
    corrupt get garbage bytes.
    """

    frames: Sequence[Tuple[np.ndarray, Any, int]]
    image_topic: str = IMAGE_TOPIC           # '/compressed' is appended when compressed
    info_topic: str = INFO_TOPIC
    compressed: bool = False
    info: str = 'every'
    frame_id: str = FRAME_ID
    corrupt: Sequence[int] = ()


def write_streams(path: Path, streams: Sequence[Stream], storage: str = 'mcap',
                  extra_topics: bool = False, version: int = 9,
                  more: Sequence[Tuple[str, str, int, Any]] = ()) -> List[List[int]]:
    """Write several cameras into one bag, merged by log time; return each one's image stamps.

    A camera_info is logged at its frame's stamp, the image 1 us later. more: other messages
    (topic, type, log time, rosbags message), e.g. anchors.
    """
    rb = rosbags()
    plugin = rb.StoragePlugin.MCAP if storage == 'mcap' else rb.StoragePlugin.SQLITE3
    events: List[Tuple[int, int, int, int]] = []  # (log time, stream, kind, frame or message)
    with rb.Writer(path, version=version, storage_plugin=plugin) as w:
        conns = []
        for k, s in enumerate(streams):
            mtype = COMPRESSED if s.compressed else IMAGE
            topic = s.image_topic + ('/compressed' if s.compressed else '')
            ci = w.add_connection(topic, mtype, typestore=rb.store)
            cc = None if s.info == 'none' else w.add_connection(
                s.info_topic, CAMERA_INFO, typestore=rb.store,
                offered_qos_profiles=_latched() if s.info == 'once' else ())
            conns.append((ci, cc, mtype))
            for i, (_, _, stamp) in enumerate(s.frames):
                if cc is not None and (s.info == 'every' or i == 0):
                    events.append((stamp, k, 0, i))
                events.append((stamp + 1000, k, 1, i))
        if extra_topics:
            w.add_connection('/tf_static_unused', 'std_msgs/msg/String', typestore=rb.store)
        others = {}
        for i, (topic, mtype, logtime, _) in enumerate(more):
            if topic not in others:
                others[topic] = w.add_connection(topic, mtype, typestore=rb.store)
            events.append((logtime, len(streams), 2, i))
        for logtime, k, kind, i in sorted(events):
            if kind == 2:
                topic, mtype, _, msg = more[i]
                w.write(others[topic], logtime, rb.store.serialize_cdr(msg, mtype))
                continue
            s, (ci, cc, mtype) = streams[k], conns[k]
            rgb, intr, stamp = s.frames[i]
            if kind == 0:
                w.write(cc, logtime, rb.store.serialize_cdr(
                    camera_info(intr, stamp, s.frame_id), CAMERA_INFO))
                continue
            data = rb.store.serialize_cdr(image(rgb, stamp, s.compressed, s.frame_id), mtype)
            if i in s.corrupt:
                data = bytes(data[:40]) + b'\x00garbage'
            w.write(ci, logtime, data)
    return [[stamp for _, _, stamp in s.frames] for s in streams]


def write_bag(path: Path, frames: Sequence[Tuple[np.ndarray, Any, int]],
              storage: str = 'mcap', compressed: bool = False, info: str = 'every',
              corrupt: Sequence[int] = (), extra_topics: bool = False,
              version: int = 9) -> List[int]:
    """Write one camera's frames (rgb, intrinsics, stamp ns); return the image stamps written.

    info and corrupt: as in Stream.
    """
    return write_streams(path, [Stream(frames, compressed=compressed, info=info,
                                       corrupt=corrupt)], storage, extra_topics, version)[0]


def synthetic_frames(n: int, width: int = 96, height: int = 72,
                     t0: int = 1_700_000_000_000_000_000,
                     period: int = 100_000_000) -> List[Tuple[np.ndarray, Any, int]]:
    """Return n synthetic (rgb, intrinsics, stamp ns) frames, one every period ns."""
    return [(s.rgb, s.intrinsics, t0 + i * period)
            for i, s in enumerate(synthetic_sequence(n, width, height))]
