# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Image / CompressedImage / CameraInfo / PointCloud2 <-> numpy (message classes only, no rclpy).

Decoders read any object with the message's fields (rclpy messages, rosbags messages); the
*_fields encoders return plain dicts with numpy data so other writers (bags) can reuse them;
the *_msg helpers build sensor_msgs classes.
"""

from __future__ import annotations

import array
from dataclasses import dataclass
import importlib
import math
import sys
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from dpt_ros.core.geometry import Intrinsics

# encoding -> (channels, numpy dtype, pipeline layout)
_RAW = {
    'rgb8': (3, np.uint8, 'rgb8'), 'bgr8': (3, np.uint8, 'bgr8'),
    'rgba8': (4, np.uint8, 'rgba8'), 'bgra8': (4, np.uint8, 'bgra8'),
    'mono8': (1, np.uint8, 'mono8'), '8UC1': (1, np.uint8, 'mono8'),
    'mono16': (1, np.uint16, 'mono16'), '16UC1': (1, np.uint16, 'mono16'),
}
# Packed YUV 4:2:2 from USB cameras, converted on the CPU.
_YUV = {'yuv422': 'UYVY', 'uyvy': 'UYVY', 'yuv422_yuy2': 'YUYV', 'yuyv': 'YUYV'}
# Raw Bayer mosaics (machine-vision drivers' image_raw), demosaiced on the CPU to rgb8. OpenCV
# names a pattern by the second row's second and third pixels, so ROS's RGGB is OpenCV's
# BayerBG (as cv_bridge maps them): encoding -> (OpenCV pattern, bits per pixel).
_BAYER = {f'bayer_{ros}{bits}': (cv, bits)
          for ros, cv in (('rggb', 'BG'), ('bggr', 'RG'), ('gbrg', 'GR'), ('grbg', 'GB'))
          for bits in (8, 16)}
SUPPORTED_ENCODINGS = tuple(_RAW) + tuple(_YUV) + tuple(_BAYER)

FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32
UINT32 = 6   # sensor_msgs/PointField.UINT32
POINT_STEP = 16  # x, y, z, rgb: the cloud without extra fields
# A point's class id, as PCL's PointXYZRGBL names it (uint32; pcl/point_types.h).
LABEL_FIELD = 'label'
_FIELD_TYPES = {LABEL_FIELD: UINT32}  # extra cloud fields that are not float32
_LITTLE = sys.byteorder == 'little'

# Message types of the inputs and outputs (ROS type names; msg_class gives the rclpy class).
IMAGE_TYPE = 'sensor_msgs/msg/Image'
CLOUD_TYPE = 'sensor_msgs/msg/PointCloud2'
INFO_TYPE = 'sensor_msgs/msg/CameraInfo'
COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'


class FrameError(ValueError):
    """An input message cannot be used; the message names the problem."""


@dataclass
class Frame:
    """A decoded camera frame: (H, W, C) pixels (views into the message where possible)."""

    pixels: np.ndarray
    layout: str

    @property
    def height(self) -> int:
        """Rows."""
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        """Columns."""
        return int(self.pixels.shape[1])


def data_bytes(data: Any) -> np.ndarray:
    """Return a message's data field as a flat uint8 array, without copying."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def decode_image(msg: Any) -> Frame:
    """sensor_msgs/Image -> Frame, honouring step padding and is_bigendian; FrameError if bad."""
    enc = str(msg.encoding)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise FrameError(f'image is empty ({w}x{h}).')
    data = data_bytes(msg.data)
    if enc in _YUV:
        return _decode_yuv(data, h, w, step, enc)
    if enc in _BAYER:
        return _demosaic(_pixels(data, h, w, step, enc, 1, np.uint8 if _BAYER[enc][1] == 8
                                 else np.uint16, bool(msg.is_bigendian)), enc)
    if enc not in _RAW:
        raise FrameError(f"unsupported image encoding '{enc}'; supported: "
                         f"{', '.join(SUPPORTED_ENCODINGS)} (or use input.transport compressed).")
    ch, dtype, layout = _RAW[enc]
    return Frame(_pixels(data, h, w, step, enc, ch, dtype, bool(msg.is_bigendian)), layout)


