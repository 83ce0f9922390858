# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""What a frame produces: the one table of outputs, the Result holding them, the stage names.

Each row of OUTPUTS is one output: its name, its topic (relative, depth_image_proc / REP 118
style), its message type, the model task it needs, how it is computed from the frame's tensors
(FrameTensors, which the pipeline hands it) and in which stage, and how its array becomes message
fields (the plain dicts of dpt_ros.core.conversions). The pipeline runs the computations of the
rows it is asked for, and the node, the bag writer, the demo and the benchmark iterate the
rows: a new output is one row here. No rclpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import (AbstractSet, Any, Callable, Dict, FrozenSet, Iterable, List, Optional,
                    Protocol, Tuple, TYPE_CHECKING)

import numpy as np
import torch

from dpt_ros.core import conversions as conv
from dpt_ros.core import normals as nm
from dpt_ros.core import postprocess as post
from dpt_ros.core.conversions import CLOUD_TYPE, IMAGE_TYPE, INFO_TYPE
from dpt_ros.core.geometry import Backprojector, Intrinsics, IntrinsicsError

if TYPE_CHECKING:
    from dpt_ros.core.config import Config
    from dpt_ros.core.metric import FitReport

DEPTH_TASK = 'depth'
SEGMENTATION_TASK = 'segmentation'

# Stages timed inside the pipeline, in order; a frame through the node adds decode before
# them and message fill + publish after them.
STAGES = ('upload', 'preprocess', 'forward', 'postprocess', 'fit', 'geometry', 'download')
UPLOAD, PREPROCESS, FORWARD, POSTPROCESS, FIT, GEOMETRY, DOWNLOAD = STAGES
DECODE, FILL, PUBLISH = 'decode', 'fill', 'publish'
FRAME_STAGES = (DECODE,) + STAGES + (FILL, PUBLISH)

# Published once (transient local) with vision_msgs, not per frame: not a row of the table.
TOPIC_LABEL_INFO = 'segmentation/label_info'
LABEL_INFO_TYPE = 'vision_msgs/msg/LabelInfo'


@dataclass
class Result:
    """What one frame produced: host numpy arrays by output name, only those computed."""

    height: int
    width: int
    mode: str = ''                          # effective depth mode
    arrays: Dict[str, np.ndarray] = field(default_factory=dict)
    points_shape: Tuple[int, int] = (0, 0)  # cloud height, width ('points' is (N, C) float32)
    points_rgb: bool = False
    points_extra: Tuple[str, ...] = ()  # names of the cloud's columns after x y z rgb ('': pad)
    notes: Dict[str, str] = field(default_factory=dict)  # per-frame facts for /diagnostics
    timings: Dict[str, float] = field(default_factory=dict)  # milliseconds per stage
    warnings: List[str] = field(default_factory=list)
    fit: Optional['FitReport'] = None       # depth.mode fitted / temporal: what the fit did


@dataclass(frozen=True)
class EncodeOptions:
    """What encoding needs beyond the Result: the frame's settings and what came with it."""

    depth_encoding: str = '32FC1'
    camera_info: bool = False  # the input CameraInfo is at hand (for depth/camera_info)


class FrameTensors(Protocol):
    """What a row's compute reads of one frame: its tensors on the device, made on first use.

    The pipeline hands each row one of these (pipeline.FrameTensors); tensors are (H, W) or
    (H, W, 3) at the camera frame's size.
    """

    cfg: 'Config'
    result: 'Result'                    # the frame's warnings, the cloud's shape
    intrinsics: Optional[Intrinsics]
    metric: bool                        # the checkpoint outputs metres
    project: Backprojector
    num_labels: int
    excluded: Optional[torch.Tensor]    # class ids points.exclude_classes drops, or None
    metres: Optional[torch.Tensor]      # NaN where invalid; None without metric depth
    relative: torch.Tensor              # inverse depth, larger is nearer
    confidence: Optional[torch.Tensor]  # flip confidence in [0, 1], None unless computed
    labels: Optional[torch.Tensor]      # class ids, None unless segmentation ran
    normals: Optional[torch.Tensor]     # unit normals in the optical frame, NaN unknown
    rgb8: torch.Tensor                  # the camera image
    seg_colored: torch.Tensor           # class colours


Fields = Dict[str, Any]
Encoder = Callable[[np.ndarray, Result, EncodeOptions], Optional[Fields]]
# One frame's tensors -> the output's tensor on the device, or None: nothing this frame.
Compute = Callable[['FrameTensors'], Optional['torch.Tensor']]
Setting = Callable[[Any], bool]  # a question about the Config in force


