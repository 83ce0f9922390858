# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Sparse metric anchors from sensors: depth images and point clouds -> colour-image pixels.

Decoders read any object with the message's fields (rclpy or rosbags messages), like
dpt_ros.core.conversions; a message that cannot be used raises AnchorError naming the problem.
AnchorBuffer pairs anchor messages with images by stamp. No rclpy.
"""

from __future__ import annotations

from collections import deque
import threading
import time
from typing import Any, Deque, Iterable, Optional, Tuple

import numpy as np

from dpt_ros.core.config import AnchorsConfig, parse_extrinsic
from dpt_ros.core.conversions import (data_bytes, decode_compressed_depth, FrameError,
                                      intrinsics_from_camera_info, stamp_ns)
from dpt_ros.core.geometry import Intrinsics
from dpt_ros.core.metric import Anchors, TIME_JUMP_S

# Depth image encodings -> (numpy dtype, metres per unit).
_DEPTH_ENCODINGS = {'16UC1': ('u2', 1e-3), 'mono16': ('u2', 1e-3), '32FC1': ('f4', 1.0)}
# PointField datatypes usable for x, y, z.
_FLOAT_FIELDS = {7: 'f4', 8: 'f8'}


# How far behind its camera an anchor stream may run in delivery and still be waited for.
ANCHOR_LAG_S = 1.0
_JUMP_NS = int(TIME_JUMP_S * 1e9)


class AnchorError(ValueError):
    """An anchor message cannot be used; the message says why."""


def _depth_array(msg: Any) -> np.ndarray:
    """Image (16UC1 mm / 32FC1 m) or compressedDepth -> (H, W) float32 metres, NaN: none."""
    if hasattr(msg, 'format'):  # CompressedImage: anchors.transport compressedDepth
        try:
            raw, enc = decode_compressed_depth(msg)
        except FrameError as exc:
            raise AnchorError(f'anchor depth: {exc}') from exc
    else:
        enc = str(msg.encoding)
        if enc not in _DEPTH_ENCODINGS:
            raise AnchorError(f"anchor depth encoding '{enc}' is not supported: use 16UC1 "
                              '(millimetres) or 32FC1 (metres).')
        kind = _DEPTH_ENCODINGS[enc][0]
        h, w, step = int(msg.height), int(msg.width), int(msg.step)
        data = data_bytes(msg.data)
        row = w * 4 if kind == 'f4' else w * 2
        if h <= 0 or w <= 0 or step < row or data.size != step * h:
            raise AnchorError(f'anchor depth image {w}x{h} {enc} with step {step} has '
                              f'{data.size} bytes; expected step >= {row} and step x height '
                              'bytes.')
        order = '>' if msg.is_bigendian else '<'
        rows = np.ascontiguousarray(data.reshape(h, step)[:, :row])
        raw = rows.view(order + kind).reshape(h, w)
    z = raw.astype(np.float32) * np.float32(_DEPTH_ENCODINGS[enc][1])
    z[~np.isfinite(z) | (z <= 0)] = np.nan
    return z


def from_depth_image(msg: Any, image_size: Tuple[int, int],
                     image_intr: Optional[Intrinsics] = None,
                     anchor_intr: Optional[Intrinsics] = None, max_points: int = 0,
                     rng: Optional[np.random.Generator] = None, image_frame: str = '',
                     extrinsic: Optional[np.ndarray] = None) -> Anchors:
    """Turn a depth image into anchors at colour pixels.

    image_size is the colour image's (width, height). A depth image in the colour image's
    frame_id (registered: aligned_depth_to_color) of that size with no camera_info of its own
    is taken pixel for pixel; of another size or calibration, each pixel is re-projected
    through both calibrations. A depth image in another frame_id (a depth camera's own optical
    frame) is refused unless extrinsic gives that frame's pose in the colour optical frame:
    its pixels are then back-projected through anchor_intr, moved and projected, as a cloud's.
    max_points > 0: keep a uniform random subset of that many valid pixels (picked before
    anything else is computed from them: a dense depth image has hundreds of thousands).
    """
    frame = str(msg.header.frame_id)
    other = _check_frame('depth image', frame, image_frame, extrinsic)
    z = _depth_array(msg)
    h, w = z.shape
    idx = np.flatnonzero(np.isfinite(z))
    received = int(idx.size)
    if received == 0:
        raise AnchorError(f'anchor depth image ({w}x{h}) has no valid depth (all 0 or NaN).')
    if 0 < max_points < received:
        rng = rng if rng is not None else np.random.default_rng()
        idx = idx[np.sort(rng.choice(received, max_points, replace=False))]
    vv, uu = np.divmod(idx, w)
    zz = z.reshape(-1)[idx]
    same = (w, h) == tuple(image_size)
    if not other and same and (anchor_intr is None or anchor_intr == image_intr):
        return Anchors(uu.astype(np.float32), vv.astype(np.float32), zz, received,
                       stamp_ns(msg.header) * 1e-9)
    if anchor_intr is None or image_intr is None:
        why = f"is in frame '{frame}'" if other else \
            f'is {w}x{h} but the image is {image_size[0]}x{image_size[1]}'
        which = 'anchors/camera_info' if anchor_intr is None else 'camera_info'
        raise AnchorError(f'anchor depth image {why}: re-projecting it needs {which}.')
    if (anchor_intr.width, anchor_intr.height) != (w, h):
        raise AnchorError(f'anchors/camera_info is for {anchor_intr.width}x{anchor_intr.height} '
                          f'but the anchor depth image is {w}x{h}.')
    x = (uu - anchor_intr.cx) / anchor_intr.fx * zz
    y = (vv - anchor_intr.cy) / anchor_intr.fy * zz
    pts = np.stack([x, y, zz], axis=1)
    return _in_image(pts, extrinsic if other else None, image_intr, received,
                     stamp_ns(msg.header) * 1e-9)


def _check_frame(what: str, frame: str, image_frame: str,
                 extrinsic: Optional[np.ndarray]) -> bool:
    """Return whether anchors are in a frame other than the image's; refuse that unposed.

    An empty frame_id on one side only leaves nothing to check the registration by: refused
    too, rather than taken as registered (on neither side, they are taken as registered).
    """
    if bool(frame) != bool(image_frame):
        named = (f"the image is in '{image_frame}' but the anchor {what} has no frame_id"
                 if image_frame else f"the anchor {what} is in '{frame}' but the image has no "
                 'frame_id')
        raise AnchorError(f'{named}: whether the anchors are registered to this camera cannot '
                          "be checked. Set the sensor driver's frame_id.")
    other = bool(frame and frame != image_frame)
    if other and extrinsic is None:
        raise AnchorError(f"anchor {what} is in frame '{frame}' but the image in "
                          f"'{image_frame}': set anchors.extrinsic (with cameras, or this "
                          "camera's entry of anchors.camera_extrinsics) to the fixed pose of "
                          f"'{frame}' in the camera optical frame ('0 0 0 0 0 0 1' if they "
                          'are the same), or use anchors registered to this camera.')
    return other


def _in_image(pts: np.ndarray, extrinsic: Optional[np.ndarray], intr: Intrinsics,
              received: int, stamp: float) -> Anchors:
    """Points of the anchors' frame, moved into the optical frame by extrinsic, -> pixels."""
    if extrinsic is not None:
        pts = pts @ extrinsic[:3, :3].T + extrinsic[:3, 3]
    return _project(pts, intr, received, stamp)


