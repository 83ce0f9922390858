# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Message <-> array conversions: padding, endianness, NaN, 16UC1 rounding, PointCloud2 layout."""

import struct
import zlib

import cv2
import numpy as np
import pytest

from dpt_ros.core import conversions as conv
from dpt_ros.core.conversions import FrameError

msgs = pytest.importorskip('sensor_msgs.msg', reason='sensor_msgs (ROS 2) is not installed')
Image, CompressedImage, CameraInfo = msgs.Image, msgs.CompressedImage, msgs.CameraInfo

from rosutil import stereo_right_camera_info  # noqa: E402, I100

RNG = np.random.default_rng(7)
CHANNELS = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1, 'mono16': 1}


def make_image(arr, encoding, pad=0, bigendian=False):
    """Build an Image by hand (independent of the encoder under test)."""
    h, w = arr.shape[:2]
    a = arr.astype(arr.dtype.newbyteorder('>' if bigendian else '<'))
    rows = a.reshape(h, -1).view(np.uint8)
    padded = np.zeros((h, rows.shape[1] + pad), np.uint8)
    padded[:, :rows.shape[1]] = rows
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian),
                step=padded.shape[1])
    msg.data = padded.tobytes()
    return msg


@pytest.mark.parametrize('encoding', list(CHANNELS))
@pytest.mark.parametrize('pad, big', [(0, False), (13, False), (6, True)])
def test_decode_raw_with_padding_and_endianness(encoding, pad, big):
    dtype = np.uint16 if encoding == 'mono16' else np.uint8
    arr = RNG.integers(0, np.iinfo(dtype).max, (7, 11, CHANNELS[encoding])).astype(dtype)
    frame = conv.decode_image(make_image(arr, encoding, pad, big))
    assert frame.layout == encoding
    assert np.array_equal(frame.pixels, arr)


@pytest.mark.parametrize('mutate, word', [
    (lambda m: setattr(m, 'encoding', '32FC1'), 'supported: rgb8'),
    (lambda m: setattr(m, 'data', bytes(m.data)[:-3]), 'bytes'),
    (lambda m: (setattr(m, 'height', 0), setattr(m, 'data', b'')), 'empty'),
    (lambda m: setattr(m, 'step', 5), 'step'),
])
def test_bad_images_raise_frame_error(mutate, word):
    msg = make_image(RNG.integers(0, 255, (4, 6, 3)).astype(np.uint8), 'rgb8')
    mutate(msg)
    with pytest.raises(FrameError, match=word):
        conv.decode_image(msg)


def test_yuv422_is_converted():
    yuv = np.full((4, 8, 2), 128, np.uint8)
    yuv[..., 1] = 200  # UYVY: luma in odd bytes
    msg = Image(height=4, width=8, encoding='uyvy', step=16, data=yuv.tobytes())
    f = conv.decode_image(msg)
    assert f.layout == 'rgb8' and f.pixels.shape == (4, 8, 3)
    assert abs(int(f.pixels[..., 1].mean()) - 200) < 30


# Where each colour sits in the 2x2 cell of a ROS Bayer encoding (sensor_msgs image_encodings:
# the pattern read row by row from the top left).
BAYER_CELLS = {'rggb': 'RGGB', 'bggr': 'BGGR', 'gbrg': 'GBRG', 'grbg': 'GRBG'}


def mosaic(rgb, pattern):
    """Sample an (H, W, 3) image the way a sensor with this Bayer pattern sees it."""
    out = np.empty(rgb.shape[:2], rgb.dtype)
    for i, colour in enumerate(BAYER_CELLS[pattern]):
        r, c = divmod(i, 2)
        out[r::2, c::2] = rgb[r::2, c::2, 'RGB'.index(colour)]
    return out


@pytest.mark.parametrize('pattern', list(BAYER_CELLS))
@pytest.mark.parametrize('bits, pad, big', [(8, 0, False), (8, 5, False), (16, 4, True),
                                            (16, 0, False)])