def always(_cfg: Any) -> bool:
    """Hold under any settings (a Setting)."""
    return True


def never(_cfg: Any) -> bool:
    """Hold under no settings (a Setting)."""
    return False


@dataclass(frozen=True)
class Output:
    """One row of the output table."""

    name: str           # key in Result.arrays and in the set of wanted outputs
    topic: str          # relative to the node's (or the camera's) namespace
    msg_type: str       # ROS type name, e.g. sensor_msgs/msg/Image
    task: str           # the model it needs: DEPTH_TASK or SEGMENTATION_TASK
    encode: Encoder     # Result array -> message fields; None: nothing to publish this frame
    shown: str          # the type as the README's topic table shows it
    when: str           # what it holds and when it is published (README)
    compute: Optional[Compute] = None  # its array from the frame's tensors (None: see array)
    stage: str = POSTPROCESS  # the timed stage its compute runs in
    array: str = ''     # the Result array it is encoded from, when not its own name
    viewer: bool = False  # a picture for people (colormaps, overlays), not data
    runs_model: Setting = always  # whether it needs its model to run under these settings
    reads_confidence: Setting = never  # whether it reads the flip confidence (then computed)
    reads_labels: Setting = never  # whether a depth row reads the segmentation too
    reads_normals: Setting = never  # whether it reads surface normals (then computed)
    from_normals: bool = False  # computed from normals alone (no depth under a normals head)
    needs_camera_info: bool = False  # encoded only when the input CameraInfo is at hand

    @property
    def source(self) -> str:
        """Name of the Result array this output is encoded from."""
        return self.array or self.name


def _image(encoding: str) -> Encoder:
    return lambda arr, _r, _o: conv.image_fields(arr, encoding)


def _depth(arr: np.ndarray, _r: Result, opts: EncodeOptions) -> Fields:
    enc = opts.depth_encoding
    return conv.image_fields(conv.depth_to_encoded(arr, enc), enc)


def _depth_info(_arr: np.ndarray, _r: Result, _o: EncodeOptions) -> Fields:
    # Empty fields mean 'the input CameraInfo under the output header' (needs_camera_info).
    return {}


def _points(arr: np.ndarray, r: Result, _o: EncodeOptions) -> Fields:
    h, w = r.points_shape
    return conv.pointcloud_fields(arr, h, w, r.points_rgb, r.points_extra)


def _labels(arr: np.ndarray, _r: Result, _o: EncodeOptions) -> Fields:
    return conv.image_fields(arr, 'mono8' if arr.dtype == np.uint8 else 'mono16')


# ------------------------------------------------------------------ how each row is computed

def _relative_of(f: 'FrameTensors') -> Optional['torch.Tensor']:
    # Inverse depth (larger is nearer) whatever the checkpoint; beside metres only when the
    # checkpoint is relative (a metric one's 1 / metres adds nothing to depth/image).
    return f.relative if f.metres is None or not f.metric else None


def _depth_colored_of(f: 'FrameTensors') -> 'torch.Tensor':
    # Without metres the viewer shows the relative (inverse) depth.
    inverse = f.metres is None
    return post.colorize_depth(f.relative if inverse else f.metres, f.cfg.depth.colormap,
                               inverse=inverse)


def _reads_labels(cfg: Any) -> bool:
    p = cfg.points
    return p.labels or bool(p.exclude_classes) or p.colour == 'label'


def _points_of(f: 'FrameTensors') -> Optional['torch.Tensor']:
    if f.metres is None:
        return None
    r, p = f.result, f.cfg.points
    if f.intrinsics is None:
        return None
    try:
        f.intrinsics.check(r.width, r.height)
    except IntrinsicsError as exc:
        r.warnings.append(str(exc))
        r.notes['points'] = f'none: {exc}'  # for /diagnostics, where 'none: ...' warns
        return None
    r.notes['points'] = 'published'
    z = f.metres
    if f.confidence is not None and p.min_confidence > 0:
        z = z.masked_fill(f.confidence < p.min_confidence, float('nan'))
    labels = f.labels
    if labels is not None and f.excluded is not None:
        z = z.masked_fill(torch.isin(labels, f.excluded), float('nan'))
    colours = None
    if p.rgb:
        colours = f.seg_colored if p.colour == 'label' and labels is not None else f.rgb8
    pts, ph, pw = f.project(z, f.intrinsics, p.stride, True, colours)
    if f.project.note:
        r.warnings.append(f.project.note)
    cols, extra = [pts], []
    if p.normals:  # NaN where unknown, or for the whole frame without normals
        n = f.normals
        n = n[::p.stride, ::p.stride].reshape(-1, 3) if n is not None else \
            torch.full((pts.shape[0], 3), float('nan'), device=pts.device)
        cols.append(n.to(torch.float32))
        extra += nm.NORMAL_FIELDS
    if p.labels and labels is not None:  # class ids as uint32 bits (a copy, no float maths)
        cols.append(labels[::p.stride, ::p.stride].reshape(-1, 1).to(torch.int32)
                    .view(torch.float32))
        extra.append(conv.LABEL_FIELD)
    if extra:
        pad = -(4 + len(extra)) % 4  # 16-byte points, as PCL aligns them
        cols.append(torch.zeros((pts.shape[0], pad), device=pts.device))
        extra += [''] * pad
        pts = torch.cat(cols, 1)
    if not p.organized:
        pts = pts[torch.isfinite(pts[:, 2])]
        ph, pw = 1, int(pts.shape[0])
    r.points_shape = (ph, pw)
    r.points_rgb = p.rgb
    r.points_extra = tuple(extra)
    return pts


