# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""One road for a camera frame, live or from a bag: decoded, calibrated, paired, run, serialized.

The node (dpt_ros.ros.worker) and dpt_bag (dpt_ros.offline.bag) both turn each image into a
FrameIn, give it the intrinsics of its camera's Calibration and the anchors nearest in stamp,
run frames of one network input together through Pipeline.process_batch (run) and serialize each
output to CDR (messages): the node publishes those bytes and the bag writes them, so the
node's and the bag's outputs are the same by construction. No rclpy.
"""

from __future__ import annotations

from dataclasses import dataclass
import time
from typing import AbstractSet, Any, Dict, FrozenSet, Iterator, List, Optional, Sequence, Tuple

from dpt_ros.core import cdr
from dpt_ros.core import conversions as conv
from dpt_ros.core import outputs
from dpt_ros.core.anchors import AnchorInput
from dpt_ros.core.config import AnchorsConfig, Config
from dpt_ros.core.conversions import Frame
from dpt_ros.core.geometry import Intrinsics, IntrinsicsError
from dpt_ros.core.metric import Anchors
from dpt_ros.core.outputs import EncodeOptions, Output, Result
from dpt_ros.core.pipeline import Pipeline


@dataclass
class FrameIn:
    """One decoded camera frame on its way through a batch, with what came with it."""

    frame: Frame
    header: Any                               # the image's header: every output carries it
    camera: str = ''                          # its camera's name: its depth.temporal / fit source
    want: FrozenSet[str] = outputs.ALL        # the outputs to compute for it
    decode_ms: float = 0.0
    intrinsics: Optional[Intrinsics] = None
    camera_info: Any = None                   # the CameraInfo the intrinsics come from
    anchors: Optional[Anchors] = None         # paired by stamp (depth.mode fitted)
    origin: Any = None                        # the caller's own: where the frame came from

    @classmethod
    def decode(cls, msg: Any, compressed: bool, pipe: Optional[Pipeline] = None,
               **fields: Any) -> 'FrameIn':
        """Decode an Image (or a CompressedImage) message, timed; FrameError if unusable.

        With pipe, a frame its models cannot take (Pipeline.check_frame) is unusable too: it
        is refused here, alone, rather than failing the forward it would share.
        """
        t0 = time.perf_counter()
        frame = conv.decode_compressed(msg) if compressed else conv.decode_image(msg)
        if pipe is not None:
            pipe.check_frame(frame)
        return cls(frame, msg.header, decode_ms=(time.perf_counter() - t0) * 1e3, **fields)

    @property
    def stamp_ns(self) -> int:
        """The image stamp in nanoseconds."""
        return conv.stamp_ns(self.header)

    @property
    def group(self) -> Tuple[Tuple[int, ...], str]:
        """Frames with the same key are uploaded and preprocessed together (size and layout)."""
        return self.frame.pixels.shape, self.frame.layout

    def batch_key(self, pipe: Pipeline) -> Tuple:
        """Frames with the same key share a forward (Pipeline.batch_key: one network input)."""
        return pipe.batch_key(self.frame)

    def calibrate(self, calibration: 'Calibration', rectified: bool) -> None:
        """Take the intrinsics of the camera's newest camera_info; IntrinsicsError if unusable.

        Without a camera_info the frame has none (and so no points or depth/camera_info).
        """
        self.intrinsics, self.camera_info = \
            calibration.for_frame(self.frame.width, self.frame.height, rectified)

    def pair(self, anchors: AnchorInput, cfg: AnchorsConfig) -> Optional[Anchors]:
        """Take the anchors nearest in stamp, None if none pair; AnchorError if unusable.

        Anchors in another frame are moved by this camera's pose: its anchors.camera_extrinsics
        entry, else anchors.extrinsic.
        """
        self.anchors = anchors.for_frame(self.stamp_ns, (self.frame.width, self.frame.height),
                                         self.intrinsics, str(self.header.frame_id),
                                         cfg.for_camera(self.camera))
        return self.anchors


class Calibration:
    """One camera's newest CameraInfo and its Intrinsics, converted once per message."""

    def __init__(self) -> None:
        self.info: Any = None
        self._converted: Tuple[Any, ...] = (None, None, None, None)  # info, rectified, intr, err

    def update(self, info: Any) -> None:
        """Keep a camera_info as the newest (from any thread)."""
        self.info = info

    def for_frame(self, width: int, height: int,
                  rectified: bool) -> Tuple[Optional[Intrinsics], Any]:
        """Return (Intrinsics, CameraInfo) for a frame of this size, (None, None) with none yet.

        Raises IntrinsicsError when the camera_info cannot be used (malformed, not calibrated,
        another size).
        """
        info = self.info
        if info is None:
            return None, None
        done = self._converted
        if done[0] is not info or done[1] != rectified:
            try:
                done = (info, rectified, conv.intrinsics_from_camera_info(info, rectified), None)
            except ValueError as exc:  # FrameError, IntrinsicsError, a field that is no number
                done = (info, rectified, None, IntrinsicsError(str(exc)))
            self._converted = done
        if done[3] is not None:
            raise done[3]
        done[2].check(width, height)
        return done[2], info


def run(pipe: Pipeline, frames: Sequence[FrameIn], cfg: Optional[Config] = None
        ) -> Iterator[List[Tuple[FrameIn, Result]]]:
    """Run frames as one forward per network input; yield each forward's results.

    A forward computes what any of its frames wants; each frame's camera is its own source,
    with its image stamps (depth.temporal, depth.mode fitted), so the frames of one camera
    must come in time order. Each Result's timings get its frame's decode time. cfg: the
    settings the frames were taken under (default: the pipeline's now), for all of them.
    """
    groups: Dict[Tuple, List[FrameIn]] = {}
    for f in frames:
        groups.setdefault(f.batch_key(pipe), []).append(f)
    for group in groups.values():
        results = pipe.process_batch(
            [f.frame for f in group], [f.intrinsics for f in group],
            frozenset().union(*(f.want for f in group)), anchors=[f.anchors for f in group],
            sources=[f.camera for f in group], stamps=[f.stamp_ns / 1e9 for f in group],
            cfg=cfg)
        for f, r in zip(group, results):
            r.timings['decode'] = f.decode_ms
        yield list(zip(group, results))


def messages(f: FrameIn, result: Result, depth_encoding: str,
             want: Optional[AbstractSet[str]] = None) -> List[Tuple[Output, bytes]]:
    """Serialize a frame's outputs (those of want, default f.want) to CDR, under its header.

    The bytes rclpy publishes as they are, and a bag stores as they are.
    """
    return [(o, s.tobytes()) for o, s in serialized(f, result, depth_encoding, want)]


def serialized(f: FrameIn, result: Result, depth_encoding: str,
               want: Optional[AbstractSet[str]] = None) -> List[Tuple[Output, cdr.Serialized]]:
    """messages() as cdr.Serialized: chunks that still reference result's arrays."""
    encoded = outputs.encode(result, EncodeOptions(depth_encoding, f.camera_info is not None),
                             f.want if want is None else want)
    return [(o, cdr.fields_to_serialized(o.msg_type, fields, f.header, f.camera_info))
            for o, fields in encoded]