def _cloud_xyz(msg: Any) -> np.ndarray:
    """PointCloud2 -> (N, 3) float64 x, y, z of its finite points; AnchorError if unusable."""
    fields = {str(f.name): f for f in msg.fields}
    missing = [n for n in 'xyz' if n not in fields]
    if missing:
        raise AnchorError(f"anchor cloud has no {', '.join(missing)} field(s) (fields: "
                          f"{', '.join(fields) or 'none'}).")
    h, w = int(msg.height), int(msg.width)
    ps, rs = int(msg.point_step), int(msg.row_step)
    data = data_bytes(msg.data)
    if h * w == 0:
        raise AnchorError('anchor cloud is empty.')
    formats, offsets = [], []
    order = '>' if msg.is_bigendian else '<'
    for n in 'xyz':
        f = fields[n]
        kind = _FLOAT_FIELDS.get(int(f.datatype))
        if kind is None:
            raise AnchorError(f'anchor cloud field {n} has datatype {int(f.datatype)}; x, y, z '
                              'must be FLOAT32 or FLOAT64.')
        if int(f.offset) + int(kind[1]) > ps:
            raise AnchorError(f'anchor cloud field {n} at offset {int(f.offset)} does not fit '
                              f'point_step {ps}.')
        formats.append(order + kind)
        offsets.append(int(f.offset))
    if rs < w * ps or data.size < rs * (h - 1) + w * ps:
        raise AnchorError(f'anchor cloud {w}x{h} (point_step {ps}, row_step {rs}) has '
                          f'{data.size} bytes of data.')
    need = rs * h
    if data.size < need:  # the last row may stop at its last point
        data = np.concatenate([data, np.zeros(need - data.size, np.uint8)])
    rows = data[:need].reshape(h, rs)[:, :w * ps]
    dtype = np.dtype({'names': list('xyz'), 'formats': formats, 'offsets': offsets,
                      'itemsize': ps})
    rec = np.ascontiguousarray(rows).view(dtype).reshape(-1)
    xyz = np.stack([rec['x'], rec['y'], rec['z']], axis=1).astype(np.float64)
    xyz = xyz[np.isfinite(xyz).all(axis=1)]
    if xyz.shape[0] == 0:
        raise AnchorError(f'anchor cloud ({h * w} points) has no finite point.')
    return xyz