def _normals_colored_of(f: 'FrameTensors') -> Optional['torch.Tensor']:
    n = f.normals
    return None if n is None else nm.colorize_normals(n)


OUTPUTS: Tuple[Output, ...] = (
    Output('relative', 'depth/relative', IMAGE_TYPE, DEPTH_TASK, _image('32FC1'),
           'Image 32FC1', 'relative checkpoint, or `depth.mode: relative_inverse`: inverse '
           "depth, larger is nearer (a metric checkpoint's 1 / metres)", _relative_of),
    Output('depth', 'depth/image', IMAGE_TYPE, DEPTH_TASK, _depth,
           'Image 32FC1 metres, NaN invalid (or 16UC1 mm, 0 invalid)',
           'a metric mode is in force (REP 118)', lambda f: f.metres),
    Output('depth_info', 'depth/camera_info', INFO_TYPE, DEPTH_TASK, _depth_info,
           'CameraInfo', 'with `depth/image`: the input calibration under the output header',
           array='depth', needs_camera_info=True),
    Output('depth_colored', 'depth/colored', IMAGE_TYPE, DEPTH_TASK, _image('rgb8'),
           'Image rgb8', 'colormapped depth for viewers (near is the top of depth.colormap: '
           'bright in inferno)', _depth_colored_of,
           viewer=True),
    Output('points', 'points', CLOUD_TYPE, DEPTH_TASK, _points,
           'PointCloud2 (x, y, z float32 + packed rgb; point_step 16; + normal_x, normal_y, '
           'normal_z float32 with `points.normals`, + label uint32 with a segmentation model: '
           'point_step 32)',
           'metric depth + camera_info; optical frame, organized H x W with NaN or dense',
           _points_of, GEOMETRY, reads_confidence=lambda cfg: cfg.points.min_confidence > 0,
           reads_labels=_reads_labels, reads_normals=lambda cfg: cfg.points.normals),
    Output('normals', 'normals/image', IMAGE_TYPE, DEPTH_TASK, _image('32FC3'),
           'Image 32FC3', 'unit surface normals in the optical frame (x right, y down, z '
           'forward), NaN unknown: from the normals head, or from metric depth + camera_info '
           '(`normals.source`)', lambda f: f.normals, GEOMETRY, reads_normals=always,
           from_normals=True),
    Output('normals_colored', 'normals/colored', IMAGE_TYPE, DEPTH_TASK, _image('rgb8'),
           'Image rgb8', 'normals for viewers: 255 (n + 1) / 2, unknown black',
           _normals_colored_of, GEOMETRY, viewer=True, reads_normals=always, from_normals=True),
    Output('confidence', 'depth/confidence', IMAGE_TYPE, DEPTH_TASK, _image('32FC1'),
           'Image 32FC1 in [0, 1]', '`depth.confidence: flip`: 1 where the mirrored frame '
           'agrees, towards 0 where it does not', lambda f: f.confidence,
           runs_model=lambda cfg: cfg.depth.confidence == 'flip', reads_confidence=always),
    Output('labels', 'segmentation/image', IMAGE_TYPE, SEGMENTATION_TASK, _labels,
           'Image mono8 (<= 256 classes) or mono16',
           'segmentation model set; pixel = class id',
           lambda f: f.labels.to(post.labels_dtype(f.num_labels))),
    Output('seg_colored', 'segmentation/colored', IMAGE_TYPE, SEGMENTATION_TASK,
           _image('rgb8'), 'Image rgb8', 'class colours', lambda f: f.seg_colored, viewer=True),
    Output('overlay', 'segmentation/overlay', IMAGE_TYPE, SEGMENTATION_TASK, _image('rgb8'),
           'Image rgb8', 'class colours blended over the camera image',
           lambda f: post.overlay(f.rgb8, f.seg_colored, f.cfg.segmentation.overlay_alpha),
           viewer=True),
)

