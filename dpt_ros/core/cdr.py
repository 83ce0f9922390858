# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Serialized CDR of Image, PointCloud2 and CameraInfo straight from result_fields (no rclpy).

rclpy's Publisher.publish also takes the serialized message as `bytes` (Humble and later), on
the publisher created for the message class. Building those bytes here skips the message
path's copies (numpy -> array('B') -> C message -> CDR): the big buffer is copied once, by
bytes.join, into the bytes object that is published. For each (row, fields) of
outputs.encode: publisher.publish(fields_to_cdr(row.msg_type, fields, header, camera_info)).
fields_to_serialized gives the same message as a Serialized (its chunks, the big buffer
referenced, not copied) for a writer that copies it once into a buffer of its own
(Serialized.write_into; the node's publishers do, see dpt_ros.ros.serialized).

The layout is classic CDR (XCDR1) as ROS 2's rmw implementations write it: a 4-byte
encapsulation header (CDR_LE or CDR_BE), then every primitive aligned to its own size counted
from the end of that header; strings are a uint32 length including the NUL, the characters
and the NUL; sequences a uint32 count then the items. Decoders stay in rclpy (tests check
every output against rclpy.serialization.deserialize_message), but for read_header: the
std_msgs/Header every one of these messages starts with, for readers that need only the stamp.
"""

from __future__ import annotations

import struct
import sys
from types import SimpleNamespace
from typing import Any, Dict, List, Sequence

from dpt_ros.core.conversions import CLOUD_TYPE, IMAGE_TYPE, INFO_TYPE

_LITTLE = sys.byteorder == 'little'
_ORDER = '<' if _LITTLE else '>'
_ENCAPSULATION = b'\x00\x01\x00\x00' if _LITTLE else b'\x00\x00\x00\x00'  # CDR_LE / CDR_BE


class Serialized:
    """One message's CDR as chunks: small fields as bytes, the big buffer referenced.

    tobytes() joins them (one copy of the big buffer); write_into(buffer) copies them into a
    writable buffer of at least nbytes, as tobytes() would lay them out.
    """

    __slots__ = ('chunks', 'nbytes')

    def __init__(self, chunks: List[Any], nbytes: int) -> None:
        self.chunks = chunks
        self.nbytes = nbytes

    def tobytes(self) -> bytes:
        return b''.join(self.chunks)

    def write_into(self, buffer: Any) -> int:
        """Copy the message to the start of buffer; return its size in bytes."""
        out = memoryview(buffer).cast('B')
        if out.nbytes < self.nbytes:
            raise ValueError(f'buffer of {out.nbytes} bytes for a {self.nbytes}-byte message')
        pos = 0
        for chunk in self.chunks:
            view = memoryview(chunk).cast('B')
            out[pos:pos + view.nbytes] = view
            pos += view.nbytes
        return pos


class _Writer:
    """Small fields into a list of byte chunks, tracking the CDR offset for alignment."""

    def __init__(self) -> None:
        self.chunks: List[Any] = [_ENCAPSULATION]
        self.pos = 0  # offset from the end of the encapsulation header

    def _align(self, size: int) -> None:
        pad = -self.pos % size
        if pad:
            self.chunks.append(b'\x00' * pad)
            self.pos += pad

    def raw(self, data: Any, size: int) -> None:
        self.chunks.append(data)
        self.pos += size

    def pack(self, fmt: str, *values: Any) -> None:
        """Write aligned primitives of one size: 'II' two uint32, 'B' one byte, '9d' ..."""
        size = struct.calcsize(fmt.lstrip('0123456789')[0])
        self._align(size)
        self.raw(struct.pack(_ORDER + fmt, *values), struct.calcsize(_ORDER + fmt))

    def string(self, text: str) -> None:
        encoded = text.encode('utf-8') + b'\x00'
        self.pack('I', len(encoded))
        self.raw(encoded, len(encoded))

    def header(self, header: Any) -> None:
        self.pack('iI', int(header.stamp.sec), int(header.stamp.nanosec))
        self.string(str(header.frame_id))

    def bytes_sequence(self, data: Any) -> None:
        view = memoryview(data).cast('B')  # the big buffer: referenced here, copied in join
        self.pack('I', view.nbytes)
        self.raw(view, view.nbytes)

    def doubles(self, values: Sequence[float], fixed: int = 0) -> None:
        values = [float(v) for v in values]
        if fixed:
            if len(values) != fixed:
                raise ValueError(f'expected {fixed} values, got {len(values)}')
        else:
            self.pack('I', len(values))
        if values:
            self.pack(f'{len(values)}d', *values)

    def getvalue(self) -> bytes:
        return b''.join(self.chunks)

    def serialized(self) -> Serialized:
        return Serialized(self.chunks, len(_ENCAPSULATION) + self.pos)


def read_header(data: bytes) -> Any:
    """Read the std_msgs/Header that starts a serialized message (stamp and frame_id).

    The inverse of _Writer.header: the encapsulation's second byte gives the byte order, then
    int32 sec, uint32 nanosec and the frame_id string (uint32 length with its NUL, characters).
    """
    order = '<' if data[1] == 1 else '>'
    sec, nanosec, n = struct.unpack_from(order + 'iII', data, 4)
    frame_id = data[16:16 + n - 1].decode('utf-8') if n else ''
    return SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=nanosec), frame_id=frame_id)


def header_stamp_ns(data: bytes) -> int:
    """Return the header stamp of a serialized message in nanoseconds."""
    stamp = read_header(data).stamp
    return stamp.sec * 10**9 + stamp.nanosec


def image_cdr(fields: Dict[str, Any], header: Any) -> bytes:
    """sensor_msgs/Image CDR from image_fields() output and a std_msgs/Header."""
    return _image(fields, header).getvalue()


def camera_info_cdr(info: Any, header: Any) -> bytes:
    """sensor_msgs/CameraInfo CDR: a received CameraInfo's content under another header."""
    return _camera_info(info, header).getvalue()


def _image(fields: Dict[str, Any], header: Any) -> _Writer:
    w = _Writer()
    w.header(header)
    w.pack('II', int(fields['height']), int(fields['width']))
    w.string(str(fields['encoding']))
    w.pack('B', int(fields['is_bigendian']))
    w.pack('I', int(fields['step']))
    w.bytes_sequence(fields['data'])
    return w


def _pointcloud(fields: Dict[str, Any], header: Any) -> _Writer:
    w = _Writer()
    w.header(header)
    w.pack('II', int(fields['height']), int(fields['width']))
    w.pack('I', len(fields['fields']))
    for name, offset, datatype, count in fields['fields']:
        w.string(str(name))
        w.pack('I', int(offset))
        w.pack('B', int(datatype))
        w.pack('I', int(count))
    w.pack('B', int(bool(fields['is_bigendian'])))
    w.pack('II', int(fields['point_step']), int(fields['row_step']))
    w.bytes_sequence(fields['data'])
    w.pack('B', int(bool(fields['is_dense'])))
    return w


def _camera_info(info: Any, header: Any) -> _Writer:
    w = _Writer()
    w.header(header)
    w.pack('II', int(info.height), int(info.width))
    w.string(str(info.distortion_model))
    w.doubles(info.d)
    w.doubles(info.k, 9)
    w.doubles(info.r, 9)
    w.doubles(info.p, 12)
    w.pack('II', int(info.binning_x), int(info.binning_y))
    roi = info.roi
    w.pack('IIII', int(roi.x_offset), int(roi.y_offset), int(roi.height), int(roi.width))
    w.pack('B', int(bool(roi.do_rectify)))
    return w


def fields_to_serialized(msg_type: str, fields: Dict[str, Any], header: Any,
                         camera_info: Any = None) -> Serialized:
    """Serialize one result_fields entry as chunks (nothing big copied yet)."""
    if msg_type == INFO_TYPE:
        return _camera_info(camera_info, header).serialized()
    if msg_type == CLOUD_TYPE:
        return _pointcloud(fields, header).serialized()
    if msg_type == IMAGE_TYPE:
        return _image(fields, header).serialized()
    raise ValueError(f"no CDR writer for '{msg_type}'")


def fields_to_cdr(msg_type: str, fields: Dict[str, Any], header: Any,
                  camera_info: Any = None) -> bytes:
    """Serialize one result_fields entry (the bytes twin of conversions.fields_to_msg)."""
    return fields_to_serialized(msg_type, fields, header, camera_info).tobytes()
