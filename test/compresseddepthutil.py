# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Encoders of image_transport's compressedDepth messages, written from its format, for tests."""

import struct
from types import SimpleNamespace

import numpy as np


def rvl(img):
    """(H, W) uint16 -> RVL bytes with the plugin's cols, rows prefix (Wilson 2017)."""
    flat = [int(v) for v in img.reshape(-1)]
    nibbles = []

    def vle(value):
        while True:
            nib, value = value & 7, value >> 3
            nibbles.append(nib | (8 if value else 0))
            if not value:
                return

    i, prev, n = 0, 0, len(flat)
    while i < n:
        start = i
        while i < n and flat[i] == 0:
            i += 1
        vle(i - start)
        j = i
        while j < n and flat[j] != 0:
            j += 1
        vle(j - i)
        for k in range(i, j):
            d = flat[k] - prev
            vle((d << 1) ^ (d >> 31))
            prev = flat[k]
        i = j
    nibbles += [0] * (-len(nibbles) % 8)
    words = [sum(nib << (28 - 4 * k) for k, nib in enumerate(nibbles[w:w + 8]))
             for w in range(0, len(nibbles), 8)]
    h, w = img.shape
    return struct.pack('<II', w, h) + np.asarray(words, '<u4').tobytes()


def quantize(z, depth_max=10.0, z0=100.0):
    """32FC1 metres -> (uint16 q, a, b) as the plugin quantizes inverse depth."""
    a = np.float32(z0 * (z0 + 1.0))
    b = np.float32(1.0 - a / np.float32(depth_max))
    zf = np.asarray(z, np.float32)
    with np.errstate(divide='ignore', invalid='ignore'):
        q = np.where(zf < depth_max, a / zf + b, 0)
    return q.astype(np.uint16), float(a), float(b)


def compressed_depth(z, encoding='16UC1', codec='png', stamp=(0, 0), frame_id='cam',
                     fmt=None, depth_max=10.0):
    """Return a compressedDepth CompressedImage (plain fields) of z (uint16 mm or metres)."""
    import cv2
    if encoding == '32FC1':
        q, a, b = quantize(z, depth_max)
    else:
        q, a, b = np.asarray(z, np.uint16), 0.0, 0.0
    if codec == 'rvl':
        body = rvl(q)
    else:
        ok, png = cv2.imencode('.png', q)
        assert ok
        body = png.tobytes()
    data = struct.pack('<iff', 0, a, b) + body
    header = SimpleNamespace(stamp=SimpleNamespace(sec=stamp[0], nanosec=stamp[1]),
                             frame_id=frame_id)
    return SimpleNamespace(header=header, data=np.frombuffer(data, np.uint8).copy(),
                           format=fmt if fmt is not None else
                           f'{encoding}; compressedDepth {codec}')