def extrinsic_matrix(text: str) -> Optional[np.ndarray]:
    """anchors.extrinsic -> 4x4 transform (cloud frame -> optical frame), None if empty."""
    vals = parse_extrinsic(text)
    if vals is None:
        return None
    x, y, z, qx, qy, qz, qw = vals
    t = np.eye(4)
    t[:3, :3] = [[1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw)],
                 [2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw)],
                 [2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy)]]
    t[:3, 3] = [x, y, z]
    return t


def from_points(msg: Any, image_intr: Optional[Intrinsics], image_frame: str,
                extrinsic: Optional[np.ndarray] = None) -> Anchors:
    """Turn a PointCloud2 into anchors at colour pixels (points behind or outside dropped).

    Without an extrinsic the cloud must be in the image's frame_id; with one, a cloud in
    another frame is taken as in the frame the extrinsic poses in the optical frame (a cloud in
    the image's frame is used as it is).
    """
    if image_intr is None:
        raise AnchorError('anchors/points need camera_info to be projected into the image.')
    other = _check_frame('cloud', str(msg.header.frame_id), image_frame, extrinsic)
    xyz = _cloud_xyz(msg)
    # A cloud already in the image's frame is not moved, as a depth image is not.
    return _in_image(xyz, extrinsic if other else None, image_intr, int(xyz.shape[0]),
                     stamp_ns(msg.header) * 1e-9)


def _project(pts: np.ndarray, intr: Intrinsics, received: int, stamp: float) -> Anchors:
    """Optical-frame points -> pixels (with the camera's distortion) inside the image."""
    front = pts[:, 2] > 1e-6
    pts = pts[front]
    # Equidistant is a lens model (r = f * theta) even with an all-zero D, as geometry.ray_grid
    # takes it: the anchors land where the points of those pixels are.
    if pts.shape[0] and (intr.distortion_model == 'equidistant' or intr.distorted and
                         intr.distortion_model in ('plumb_bob', 'rational_polynomial')):
        import cv2
        zero = np.zeros(3)
        obj = pts.reshape(-1, 1, 3).astype(np.float64)
        if intr.distortion_model == 'equidistant':
            k = (tuple(intr.d) + (0.0,) * 4)[:4]  # as geometry's rays take a short D
            uv, _ = cv2.fisheye.projectPoints(obj, zero, zero, intr.matrix(),
                                              np.array(k, np.float64))
        else:
            uv, _ = cv2.projectPoints(obj, zero, zero, intr.matrix(),
                                      np.array(intr.d, np.float64))
        uv = uv.reshape(-1, 2)
    else:
        uv = np.stack([pts[:, 0] / pts[:, 2] * intr.fx + intr.cx,
                       pts[:, 1] / pts[:, 2] * intr.fy + intr.cy], axis=1)
    inside = ((uv[:, 0] > -0.5) & (uv[:, 0] < intr.width - 0.5) & (uv[:, 1] > -0.5)
              & (uv[:, 1] < intr.height - 0.5))
    return Anchors(uv[inside, 0].astype(np.float32), uv[inside, 1].astype(np.float32),
                   pts[inside, 2].astype(np.float32), received, stamp)


def subsample(a: Anchors, max_points: int, rng: np.random.Generator) -> Anchors:
    """At most max_points anchors, a uniform random subset (dense depth images)."""
    if a.z.size <= max_points:
        return a
    keep = np.sort(rng.choice(a.z.size, max_points, replace=False))
    return Anchors(a.u[keep], a.v[keep], a.z[keep], a.received, a.stamp)