def _pixels(data: np.ndarray, h: int, w: int, step: int, enc: str, ch: int, dtype: Any,
            big: bool) -> np.ndarray:
    """(H, W, C) pixels of an Image's data, without its step padding; FrameError if sizes lie."""
    row = w * ch * np.dtype(dtype).itemsize
    if step < row:
        raise FrameError(f'image step {step} is smaller than width x pixel size ({row}) for '
                         f'{w}x{h} {enc}.')
    if data.size != step * h:
        raise FrameError(f'image data has {data.size} bytes but step x height is {step * h} '
                         f'({w}x{h} {enc}, step {step}).')
    rows = data.reshape(h, step)[:, :row]
    if dtype == np.uint16:
        src = np.ascontiguousarray(rows).view('>u2' if big else '<u2')
        return src.astype(np.uint16, copy=False).reshape(h, w, 1)  # native order; no copy if so
    return rows.reshape(h, w, ch)


def _demosaic(mosaic: np.ndarray, enc: str) -> Frame:
    import cv2
    h, w = mosaic.shape[:2]
    if h < 2 or w < 2:
        raise FrameError(f'{enc} image {w}x{h} is too small to demosaic (at least 2x2).')
    pattern, bits = _BAYER[enc]
    plane = mosaic[..., 0]
    if bits == 16:  # full range to 8 bits, as mono16 is scaled (before: a third of the data)
        plane = (plane >> 8).astype(np.uint8)
    rgb = cv2.cvtColor(np.ascontiguousarray(plane), getattr(cv2, f'COLOR_Bayer{pattern}2RGB'))
    return Frame(rgb, 'rgb8')


def _decode_yuv(data: np.ndarray, h: int, w: int, step: int, enc: str) -> Frame:
    import cv2
    if w % 2 or step < 2 * w or data.size != step * h:
        raise FrameError(f'{enc} image {w}x{h} with step {step} and {data.size} bytes is '
                         'inconsistent.')
    yuv = np.ascontiguousarray(data.reshape(h, step)[:, :2 * w]).reshape(h, w, 2)
    code = cv2.COLOR_YUV2RGB_UYVY if _YUV[enc] == 'UYVY' else cv2.COLOR_YUV2RGB_YUYV
    return Frame(cv2.cvtColor(yuv, code), 'rgb8')


def _imdecode(data: np.ndarray, what: str) -> Optional[np.ndarray]:
    """cv2.imdecode, unchanged depth and channels; OpenCV's own errors as FrameError on what."""
    import cv2
    try:
        return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # e.g. a header claiming more pixels than OpenCV decodes
        raise FrameError(f'{what} could not be decoded: '
                         f'{str(exc).strip().splitlines()[-1]}') from exc


def decode_compressed(msg: Any) -> Frame:
    """sensor_msgs/CompressedImage (JPEG/PNG) -> Frame; FrameError for undecodable data."""
    data = data_bytes(msg.data)
    if data.size == 0:
        raise FrameError('compressed image is empty.')
    img = _imdecode(data, f"compressed image ({data.size} bytes, format '{msg.format}')")
    if img is None:
        raise FrameError(f"compressed image ({data.size} bytes, format '{msg.format}') could not "
                         'be decoded as JPEG or PNG.')
    if img.ndim == 2:
        img = img[:, :, None]
    ch = img.shape[2]
    if img.dtype == np.uint16:
        if ch == 1:
            return Frame(img, 'mono16')
        # 16-bit colour (image_transport's PNG of rgb16 / bgr16): full range to 8 bits, as
        # mono16 is scaled; OpenCV decodes it in B, G, R (, A) order.
        img = (img >> 8).astype(np.uint8)
    if img.dtype != np.uint8:
        raise FrameError(f'compressed image decodes to {img.dtype}, not 8 or 16 bit.')
    return Frame(img, {1: 'mono8', 3: 'bgr8', 4: 'bgra8'}[ch])