def test_bayer_is_demosaiced_with_the_right_colours(pattern, bits, pad, big):
    # Four flat quadrants of distinct R, G, B: away from the edges between them demosaicing
    # must give each quadrant's colour back, so a pattern read as another (R and B swapped, or
    # the greens taken for red) fails.
    colours = [(200, 120, 40), (30, 180, 90), (90, 20, 220), (250, 250, 10)]
    rgb = np.zeros((16, 20, 3), np.uint8)
    for q, colour in enumerate(colours):
        r, c = divmod(q, 2)
        rgb[r * 8:(r + 1) * 8, c * 10:(c + 1) * 10] = colour
    scale = 257 if bits == 16 else 1  # 8 -> 16 bit full range
    raw = mosaic(rgb.astype(np.uint16) * scale, pattern).astype(
        np.uint16 if bits == 16 else np.uint8)
    f = conv.decode_image(make_image(raw, f'bayer_{pattern}{bits}', pad, big))
    assert f.layout == 'rgb8' and f.pixels.dtype == np.uint8 and f.pixels.shape == (16, 20, 3)
    for q, colour in enumerate(colours):
        r, c = divmod(q, 2)
        inner = f.pixels[r * 8 + 2:(r + 1) * 8 - 2, c * 10 + 2:(c + 1) * 10 - 2].reshape(-1, 3)
        assert np.abs(inner.astype(int) - colour).max() <= 1, (pattern, q, inner[0])


def test_bayer_too_small_or_short_is_a_frame_error():
    with pytest.raises(FrameError, match='demosaic'):
        conv.decode_image(make_image(np.zeros((1, 6), np.uint8), 'bayer_rggb8'))
    msg = make_image(np.zeros((4, 6), np.uint16), 'bayer_gbrg16')
    msg.data = bytes(msg.data)[:-2]
    with pytest.raises(FrameError, match='bytes'):
        conv.decode_image(msg)


def test_compressed_jpeg_png_and_garbage():
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :24] = (250, 10, 10)
    ok, jpg = cv2.imencode('.jpg', rgb[:, :, ::-1])
    f = conv.decode_compressed(CompressedImage(format='jpeg', data=jpg.tobytes()))
    assert f.layout == 'bgr8' and f.pixels.shape == (32, 48, 3)
    assert f.pixels[5, 5, 2] > 200 and f.pixels[5, 5, 0] < 60  # red, in BGR order
    mono16 = (np.arange(32 * 48).reshape(32, 48) * 40).astype(np.uint16)
    ok, png = cv2.imencode('.png', mono16)
    f = conv.decode_compressed(CompressedImage(format='png', data=png.tobytes()))
    assert f.layout == 'mono16' and np.array_equal(f.pixels[..., 0], mono16)
    # 16-bit colour (a compressed rgb16 / bgr16 stream): colour kept, scaled to 8 bits
    ok, png16 = cv2.imencode('.png', rgb[:, :, ::-1].astype(np.uint16) * 257)
    f = conv.decode_compressed(CompressedImage(format='bgr16; png compressed bgr16',
                                               data=png16.tobytes()))
    assert f.layout == 'bgr8' and np.array_equal(f.pixels, rgb[:, :, ::-1])
    ok, png8 = cv2.imencode('.png', rgb[:, :, 0])
    assert conv.decode_compressed(CompressedImage(format='png', data=png8.tobytes())).layout \
        == 'mono8'
    for junk in (b'\xff\xd8\xff garbage', b''):
        with pytest.raises(FrameError):
            conv.decode_compressed(CompressedImage(format='jpeg', data=junk))
    # A PNG whose header claims 50000 x 50000 pixels: OpenCV raises its own error, which must
    # come out as this frame's FrameError (anything else fails every camera's batch).
    with pytest.raises(FrameError, match='could not be decoded'):
        conv.decode_compressed(CompressedImage(format='png', data=_png_claiming(50000, 50000)))