def median_gap(stamps: Iterable[int]) -> Optional[int]:
    """Return the median spacing of stamps (ns), None with fewer than two gaps."""
    ordered = sorted(stamps)
    gaps = sorted(b - a for a, b in zip(ordered, ordered[1:]) if b > a)
    return gaps[len(gaps) // 2] if len(gaps) >= 2 else None


class AnchorBuffer:
    """The last anchor messages of one source, for pairing with images by stamp."""

    def __init__(self, size: int = 32) -> None:
        self._items: Deque[Tuple[int, Any]] = deque(maxlen=size)

    def add(self, msg: Any) -> None:
        """Keep a message (a stamp far behind the newest clears the buffer: a looping bag)."""
        t = stamp_ns(msg.header)
        if self._items and t < self._items[-1][0] - _JUMP_NS:
            self._items.clear()
        self._items.append((t, msg))

    def forget_after(self, stamp: int) -> None:
        """Forget every message once the last one came stamped after stamp (ns): a past pass."""
        if self._items and self._items[-1][0] > stamp:
            self._items.clear()

    @property
    def newest(self) -> int:
        """The newest stamp held (ns), -1 with none."""
        return max((t for t, _ in self._items), default=-1)

    def period(self) -> Optional[int]:
        """Return the stream's usual spacing of stamps (ns, median of the held ones), or None."""
        return median_gap(t for t, _ in self._items)

    def nearest_gap(self, stamp: int) -> Optional[int]:
        """Return how far (ns) the message nearest in stamp is from a stamp, None with none."""
        return min((abs(t - stamp) for t, _ in self._items), default=None)

    def nearest(self, stamp: int, max_age_s: float) -> Optional[Any]:
        """Return the message nearest in stamp to an image stamp (ns), if within max_age_s."""
        best, gap = None, max_age_s * 1e9
        for t, msg in self._items:
            if abs(t - stamp) <= gap:
                best, gap = msg, abs(t - stamp)
        return best

    def __len__(self) -> int:
        """Messages held."""
        return len(self._items)


class AnchorInput:
    """One camera's anchor stream: messages kept for pairing, decoded for the frame they pair.

    The node (or the bag tool) hands every anchors/depth, anchors/camera_info or anchors/points
    message to add() / set_info() and asks for_frame() with each image; decoding happens only
    for the message that pairs, in the caller's thread (add() may come from another thread).
    The last decoded message is reused while it stays the nearest (a camera faster than its
    anchors). Bad messages raise AnchorError there. pending() tells a live caller whether an
    image should wait for its anchor message (one stamped at or after it), as dpt_bag waits.
    """

    def __init__(self, source: str, seed: int = 0) -> None:
        self.source = source
        self.messages = 0   # anchor messages received
        self.paired = 0     # frames given usable anchors
        self.unpaired = 0   # frames with no anchor message within anchors.max_age
        self.bad = 0        # frames whose paired message could not be used
        self.problem = ''   # why the last frame got no anchors ('' when it got them)
        self._lock = threading.Lock()
        self._buffer = AnchorBuffer()
        self._info: Optional[Any] = None
        self._seed = seed
        self._last: Optional[Tuple[Any, Any, Tuple[Any, ...], Anchors]] = None
        self._arrived = float('-inf')  # monotonic time of the last message
        self._frames: Deque[int] = deque(maxlen=8)  # stamps of the images asked about
        self._leap = -1  # the stamp of the last image that jumped ahead of the one before

    def add(self, msg: Any) -> None:
        """Keep an anchors/depth or anchors/points message."""
        with self._lock:
            self.messages += 1
            self._buffer.add(msg)
            self._arrived = time.monotonic()

    @property
    def newest(self) -> int:
        """The newest anchor stamp held (ns), -1 before the first message."""
        with self._lock:
            return self._buffer.newest

    def pending(self, stamp: int, live_s: float, max_age_s: Optional[float] = None) -> bool:
        """Whether an anchor message for an image stamped `stamp` (ns) may still come.

        True while the stream is live (a message arrived within live_s seconds), none stamped
        at or after the image has arrived yet, and the next one, due a period of the stream
        after the newest, would be nearer to the image than the newest and come before the
        camera's next image (which would replace a waiting frame: waiting would lose it), and
        the newest is less than max_age_s + ANCHOR_LAG_S behind the image: a stream delivered
        late (a loaded node, large depth images: seen 0.2-0.5 s) catches up, one stamped far
        behind its camera (clocks not in step) never pairs, so no frame waits for it.
        Once one has arrived, or none can usefully, the frame pairs with the nearest held
        (dpt_bag's rule on log time). So a camera as fast as its anchors (an aligned depth
        image) waits for each frame's own, and a camera faster than them (30 Hz over a 10 Hz
        lidar) keeps its rate, each frame paired with the last anchor. An image stamped over a
        second before the last one asked about (a looping bag, a restarted simulation) while
        the last message held is stamped over a second after it: the messages held are the
        previous pass's, forgotten, and the frame waits for its own. An image stamped over a
        second after the last one asked about (another bag, recorded later) may wait however far
        behind it the newest message is: the anchors jump after it.
        """
        with self._lock:
            if self._frames and stamp < self._frames[-1] - _JUMP_NS:
                self._frames.clear()  # a looping bag
                # Its images looped before its anchors: the messages held are the previous
                # pass's, and this frame's own is still to come.
                self._buffer.forget_after(stamp + _JUMP_NS)
            if self._frames and stamp > self._frames[-1] + _JUMP_NS:
                self._leap = stamp  # jumped ahead (another bag): its anchors may jump after it
            if not self._frames or stamp > self._frames[-1]:
                self._frames.append(stamp)
            if time.monotonic() - self._arrived > live_s:
                return False
            newest, period = self._buffer.newest, self._buffer.period()
            if newest >= stamp:
                return False
            if period is None:
                return True
            due, image_period = newest + period, median_gap(self._frames)
            if max_age_s is not None and stamp - newest > (max_age_s + ANCHOR_LAG_S) * 1e9 \
                    and stamp != self._leap:
                return False  # not a stream running late: one that cannot pair at all
            return due - stamp < stamp - newest and (
                image_period is None or due < stamp + image_period)

    def set_info(self, msg: Any) -> None:
        """Keep the latest anchors/camera_info (for depth images of another resolution)."""
        with self._lock:
            self._info = msg

    def for_frame(self, stamp: int, image_size: Tuple[int, int],
                  image_intr: Optional[Intrinsics], image_frame: str,
                  cfg: AnchorsConfig) -> Optional[Anchors]:
        """Anchors for an image (stamp in ns), or None when no message pairs with it.

        AnchorError when the paired message cannot be used (counted in bad).
        """
        with self._lock:
            msg = self._buffer.nearest(stamp, cfg.max_age)
            info_msg = self._info
            gap = self._buffer.nearest_gap(stamp)
        if msg is None:
            self.unpaired += 1
            self.problem = ('no anchor message yet' if gap is None else
                            f'the nearest anchor message is {gap * 1e-9:.3f} s from the frame, '
                            f'beyond anchors.max_age {cfg.max_age:g} s')
            return None
        # cfg.extrinsic is this camera's own pose (FrameIn.pair: AnchorsConfig.for_camera).
        key = (tuple(image_size), image_intr, image_frame, cfg.extrinsic, cfg.max_points)
        last = self._last
        if last is not None and last[0] is msg and last[1] is info_msg and last[2] == key:
            self.paired += 1
            self.problem = ''
            return last[3]
        # A dense message's random subset depends on the message alone (seeded by its stamp),
        # not on which messages were decoded before: the node, which skips frames under load,
        # and dpt_bag, which takes every frame, fit the same anchors.
        rng = np.random.default_rng((self._seed, stamp_ns(msg.header) % (1 << 64)))
        try:
            a = self._decode(msg, info_msg, image_size, image_intr, image_frame, cfg, rng)
        except AnchorError as exc:
            self.bad += 1
            self.problem = f'anchors unusable: {exc}'
            raise
        except Exception as exc:  # noqa: B902 - OpenCV's errors too: never the batch's
            # Fields that contradict each other in ways the checks above did not foresee.
            self.bad += 1
            self.problem = f'anchors unusable: undecodable message ({exc!r})'
            raise AnchorError(f'undecodable anchor message: {exc!r}') from exc
        a = subsample(a, cfg.max_points, rng)
        self._last = (msg, info_msg, key, a)
        self.paired += 1
        self.problem = ''
        return a

    def _decode(self, msg: Any, info_msg: Optional[Any], image_size: Tuple[int, int],
                image_intr: Optional[Intrinsics], image_frame: str,
                cfg: AnchorsConfig, rng: np.random.Generator) -> Anchors:
        if self.source == 'depth_image':
            info = None
            if info_msg is not None:
                try:
                    info = intrinsics_from_camera_info(info_msg)
                except FrameError as exc:
                    raise AnchorError(f'anchors/camera_info unusable: {exc}') from exc
            return from_depth_image(msg, image_size, image_intr, info, cfg.max_points,
                                    rng, image_frame, extrinsic_matrix(cfg.extrinsic))
        return from_points(msg, image_intr, image_frame, extrinsic_matrix(cfg.extrinsic))