# image_transport's compressedDepth plugin: format '<encoding>; compressedDepth[ png| rvl]'
# (no suffix: png), data = a 12-byte header (int32 format, float32 depthParam[2], written in the
# sender's order: little-endian on the CPUs robots use) and the PNG or RVL (uint32 cols, rows,
# then the stream) of 16-bit values: 16UC1 millimetres as they are; 32FC1 quantized inverse
# depth q, metres = a / (q - b), 0 = no reading.
COMPRESSED_DEPTH = 'compressedDepth'
_DEPTH_HEADER = 12
_RVL_MAX_PIXELS = 1 << 26  # a size beyond 67 M pixels is a corrupt header, not a depth camera


def decode_compressed_depth(msg: Any) -> Tuple[np.ndarray, str]:
    """Decode a compressedDepth CompressedImage -> ((H, W) array, encoding), or FrameError.

    16UC1 gives uint16 millimetres (0: no reading), 32FC1 float32 metres (NaN: no reading).
    """
    fmt = str(msg.format)
    encoding, sep, rest = (part.strip() for part in fmt.partition(';'))
    codec = 'png'
    if sep:
        words = rest.split()
        if not words or words[0] != COMPRESSED_DEPTH or len(words) > 2 or \
                words[1:] not in ([], ['png'], ['rvl']):
            raise FrameError(f"compressed depth format '{fmt}' is not image_transport's "
                             "compressedDepth ('16UC1; compressedDepth png' or rvl, or 32FC1).")
        codec = words[1] if len(words) == 2 else 'png'
    if encoding not in ('16UC1', 'mono16', '32FC1'):
        raise FrameError(f"compressed depth encoding '{encoding}' (format '{fmt}') is not "
                         '16UC1 or 32FC1.')
    data = data_bytes(msg.data)
    if data.size <= _DEPTH_HEADER:
        raise FrameError(f'compressed depth message has {data.size} bytes: no image after its '
                         f'{_DEPTH_HEADER}-byte header.')
    a, b = (float(v) for v in data[4:_DEPTH_HEADER].view('<f4'))
    payload = data[_DEPTH_HEADER:]
    if codec == 'rvl':
        q = _rvl_decode(payload)
    else:
        q = _imdecode(payload, f"compressed depth PNG (format '{fmt}')")
        if q is None:
            raise FrameError(f"compressed depth PNG (format '{fmt}', {payload.size} bytes) "
                             'could not be decoded.')
        if q.ndim != 2 or q.dtype != np.uint16:
            raise FrameError(f"compressed depth PNG (format '{fmt}') decodes to {q.dtype} "
                             f'{q.shape}, not one 16-bit channel.')
    if encoding != '32FC1':
        return q, '16UC1'
    if not (math.isfinite(a) and math.isfinite(b)) or a == 0.0:
        raise FrameError(f'compressed 32FC1 depth has quantization parameters a={a}, b={b}.')
    with np.errstate(divide='ignore', invalid='ignore'):
        z = np.float32(a) / (q.astype(np.float32) - np.float32(b))
    z[q == 0] = np.nan
    return z, '32FC1'