def _png_claiming(w, h):
    """Return a PNG of a few bytes whose header says w x h (grey, 8 bit)."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack('>I', len(data)) + body + struct.pack('>I', zlib.crc32(body))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(b'\0' * 10)) + chunk(b'IEND', b''))


def test_depth_32fc1_keeps_nan_and_16uc1_rounds_to_mm():
    depth = np.array([[1.0, np.nan, 0.0004], [2.3456, 70.0, 0.0015]], np.float32)
    f32 = conv.image_msg(None, conv.depth_to_encoded(depth, '32FC1'), '32FC1')
    back = conv.image_to_array(f32)
    assert np.array_equal(np.isnan(back), np.isnan(depth))
    assert np.allclose(back[~np.isnan(back)], depth[~np.isnan(depth)])
    mm = conv.depth_to_encoded(depth, '16UC1')
    assert mm.dtype == np.uint16
    assert mm.tolist() == [[1000, 0, 0], [2346, 0, 2]]  # NaN, < 0.5 mm, > 65.535 m -> 0
    msg = conv.image_msg(None, mm, '16UC1')
    again = conv.encoded_to_depth(conv.image_to_array(msg), '16UC1')
    assert np.isnan(again[0, 1]) and again[1, 0] == pytest.approx(2.346)


@pytest.mark.parametrize('organized', [True, False])
def test_pointcloud_layout_as_ros_tools_expect(organized):
    h, w = 3, 5
    xyz = RNG.normal(size=(h * w, 3)).astype(np.float32)
    rgb_bits = np.arange(h * w, dtype=np.uint32) * 0x010203
    pts = np.concatenate([xyz, rgb_bits.view(np.float32)[:, None]], 1)
    ch, cw = (h, w) if organized else (1, h * w)
    msg = conv.pointcloud_msg(None, pts, ch, cw, rgb=True)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == \
        [('x', 0, 7, 1), ('y', 4, 7, 1), ('z', 8, 7, 1), ('rgb', 12, 7, 1)]
    assert (msg.height, msg.width) == (ch, cw)  # the sensor_msgs_py width/height trap
    assert msg.point_step == 16 and msg.row_step == 16 * cw
    assert len(msg.data) == msg.row_step * msg.height
    back = conv.read_points(msg)
    assert back.shape == (ch, cw)
    flat = back.reshape(-1)
    assert np.array_equal(np.stack([flat['x'], flat['y'], flat['z']], 1), xyz)
    assert np.array_equal(conv.unpack_rgb(flat['rgb'])[4], [4 * 1, 4 * 2, 4 * 3])


K_1280 = [1000.0, 0.0, 640.0, 0.0, 1000.0, 480.0, 0.0, 0.0, 1.0]  # floats: Humble checks types


def test_camera_info_binning_and_roi():
    info = CameraInfo(width=1280, height=960, k=K_1280)
    info.binning_x = info.binning_y = 2
    intr = conv.intrinsics_from_camera_info(info, rectified=False)
    assert (intr.width, intr.height, intr.fx, intr.cx) == (640, 480, 500.0, 320.0)
    info = CameraInfo(width=1280, height=960, k=K_1280)
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 100, 50, 400, 300
    intr = conv.intrinsics_from_camera_info(info, rectified=False)
    assert (intr.width, intr.height, intr.cx, intr.cy) == (400, 300, 540.0, 430.0)


def test_camera_info_rectified_uses_p_raw_uses_k_and_d():
    info = stereo_right_camera_info()
    rect = conv.intrinsics_from_camera_info(info)  # rectified is the default
    assert (rect.fx, rect.fy, rect.cx, rect.cy) == (480.0, 482.0, 318.0, 236.0)
    assert rect.source == 'P' and not rect.distorted and rect.distortion_model == ''
    raw = conv.intrinsics_from_camera_info(info, rectified=False)
    assert (raw.fx, raw.fy, raw.cx, raw.cy) == (520.0, 518.0, 322.0, 241.0)
    assert raw.source == 'K' and raw.distortion_model == 'plumb_bob' and raw.d == tuple(info.d)
    info.binning_x = info.binning_y = 2
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 100, 50, 400, 300
    binned = conv.intrinsics_from_camera_info(info)
    assert (binned.width, binned.height) == (200, 150)
    assert (binned.fx, binned.cx, binned.cy) == (240.0, 109.0, 93.0)


def test_camera_info_without_p_falls_back_to_k_with_a_note():
    from dpt_ros.core.geometry import ray_grid
    info = stereo_right_camera_info()
    info.p = [0.0] * 12  # uncalibrated drivers publish K only
    intr = conv.intrinsics_from_camera_info(info)
    assert (intr.fx, intr.cx) == (520.0, 322.0) and intr.source == 'K (P is empty)'
    _, note = ray_grid(intr, stride=16)
    assert 'empty P' in note and 'input.rectified' in note