BY_NAME: Dict[str, Output] = {o.name: o for o in OUTPUTS}
BY_TOPIC: Dict[str, Output] = {o.topic: o for o in OUTPUTS}
ALL: FrozenSet[str] = frozenset(BY_NAME)


def names(*, tasks: Iterable[str] = (DEPTH_TASK, SEGMENTATION_TASK), viewers: bool = True,
          exclude: Iterable[str] = ()) -> FrozenSet[str]:
    """Select output names: of these tasks, with or without viewing images, minus exclude."""
    tasks, exclude = set(tasks), set(exclude)
    unknown = exclude - {o.name for o in OUTPUTS}
    if unknown:
        raise ValueError(f"unknown output(s) {', '.join(sorted(unknown))}")
    return frozenset(o.name for o in OUTPUTS if o.task in tasks and (viewers or not o.viewer)
                     and o.name not in exclude)


def arrays_needed(wanted: AbstractSet[str]) -> FrozenSet[str]:
    """Return the Result arrays the pipeline must compute for these outputs."""
    return frozenset(o.source for o in OUTPUTS if o.name in wanted)


def computed(wanted: AbstractSet[str]) -> Tuple[Output, ...]:
    """Return the rows whose compute makes the Result arrays these outputs are encoded from."""
    arrays = arrays_needed(wanted)
    return tuple(o for o in OUTPUTS if o.name in arrays and o.compute is not None)


def encode(result: Result, opts: EncodeOptions,
           wanted: Optional[AbstractSet[str]] = None) -> List[Tuple[Output, Fields]]:
    """Encode a Result: [(row, fields)] for every output it holds (only those wanted, if given).

    The fields are plain dicts (numpy data). The node turns them into rclpy messages and the
    bag writer into rosbags messages, so both publish exactly the same content.
    """
    out = []
    for o in OUTPUTS:
        if wanted is not None and o.name not in wanted:
            continue
        arr = result.arrays.get(o.source)
        if arr is None or (o.needs_camera_info and not opts.camera_info):
            continue
        fields = o.encode(arr, result, opts)
        if fields is not None:
            out.append((o, fields))
    return out


def unpublished(result: Result, wanted: AbstractSet[str], camera_info: bool) -> List[str]:
    """Return the wanted outputs (names, sorted) this Result has nothing for (encode skips)."""
    return sorted(n for n in wanted if BY_NAME[n].source not in result.arrays or
                  (BY_NAME[n].needs_camera_info and not camera_info))


def why_unpublished(name: str, result: Result, cfg: 'Config', camera_info: bool,
                    normals_from: str) -> Tuple[str, bool]:
    """Return why a wanted output has nothing this frame, and whether a setting is the cause.

    result.mode: the depth mode in force; normals_from: 'head' or 'depth' (normals.source).
    A setting's cause lasts until the setting changes; the others pass with the frame (no fit,
    no calibration yet, no depth from the model), and are warned where they arise.
    """
    o = BY_NAME[name]
    if name == 'confidence' and cfg.depth.confidence != 'flip':
        return "depth.confidence is 'off' ('flip' computes it)", True
    if name == 'relative':  # left out only beside a metric checkpoint's metres
        return ("the checkpoint is metric: its depth is depth/image (depth.mode "
                "'relative_inverse' publishes 1 / metres here)"), True
    from_depth = name in ('depth', 'depth_info', 'points') or \
        (o.from_normals and normals_from == 'depth')
    if (o.needs_camera_info or (from_depth and o.from_normals)) and not camera_info:
        return 'no camera_info', False
    if from_depth and result.mode == 'relative_inverse':
        if cfg.depth.mode == 'relative_inverse':
            return ("no metres under depth.mode 'relative_inverse': 'auto' or 'metric' for a "
                    "metric checkpoint, 'affine_inverse' or 'fitted' for a relative one"), True
        return ("no metres: the depth model is relative: set depth.mode 'affine_inverse' "
                "(depth.scale, depth.shift) or 'fitted' (anchors), or use a metric "
                'checkpoint'), True
    if from_depth and result.mode == 'fitted':
        return 'no metres this frame (fit_state)', False
    if from_depth:
        return 'no depth this frame', False
    if o.from_normals:
        return 'the normals head gave none this frame', False
    return 'nothing to publish this frame', False


def markdown_rows() -> str:
    """Return the output rows of the README's topic table."""
    return '\n'.join(f'| `{o.topic}` | {o.shown} | {o.when} |' for o in OUTPUTS)