def _rvl_decode(payload: np.ndarray) -> np.ndarray:
    """RVL (Wilson 2017, as compressedDepth writes it) -> (H, W) uint16; FrameError if corrupt.

    The stream is 32-bit words of 4-bit nibbles, most significant first; a value is 3 bits
    per nibble, low bits first, while the nibble's top bit is set. Values come as runs: zeros,
    nonzeros, then each nonzero as the zigzag-coded difference from the previous nonzero.
    """
    if payload.size < 8:
        raise FrameError(f'compressed depth RVL has {payload.size} bytes, fewer than its size.')
    cols, rows = (int(v) for v in payload[:8].view('<u4'))
    n = rows * cols
    if n == 0 or n > _RVL_MAX_PIXELS:
        raise FrameError(f'compressed depth RVL says {cols}x{rows} pixels: corrupt.')
    body = payload[8:8 + (payload.size - 8) // 4 * 4]
    words = body.view('<u4')
    nib = ((words[:, None] >> np.arange(28, -1, -4, dtype=np.uint32)) & 0xF).reshape(-1)
    ends = np.flatnonzero((nib & 8) == 0)
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    lengths = ends - starts + 1
    if ends.size == 0 or lengths.max() > 11:  # 11 nibbles hold 32 bits
        raise FrameError('compressed depth RVL stream is corrupt (an unterminated value).')
    nib = nib[:ends[-1] + 1].astype(np.int64)
    pos = np.arange(nib.size) - np.repeat(starts, lengths)
    vals = np.add.reduceat((nib & 7) << (3 * pos), starts)
    run_px, run_len, run_at = [], [], []
    i = px = 0
    stream = vals.tolist()  # the runs are read one after another: a list indexes fastest
    limit = len(stream)
    while px < n:
        if i + 1 >= limit:
            raise FrameError(f'compressed depth RVL stream ends after {px} of {n} pixels.')
        zeros, nonzeros = stream[i], stream[i + 1]
        px += zeros
        if px + nonzeros > n or i + 2 + nonzeros > limit:
            raise FrameError(f'compressed depth RVL stream runs past its {cols}x{rows} pixels.')
        if nonzeros:
            run_px.append(px)
            run_len.append(nonzeros)
            run_at.append(i + 2)
        px += nonzeros
        i += 2 + nonzeros
    out = np.zeros(n, np.uint16)
    if run_len:
        lens = np.asarray(run_len, np.int64)
        offsets = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        zig = vals[np.repeat(np.asarray(run_at, np.int64), lens) + offsets]
        delta = (zig >> 1) ^ -(zig & 1)
        out[np.repeat(np.asarray(run_px, np.int64), lens) + offsets] = \
            (np.cumsum(delta) & 0xFFFF).astype(np.uint16)
    return out.reshape(rows, cols)


def intrinsics_from_camera_info(msg: Any, rectified: bool = True) -> Intrinsics:
    """sensor_msgs/CameraInfo -> Intrinsics of the published image (binning and ROI applied).

    rectified=True (image_rect): the projection matrix P and no distortion, as image_geometry
    and depth_image_proc use it; P's Tx/Ty (stereo baseline) are ignored like they do, so
    points stay in the image's own optical frame. An all-zero P (uncalibrated drivers fill K
    only) falls back to K, noted in Intrinsics.source. rectified=False (image_raw): K and D.
    """
    k = [float(v) for v in msg.k]
    if len(k) != 9:
        raise FrameError(f'camera_info K has {len(k)} values, expected 9.')
    fx, fy, cx, cy = k[0], k[4], k[2], k[5]
    model, d, source = str(msg.distortion_model), tuple(float(v) for v in msg.d), 'K'
    if rectified:
        p = [float(v) for v in msg.p]
        if len(p) != 12:
            raise FrameError(f'camera_info P has {len(p)} values, expected 12.')
        if any(p[i] != 0.0 for i in (0, 2, 5, 6)):
            fx, fy, cx, cy = p[0], p[5], p[2], p[6]
            source = 'P'
        else:
            source = 'K (P is empty)'
        model, d = '', ()
    bx = int(msg.binning_x) or 1
    by = int(msg.binning_y) or 1
    roi = msg.roi
    full = int(roi.width) == 0 or int(roi.height) == 0
    x0, y0 = (0, 0) if full else (int(roi.x_offset), int(roi.y_offset))
    width = int(msg.width) if full else int(roi.width)
    height = int(msg.height) if full else int(roi.height)
    return Intrinsics(
        fx=fx / bx, fy=fy / by, cx=(cx - x0) / bx, cy=(cy - y0) / by,
        width=width // bx, height=height // by, distortion_model=model, d=d, source=source)


# ---------------------------------------------------------------- encoders (plain fields)

def image_fields(arr: np.ndarray, encoding: str) -> Dict[str, Any]:
    """(H, W[, C]) array -> Image fields (height, width, encoding, is_bigendian, step, data)."""
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    return {'height': h, 'width': w, 'encoding': encoding,
            'is_bigendian': int(arr.dtype.byteorder == '>' or
                                (arr.dtype.byteorder == '=' and not _LITTLE)),
            'step': int(arr.strides[0]), 'data': arr.reshape(-1).view(np.uint8)}


def depth_to_encoded(depth: np.ndarray, encoding: str) -> np.ndarray:
    """Metres with NaN invalid -> 32FC1 float32 (as is) or 16UC1 millimetres (0 invalid)."""
    if encoding == '32FC1':
        return depth.astype(np.float32, copy=False)
    if encoding == '16UC1':
        mm = np.rint(depth * 1000.0)
        ok = np.isfinite(mm) & (mm > 0) & (mm <= 65535)
        return np.where(ok, mm, 0).astype(np.uint16)
    raise ValueError(f"unknown depth encoding '{encoding}'")


def encoded_to_depth(arr: np.ndarray, encoding: str) -> np.ndarray:
    """Inverse of depth_to_encoded: metres float32 with NaN invalid."""
    if encoding == '32FC1':
        return arr.astype(np.float32)
    out = arr.astype(np.float32) / 1000.0
    out[arr == 0] = np.nan
    return out


def pointcloud_fields(points: np.ndarray, height: int, width: int, rgb: bool,
                      extra: Sequence[str] = ()) -> Dict[str, Any]:
    """(N, 4 + len(extra)) float32 [x, y, z, rgb bits, extra...] -> PointCloud2 fields.

    Fields are (name, offset, datatype, count): x 0, y 4, z 8 and rgb 12 when rgb is set;
    without rgb the 4th float is padding, as depth_image_proc's xyz clouds have. extra names
    the 4-byte columns after it ('' for padding): float32, but 'label' holds uint32 bits.
    point_step is 4 bytes per column; one buffer.
    """
    pts = np.ascontiguousarray(points, dtype=np.float32)
    cols = 4 + len(extra)
    assert pts.ndim == 2 and pts.shape[1] == cols and pts.shape[0] == height * width
    names = ('x', 'y', 'z', 'rgb') if rgb else ('x', 'y', 'z')
    fields = [(n, 4 * i, FLOAT32, 1) for i, n in enumerate(names)]
    fields += [(n, 4 * (4 + i), _FIELD_TYPES.get(n, FLOAT32), 1)
               for i, n in enumerate(extra) if n]
    step = 4 * cols
    return {'height': int(height), 'width': int(width), 'fields': fields,
            'is_bigendian': not _LITTLE, 'point_step': step,
            'row_step': step * int(width), 'data': pts.reshape(-1).view(np.uint8),
            'is_dense': bool(np.isfinite(pts[:, 2]).all())}


# ---------------------------------------------------------------- sensor_msgs builders

def _bytes_array(data: np.ndarray) -> array.array:
    # array('B') is the type rclpy stores uint8[] in; frombytes is a single memcpy.
    out = array.array('B')
    out.frombytes(np.ascontiguousarray(data).data)
    return out


def image_msg(header: Any, arr: np.ndarray, encoding: str) -> Any:
    """Build a sensor_msgs/Image from an array, with the given header."""
    return fields_to_msg(IMAGE_TYPE, image_fields(arr, encoding), header)


def pointcloud_msg(header: Any, points: np.ndarray, height: int, width: int,
                   rgb: bool, extra: Sequence[str] = ()) -> Any:
    """Build a sensor_msgs/PointCloud2 from (N, 4 + len(extra)) float32 points."""
    return fields_to_msg(CLOUD_TYPE, pointcloud_fields(points, height, width, rgb, extra),
                         header)


def camera_info_msg(info: Any, header: Any) -> Any:
    """Copy a CameraInfo under another header (depth/camera_info)."""
    from sensor_msgs.msg import CameraInfo
    out = CameraInfo()
    for name in ('height', 'width', 'distortion_model', 'd', 'k', 'r', 'p', 'binning_x',
                 'binning_y', 'roi'):
        setattr(out, name, getattr(info, name))
    if header is not None:
        out.header = header
    return out


def camera_info_from_intrinsics(intr: Intrinsics, header: Any = None) -> Any:
    """Make a CameraInfo for an ideal pinhole camera (samples, tests, bags without one)."""
    from sensor_msgs.msg import CameraInfo
    msg = CameraInfo()
    if header is not None:
        msg.header = header
    # Plain int / float only: Humble's generated setters always assert the Python type, and
    # numpy scalars (np.float32, np.int64) or an int in a float64 array fail that check.
    fx, fy, cx, cy = (float(v) for v in (intr.fx, intr.fy, intr.cx, intr.cy))
    msg.width, msg.height = int(intr.width), int(intr.height)
    msg.distortion_model = str(intr.distortion_model or 'plumb_bob')
    msg.d = [float(v) for v in intr.d] or [0.0] * 5
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


# ---------------------------------------------------------------- readers (tools, tests)

def image_to_array(msg: Any) -> np.ndarray:
    """Any Image this package publishes (rgb8, mono8, mono16, 32FC1, 32FC3) -> (H, W[, C])."""
    if msg.encoding in ('32FC1', '32FC3'):
        ch = 3 if msg.encoding == '32FC3' else 1
        data = data_bytes(msg.data).reshape(msg.height, msg.step)[:, :msg.width * 4 * ch]
        order = '>f4' if msg.is_bigendian else '<f4'
        arr = np.ascontiguousarray(data).view(order).astype(np.float32)
        return arr.reshape((msg.height, msg.width) + ((ch,) if ch > 1 else ()))
    frame = decode_image(msg)
    px = frame.pixels
    return px[:, :, 0] if px.shape[2] == 1 else px


def read_points(msg: Any) -> np.ndarray:
    """PointCloud2 -> (height, width) structured array with one column per field."""
    np_types = {7: 'f4', 8: 'f8', 1: 'i1', 2: 'u1', 3: 'i2', 4: 'u2', 5: 'i4', 6: 'u4'}
    order = '>' if msg.is_bigendian else '<'
    dtype = np.dtype({'names': [f.name for f in msg.fields],
                      'formats': [order + np_types[int(f.datatype)] for f in msg.fields],
                      'offsets': [int(f.offset) for f in msg.fields],
                      'itemsize': int(msg.point_step)})
    data = data_bytes(msg.data)
    rows = data.reshape(int(msg.height), int(msg.row_step))[:, :int(msg.width) * msg.point_step]
    return np.ascontiguousarray(rows).view(dtype).reshape(int(msg.height), int(msg.width))


def unpack_rgb(rgb_field: np.ndarray) -> np.ndarray:
    """Packed float32 'rgb' -> (..., 3) uint8."""
    bits = np.ascontiguousarray(rgb_field).view(np.uint32)
    return np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255], axis=-1).astype(np.uint8)


