# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""compressedDepth anchors (image_transport's plugin, PNG and RVL): decoded exactly, or refused."""

import struct
from types import SimpleNamespace

import numpy as np
import pytest

from dpt_ros.core import conversions as conv
from dpt_ros.core.anchors import AnchorError, from_depth_image
from dpt_ros.core.conversions import FrameError

from compresseddepthutil import compressed_depth, quantize, rvl  # noqa: I100


def _mm(h=48, w=64, seed=0):
    """Millimetres with holes, runs at both ends and the largest jumps a uint16 allows."""
    rng = np.random.default_rng(seed)
    mm = rng.integers(300, 9000, (h, w)).astype(np.uint16)
    mm[rng.random((h, w)) < 0.3] = 0
    mm[5, 10:20] = 0
    mm[0, 0], mm[0, 1], mm[0, 2] = 65535, 1, 65535  # deltas of +-65534
    mm[-1, -5:] = 0  # ends on a run of zeros
    return mm


@pytest.mark.parametrize('codec', ['png', 'rvl'])
def test_16uc1_millimetres_come_back_exactly(codec):
    mm = _mm()
    got, enc = conv.decode_compressed_depth(compressed_depth(mm, '16UC1', codec))
    assert enc == '16UC1' and got.dtype == np.uint16 and np.array_equal(got, mm)
    sparse = np.zeros((480, 640), np.uint16)  # a lidar's few hundred returns: 1000x smaller
    sparse.flat[np.random.default_rng(2).choice(sparse.size, 300, replace=False)] = 4321
    assert np.array_equal(conv.decode_compressed_depth(
        compressed_depth(sparse, codec=codec))[0], sparse)
    full = np.full((3, 5), 1234, np.uint16)  # no zero at all; ends on a nonzero run
    assert np.array_equal(conv.decode_compressed_depth(compressed_depth(full, codec=codec))[0],
                          full)


@pytest.mark.parametrize('codec', ['png', 'rvl'])
def test_32fc1_metres_within_the_quantization_and_nan_where_none(codec):
    rng = np.random.default_rng(1)
    z = rng.uniform(0.2, 12.0, (40, 50)).astype(np.float32)
    z[::4] = np.nan
    got, enc = conv.decode_compressed_depth(compressed_depth(z, '32FC1', codec))
    assert enc == '32FC1' and got.dtype == np.float32
    ok = np.isfinite(z) & (z < 10.0)  # the plugin's depth_max: beyond it, no reading
    # One quantization step of inverse depth is z^2 / a metres: at most z / a relative.
    q, a, _ = quantize(z)
    assert np.all(np.abs(got[ok] / z[ok] - 1) <= z[ok] / a + 1e-6)
    assert np.isnan(got[~ok]).all() and np.isfinite(got[ok]).all()


def test_the_format_without_a_codec_is_png_as_older_plugins_wrote_it():
    mm = _mm(8, 9)
    msg = compressed_depth(mm, fmt='16UC1; compressedDepth')
    assert np.array_equal(conv.decode_compressed_depth(msg)[0], mm)


def test_rvl_of_a_small_image_worked_by_hand():
    # 0 2 0 / 0 0 0: one zero (nibble 1), one nonzero (1), 2 zigzagged to 4 (4), four zeros (4),
    # no nonzero (0), then zero nibbles padding the 32-bit word; cols and rows before it.
    img = np.array([[0, 2, 0], [0, 0, 0]], np.uint16)
    want = struct.pack('<III', 3, 2, 0x11440000)
    assert rvl(img) == want
    msg = compressed_depth(img, codec='rvl')
    assert bytes(msg.data[12:]) == want
    assert np.array_equal(conv.decode_compressed_depth(msg)[0], img)


@pytest.mark.parametrize('fmt, data, why', [
    ('16UC1; png compressed', None, "not image_transport's compressedDepth"),
    ('16UC1; compressedDepth jpeg', None, "not image_transport's compressedDepth"),
    ('rgb8; compressedDepth png', None, 'is not 16UC1 or 32FC1'),
    (None, b'', 'no image after its 12-byte header'),
    (None, struct.pack('<iff', 0, 0, 0) + b'\x89PNG garbage', 'could not be decoded'),
    ('16UC1; compressedDepth rvl', struct.pack('<iff', 0, 0, 0) + b'\x01', 'fewer than'),
    ('16UC1; compressedDepth rvl', struct.pack('<iffII', 0, 0, 0, 50000, 50000) + bytes(64),
     'corrupt'),
    ('16UC1; compressedDepth rvl',  # says 4x4, holds 3 pixels' worth of runs
     struct.pack('<iffII', 0, 0, 0, 4, 4) + struct.pack('<I', 0x03000000) + bytes(8),
     'stream'),
    ('32FC1; compressedDepth png', 'nan-params', 'quantization parameters'),
])
def test_unusable_messages_are_refused_with_the_reason(fmt, data, why):
    msg = compressed_depth(_mm(6, 7), fmt=fmt)
    if data == 'nan-params':
        msg = compressed_depth(np.ones((6, 7), np.float32), '32FC1')
        msg.data[4:8] = np.frombuffer(struct.pack('<f', float('nan')), np.uint8)
    elif data is not None:
        msg.data = np.frombuffer(data, np.uint8)
    with pytest.raises(FrameError, match=why):
        conv.decode_compressed_depth(msg)


def test_an_8_bit_png_is_not_depth():
    import cv2
    msg = compressed_depth(_mm(6, 7))
    png = cv2.imencode('.png', np.zeros((6, 7), np.uint8))[1].tobytes()
    msg.data = np.frombuffer(bytes(msg.data[:12]) + png, np.uint8)
    with pytest.raises(FrameError, match='not one 16-bit channel'):
        conv.decode_compressed_depth(msg)


@pytest.mark.parametrize('codec', ['png', 'rvl'])
def test_compressed_anchors_equal_the_raw_image_anchors(codec):
    mm = _mm()
    raw = SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=0),
                                                 frame_id='cam'),
                          **conv.image_fields(mm, '16UC1'))
    want = from_depth_image(raw, (64, 48), image_frame='cam')
    got = from_depth_image(compressed_depth(mm, codec=codec), (64, 48), image_frame='cam')
    assert got.received == want.received == int((mm > 0).sum())
    for name in ('u', 'v', 'z'):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    bad = compressed_depth(mm, codec=codec, fmt='16UC1; compressedDepth zstd')
    with pytest.raises(AnchorError, match='anchor depth: compressed depth format'):
        from_depth_image(bad, (64, 48), image_frame='cam')