def stamp_ns(header: Any) -> int:
    """Header stamp as integer nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def header_tuple(header: Any) -> Tuple[int, str]:
    """(stamp ns, frame_id) for comparisons in tests and tools."""
    return stamp_ns(header), str(header.frame_id)


# ---------------------------------------------------------------- message types

def msg_class(msg_type: str) -> Any:
    """ROS type name ('sensor_msgs/msg/Image') -> its rclpy message class."""
    package, _, name = msg_type.split('/')
    return getattr(importlib.import_module(f'{package}.msg'), name)


def fields_to_msg(msg_type: str, fields: Dict[str, Any], header: Any,
                  camera_info: Any = None) -> Any:
    """Build the sensor_msgs message for one encoded output (dpt_ros.core.outputs.encode)."""
    if msg_type == INFO_TYPE:
        return camera_info_msg(camera_info, header)
    if msg_type == CLOUD_TYPE:
        from sensor_msgs.msg import PointCloud2, PointField
        msg = PointCloud2()
        msg.fields = [PointField(name=n, offset=o, datatype=t, count=c)
                      for n, o, t, c in fields['fields']]
        for key in ('height', 'width', 'is_bigendian', 'point_step', 'row_step', 'is_dense'):
            setattr(msg, key, fields[key])
    else:
        from sensor_msgs.msg import Image
        msg = Image()
        for key in ('height', 'width', 'encoding', 'is_bigendian', 'step'):
            setattr(msg, key, fields[key])
    if header is not None:  # None keeps the default Header (assigning None fails on Humble)
        msg.header = header
    msg.data = _bytes_array(fields['data'])
    return msg
