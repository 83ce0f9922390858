# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Every dpt_ros setting as frozen dataclasses, with ranges and validation (stdlib only)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
import functools
import math
import os
from pathlib import Path
import re
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Tuple

from dpt_ros.core.backends import BACKENDS, NAMES as BACKEND_NAMES


def cache_dir(*parts: str) -> Path:
    """Return dpt_ros's cache folder joined with parts: $XDG_CACHE_HOME/dpt_ros.

    ~/.cache/dpt_ros when XDG_CACHE_HOME is unset, empty or relative (the XDG base directory
    specification says a relative path there is invalid and to be ignored).
    """
    base = os.environ.get('XDG_CACHE_HOME', '')
    root = Path(base) if os.path.isabs(base) else Path('~/.cache').expanduser()
    return root.joinpath('dpt_ros', *parts)


# Metric (metres out of the box) and Apache-2.0; README.md "Which checkpoint" says why.
DEFAULT_DEPTH_MODEL = 'depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf'
DEFAULT_DEPTH_MAX = 20.0  # metres, where depth.max is 0 and the checkpoint declares none

DEPTH_MODES = ('auto', 'relative_inverse', 'metric', 'affine_inverse', 'fitted')
CONFIDENCE_MODES = ('off', 'flip')
ANCHOR_SOURCES = ('none', 'depth_image', 'points')
ANCHOR_TRANSPORTS = ('raw', 'compressedDepth')
ANCHOR_FITS = ('auto', 'scale', 'affine')
DEPTH_ENCODINGS = ('32FC1', '16UC1')
COLORMAPS = ('inferno', 'turbo', 'magma', 'viridis', 'plasma', 'jet', 'gray')
PRECISIONS = ('auto', 'fp32', 'fp16', 'bf16')
ASPECT_CHOICES = ('checkpoint', 'true', 'false')
TRANSPORTS = ('raw', 'compressed')
INPUT_RELIABILITY = ('auto', 'reliable', 'best_effort')
OUTPUT_RELIABILITY = ('reliable', 'best_effort')
NORMAL_SOURCES = ('auto', 'head', 'depth')
POINT_COLOURS = ('rgb', 'label')

_DEVICE_RE = re.compile(r'^(auto|cpu|cuda|cuda:\d+)$')
# A camera name is a relative or absolute ROS namespace: its topics are <name>/image, ...
_CAMERA_RE = re.compile(r'^/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$')
MAX_CAMERAS = 32
# Python type of each kind of setting, by its annotation (list settings are tuples: frozen).
_TYPES = {'str': str, 'int': int, 'float': float, 'bool': bool, 'Tuple[str, ...]': tuple}


class ConfigError(ValueError):
    """A setting has a value dpt_ros cannot use; the message names it and the fix."""


def _opt(default: Any, description: str, *, lo: Optional[float] = None,
         hi: Optional[float] = None, choices: Tuple[str, ...] = (),
         read_only: bool = False, items: str = 'names') -> Any:
    """Declare one setting: default, description, numeric range or choices, reload need.

    items: what a list setting holds, for its allowed-values column.
    """
    meta = {'description': description, 'range': (lo, hi) if lo is not None else None,
            'choices': choices, 'read_only': read_only, 'items': items}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelConfig:
    """Which checkpoints to run and how (changing any of these reloads the model)."""

    depth: str = _opt(
        DEFAULT_DEPTH_MODEL,
        'Depth checkpoint: a local directory (config.json + model.safetensors) or a Hugging '
        'Face hub id (DPT, Depth Anything, ...). Empty disables depth.', read_only=True)
    segmentation: str = _opt(
        '', 'Semantic segmentation checkpoint (e.g. Intel/dpt-large-ade or a local directory). '
        'Empty disables segmentation.', read_only=True)
    device: str = _opt(
        'auto', "Torch device: 'auto' (first CUDA GPU, else CPU), 'cpu', 'cuda' or 'cuda:N'.",
        read_only=True)
    precision: str = _opt(
        'auto', "Inference precision: 'auto' (fp16 on CUDA, fp32 on CPU), 'fp32', 'fp16' or "
        "'bf16'. Half precision on CPU falls back to fp32 with a log line.",
        choices=PRECISIONS, read_only=True)
    backend: str = _opt(
        'torch', 'Inference backend: '
        + ', '.join(f"'{b.name}' ({b.description})" for b in BACKENDS)
        + '. Exported runtimes fall back to torch with a log line when unavailable.',
        choices=BACKEND_NAMES, read_only=True)
    input_height: int = _opt(
        0, 'Network input height in pixels; 0 takes it from the checkpoint preprocessor_config.',
        lo=0, hi=4096, read_only=True)
    input_width: int = _opt(
        0, 'Network input width in pixels; 0 takes it from the checkpoint preprocessor_config.',
        lo=0, hi=4096, read_only=True)
    keep_aspect_ratio: str = _opt(
        'checkpoint', "Keep the camera aspect ratio when resizing: 'checkpoint', 'true' or "
        "'false'. ViT-based DPT checkpoints need a square input.",
        choices=ASPECT_CHOICES, read_only=True)
    ensure_multiple_of: int = _opt(
        0, 'Round the network input size to a multiple of this; 0 takes it from the checkpoint.',
        lo=0, hi=256, read_only=True)
    engine_dir: str = _opt(
        '', 'Folder for cached TensorRT engines and ONNX exports; empty means '
        '$XDG_CACHE_HOME/dpt_ros/engines (~/.cache/dpt_ros/engines when unset).',
        read_only=True)
    warmup_sizes: Tuple[str, ...] = _opt(
        (), "Camera frame sizes as 'WIDTHxHEIGHT', e.g. ['640x480', '1280x720']: at start-up "
        'the network input of each is built (ONNX export, TensorRT engine, compile) and run '
        'once, for checkpoints whose input follows the frame size (Depth Anything, ZoeDepth, '
        'keep-aspect). Not named: such a checkpoint builds its first size on its first frame '
        'and any other on its second (the first runs eager torch), and frames meanwhile are '
        'dropped. Fixed-input checkpoints (ViT DPT) are warmed anyway.',
        read_only=True, items='frame sizes')


@dataclass(frozen=True)
class DepthConfig:
    """How raw model output becomes published depth (live: applied from the next frame)."""

    mode: str = _opt(
        'auto', "'relative_inverse' (unitless, larger is nearer; published on depth/relative "
        "only), 'metric' (the checkpoint outputs metres), 'affine_inverse' (metres = "
        "1 / (scale * d + shift)), 'fitted' (scale and shift fitted per frame to the metric "
        "anchors of anchors.source) or 'auto' (metric if the checkpoint says so, else "
        'relative).', choices=DEPTH_MODES)
    scale: float = _opt(
        1.0, 'affine_inverse: scale in metres = 1 / (scale * d + shift); metric: depth is '
        'multiplied by it.', lo=0.0, hi=1.0e6)
    shift: float = _opt(
        0.0, 'affine_inverse: shift in metres = 1 / (scale * d + shift).', lo=-1.0e6, hi=1.0e6)
    min: float = _opt(0.1, 'Nearest valid depth in metres; nearer becomes NaN.', lo=0.0, hi=1.0e4)
    max: float = _opt(
        0.0, 'Farthest valid depth in metres; farther becomes NaN. 0: the max_depth a metric '
        f'checkpoint declares (Depth Anything, GLPN, ZoeDepth), else {DEFAULT_DEPTH_MAX:g} m.',
        lo=0.0, hi=1.0e4)
    encoding: str = _opt(
        '32FC1', "depth/image encoding: '32FC1' metres with NaN invalid (REP 118) or '16UC1' "
        'millimetres with 0 invalid.', choices=DEPTH_ENCODINGS)
    colormap: str = _opt(
        'inferno', 'Colormap of depth/colored: near takes the top of the map (bright in inferno, '
        'magma, viridis, plasma, gray; red in turbo and jet), invalid pixels are black.',
        choices=COLORMAPS)
    temporal: bool = _opt(
        True, 'fitted: filter scale and shift over time (log-scale, outlier fits gated) so a '
        'frame with few or bad anchors does not jump; relative_inverse: align each '
        'depth/relative to the previous ones so it stops flickering.')
    confidence: str = _opt(
        'off', "'flip': also run the horizontally mirrored frame (same batch) and publish "
        'depth/confidence (1 = both agree); costs a second forward per frame.',
        choices=CONFIDENCE_MODES)
    confidence_tolerance: float = _opt(
        0.1, 'Relative disagreement of the mirrored prediction at which depth/confidence '
        'falls to exp(-1).', lo=0.001, hi=10.0)


@dataclass(frozen=True)
class PointsConfig:
    """Point cloud settings (live)."""

    stride: int = _opt(1, 'Keep every N-th pixel in rows and columns.', lo=1, hi=64)
    organized: bool = _opt(
        True, 'true: H x W cloud with NaN for invalid pixels; false: dense list of valid points.')
    rgb: bool = _opt(True, 'Add the packed rgb field from the camera image.')
    min_confidence: float = _opt(
        0.5, 'With depth.confidence flip: points whose depth/confidence is below this are '
        'dropped (NaN); 0 keeps all.', lo=0.0, hi=1.0)
    normals: bool = _opt(
        False, 'Add normal_x, normal_y, normal_z (PCL PointNormal names; unit vectors in the '
        'optical frame, NaN unknown) from normals.source.')
    labels: bool = _opt(
        True, "With a segmentation model: add the class id as 'label' (uint32, PCL "
        'PointXYZRGBL); the segmentation model then runs for points too.')
    exclude_classes: Tuple[str, ...] = _opt(
        (), 'Segmentation classes whose points are dropped (organized: NaN; dense: removed), '
        "by name or id as text, e.g. [sky, ceiling] or ['2']. Needs a segmentation model.")
    colour: str = _opt(
        'rgb', "What the rgb field holds: 'rgb' the camera's colours, 'label' the class colours "
        'of segmentation/colored (needs a segmentation model).', choices=POINT_COLOURS)


@dataclass(frozen=True)
class NormalsConfig:
    """Surface normals: normals/image, normals/colored and the cloud's normal fields."""

    source: str = _opt(
        'auto', "'head': the checkpoint's normals head (TIPSv2-DPT); 'depth': from the metric "
        "depth image and camera_info (any checkpoint; cross product of neighbouring "
        "back-projected points); 'auto': the head when the checkpoint has one, else depth.",
        choices=NORMAL_SOURCES, read_only=True)
    max_jump: float = _opt(
        0.05, 'Normals from depth: neighbours whose depths differ by more than this fraction '
        'lie on another surface (no normal across occlusion edges).', lo=0.001, hi=10.0)


@dataclass(frozen=True)
class AnchorsConfig:
    """Sparse metric depths that depth.mode fitted scales the model output to."""

    source: str = _opt(
        'none', "'depth_image': anchors/depth (Image 16UC1 mm or 32FC1 m, 0 / NaN = none, "
        "registered to this camera; another size needs anchors/camera_info); 'points': "
        "anchors/points (PointCloud2 x, y, z); 'none'.", choices=ANCHOR_SOURCES,
        read_only=True)
    transport: str = _opt(
        'raw', "anchors.source depth_image: 'raw' subscribes to anchors/depth (Image); "
        "'compressedDepth' to anchors/depth/compressedDepth (CompressedImage of "
        "image_transport's compressedDepth: PNG or RVL, 16UC1 or 32FC1), as depth cameras "
        'are often recorded.', choices=ANCHOR_TRANSPORTS, read_only=True)
    max_age: float = _opt(
        0.1, 'Pair each image with the anchor message nearest in stamp, if within this many '
        'seconds. While anchors arrive, an image waits up to this long for one stamped at or '
        'after it (an aligned depth image comes after its colour image), when that one would '
        "be nearer and due before the camera's next frame.",
        lo=0.0, hi=10.0)
    hold: float = _opt(
        1.0, 'Without usable anchors, keep the last fit this many seconds (by image stamps) and '
        'for at least anchors.hold_frames processed frames of the camera, then publish no '
        'metres until anchors return.', lo=0.0, hi=3600.0)
    hold_frames: int = _opt(
        3, 'The hold also covers this many processed frames after the last fit at the '
        "camera's usual pace, however slow: metres stop when the anchors stopped, not because "
        'the node serves the camera at a low rate. After a silence (no frame for longer than '
        'anchors.hold and 3 usual gaps) seconds only. 0: seconds only.', lo=0, hi=1000)
    extrinsic: str = _opt(
        '', "Anchors in a frame_id other than the image's (a lidar cloud, an unregistered depth "
        "image): 'x y z qx qy qz qw', the fixed pose of that frame in the camera optical frame "
        '(metres, unit quaternion). Empty: anchors in another frame are refused; a depth image '
        'in another frame also needs anchors/camera_info. With cameras, the pose of every camera '
        'not named in anchors.camera_extrinsics.')
    camera_extrinsics: Tuple[str, ...] = _opt(
        (), "With cameras: one anchors.extrinsic per camera, as 'CAMERA: x y z qx qy qz qw', "
        "e.g. ['front: 0.1 0 -0.2 0.5 -0.5 0.5 0.5', 'rear: -0.1 0 -0.2 -0.5 -0.5 0.5 -0.5'] "
        '(one lidar, one pose of it in each camera optical frame). Each entry overrides '
        'anchors.extrinsic for the anchors of its camera (one of cameras, named once); cameras '
        'not named use anchors.extrinsic. Empty without cameras.', items='camera poses')
    fit: str = _opt(
        'auto', "What the anchors fit: 'scale' (metres = model metres x scale: a metric "
        "checkpoint's error is a factor), 'affine' (scale and shift in inverse depth: what a "
        "relative checkpoint needs) or 'auto' (scale for metric checkpoints, else affine).",
        choices=ANCHOR_FITS)
    min_count: int = _opt(
        10, 'Fewest inlier anchors for a frame to count as fitted.', lo=3, hi=100000)
    min_inlier_fraction: float = _opt(
        0.5, 'Smallest fraction of the anchors the fit must explain (within '
        'anchors.inlier_threshold); a fit explaining fewer is refused.', lo=0.0, hi=1.0)
    min_gain: float = _opt(
        0.5, 'Affine fits: the share of the residual of the best constant depth (on the '
        "fit's inlier anchors) the fit must remove; a fit no better than one depth says "
        'nothing of the scene and is refused. 0 turns the test off.', lo=0.0, hi=1.0)
    min_spread: float = _opt(
        0.25, 'Affine fits: spread (10th to 90th percentile) of the model output at the inlier '
        "anchors as a fraction of the frame's; below it the anchors are degenerate (one narrow "
        'depth band): they only rescale the last good fit, within anchors.hold. 0 turns the '
        'test off.', lo=0.0, hi=1.0)
    max_points: int = _opt(
        2000, 'At most this many anchors per frame are fitted (a random subset of denser '
        'sources).', lo=10, hi=1000000)
    inlier_threshold: float = _opt(
        0.1, 'Relative depth error above which an anchor is an outlier of the fit; also the '
        "outlier bound of depth.confidence flip's alignment of the mirrored prediction, with or "
        'without anchors.', lo=0.001, hi=1.0)

    def for_camera(self, camera: str) -> 'AnchorsConfig':
        """Return these settings with extrinsic the pose anchors.camera_extrinsics gives camera."""
        return _anchors_for_camera(self, camera.strip('/'))


@dataclass(frozen=True)
class SegmentationConfig:
    """Segmentation viewing settings (live)."""

    overlay_alpha: float = _opt(
        0.5, 'Weight of class colours in segmentation/overlay (0 = image only).', lo=0.0, hi=1.0)


@dataclass(frozen=True)
class InputConfig:
    """Input topics, which image they carry, and their QoS (changing these needs a restart)."""

    transport: str = _opt(
        'raw', "'raw' subscribes to image (sensor_msgs/Image); 'compressed' to "
        'image/compressed (sensor_msgs/CompressedImage).', choices=TRANSPORTS, read_only=True)
    reliability: str = _opt(
        'auto', "Image subscription reliability: 'auto' matches the publisher, or 'reliable' / "
        "'best_effort'.", choices=INPUT_RELIABILITY, read_only=True)
    rectified: bool = _opt(
        True, 'true: image is rectified (image_rect, image_rect_color): intrinsics from '
        'camera_info P, no undistortion, as depth_image_proc. false: image is raw (image_raw): '
        'camera_info K and D, undistorted per pixel.', read_only=True)


@dataclass(frozen=True)
class OutputConfig:
    """Output QoS (changing these needs a restart) and how outputs are published."""

    reliability: str = _opt(
        'reliable', "Reliability of the output topics: 'reliable' or 'best_effort'.",
        choices=OUTPUT_RELIABILITY, read_only=True)
    history_depth: int = _opt(
        2, 'Keep-last depth of the output topics.', lo=1, hi=100, read_only=True)
    overlap: bool = _opt(
        True, "true: a frame's outputs are filled and published on their own thread while the "
        'next frame runs through the model (at most one frame in flight). false: the worker '
        'publishes before taking the next frame.')


@dataclass(frozen=True)
class BatchConfig:
    """One forward for frames of several cameras (with `cameras`; live)."""

    max_size: int = _opt(
        4, 'Most frames (one per camera) in one batched forward; 1 runs the cameras one at a '
        'time.', lo=1, hi=MAX_CAMERAS)
    max_wait_ms: float = _opt(
        5.0, 'How long a waiting frame may be held for frames of other cameras to join its '
        'batch, in milliseconds; 0 never holds one.', lo=0.0, hi=1000.0)


@dataclass(frozen=True)
class DiagnosticsConfig:
    """/diagnostics publishing."""

    period: float = _opt(1.0, 'Seconds between /diagnostics messages.', lo=0.1, hi=60.0,
                         read_only=True)


@dataclass(frozen=True)
class MemoryConfig:
    """How the process treats the memory frames free (read before the first frame)."""

    keep_freed: bool = _opt(
        True, 'true: memory a frame frees stays in the process for the next frame (glibc '
        'malloc: no mapping per buffer, no trimming), so frames do not fault their buffers in '
        'again; the process keeps its peak resident size. Process-wide, set before the first '
        "frame. false: glibc's defaults (each large buffer mapped and returned every frame).",
        read_only=True)


@dataclass(frozen=True)
class Config:
    """All dpt_ros settings; each group maps to a dotted ROS parameter prefix."""

    cameras: Tuple[str, ...] = _opt(
        (), 'Camera names, e.g. [front, rear]: camera C subscribes C/image (or '
        'C/image/compressed) and C/camera_info and publishes every output under C/, all '
        'through one model. Empty: one camera on image and camera_info, outputs at the top.',
        read_only=True)
    model: ModelConfig = field(default_factory=ModelConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    points: PointsConfig = field(default_factory=PointsConfig)
    normals: NormalsConfig = field(default_factory=NormalsConfig)
    anchors: AnchorsConfig = field(default_factory=AnchorsConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)

    def validate(self) -> 'Config':
        """Check every value and the relations between them; raise ConfigError or return self."""
        for name, value, meta, ftype in iter_settings(self):
            _check_value(name, value, meta, ftype)
        m = self.model
        if (m.input_height == 0) != (m.input_width == 0):
            raise ConfigError(
                'model.input_height and model.input_width must both be 0 (from the checkpoint) '
                f'or both set; got {m.input_height} x {m.input_width}.')
        if not m.depth and not m.segmentation:
            raise ConfigError(
                'model.depth and model.segmentation are both empty: set at least one checkpoint.')
        d = self.depth
        if d.max and d.min >= d.max:
            raise ConfigError(f'depth.min ({d.min}) must be smaller than depth.max ({d.max}).')
        if d.mode == 'affine_inverse' and d.scale == 0.0 and d.shift <= 0.0:
            raise ConfigError(
                'depth.mode affine_inverse needs depth.scale > 0 or depth.shift > 0 '
                '(metres = 1 / (scale * d + shift)).')
        _check_camera_extrinsics(self.anchors.camera_extrinsics, self.cameras)
        if d.mode == 'fitted' and self.anchors.source == 'none':
            raise ConfigError(
                "depth.mode fitted needs anchors: set anchors.source to 'depth_image' or "
                "'points'.")
        return self

    def replace(self, flat: Dict[str, Any]) -> 'Config':
        """Return a copy with dotted settings ({'depth.max': 10.0}) replaced, not validated."""
        groups: Dict[str, Dict[str, Any]] = {}
        top: Dict[str, Any] = {}
        for key, value in flat.items():
            group, _, name = key.partition('.')
            if not name and key in _field_names(self) and \
                    not dataclasses.is_dataclass(getattr(self, key)):
                top[key] = value
                continue
            sub = getattr(self, group, None)
            if sub is None or not dataclasses.is_dataclass(sub) or name not in _field_names(sub):
                raise ConfigError(f"unknown setting '{key}'.")
            groups.setdefault(group, {})[name] = value
        return dataclasses.replace(
            self, **top,
            **{g: dataclasses.replace(getattr(self, g), **kv) for g, kv in groups.items()})


def _field_names(obj: Any) -> Tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(obj))


def iter_settings(cfg: Optional[Config] = None) -> Iterator[Tuple[str, Any, dict, type]]:
    """Yield (dotted name, value, metadata, python type) for every setting, in table order."""
    cfg = cfg if cfg is not None else Config()
    for group in dataclasses.fields(cfg):
        sub = getattr(cfg, group.name)
        if not dataclasses.is_dataclass(sub):  # a top-level setting (cameras)
            yield group.name, sub, dict(group.metadata), _TYPES[group.type]
            continue
        for f in dataclasses.fields(sub):
            ftype = _TYPES[f.type if isinstance(f.type, str) else f.type.__name__]
            yield f'{group.name}.{f.name}', getattr(sub, f.name), dict(f.metadata), ftype


_EXAMPLE_RE = re.compile(r'e\.g\. (\[[^\]]*\](?: or \[[^\]]*\])?)')


def _list_example(name: str) -> str:
    """Return the example list a list setting's description gives (for its error message)."""
    for key, _, meta, _ in iter_settings(Config()):
        found = _EXAMPLE_RE.search(meta['description']) if key == name else None
        if found:
            return found.group(1)
    return '[front, rear]'


def coerce(name: str, value: Any, ftype: type) -> Any:
    """Convert a parameter value to the setting's type (int -> float only); else ConfigError."""
    if ftype is tuple:
        # An empty list in a params file reaches rclpy as 'not set' (None); a live value may
        # be of any type (a number, an array.array of them from rclpy).
        items = () if value is None else value
        if isinstance(items, (str, bytes)) or not isinstance(items, Iterable) or \
                not all(isinstance(v, str) for v in items):
            shown = list(items) if isinstance(items, Iterable) and \
                not isinstance(items, (str, bytes, list, tuple)) else value
            raise ConfigError(f'{name} must be a list of text items, e.g. '
                              f'{_list_example(name)}; got {shown!r}.')
        return tuple(items)
    if ftype is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if ftype is bool and not isinstance(value, bool):
        raise ConfigError(f'{name} must be true or false, got {value!r}.')
    if ftype is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f'{name} must be an integer, got {value!r}.')
    if not isinstance(value, ftype):
        raise ConfigError(f'{name} must be a {ftype.__name__}, got {value!r}.')
    return value


def _check_cameras(names: Tuple[str, ...]) -> None:
    bad = [n for n in names if not _CAMERA_RE.match(n)]
    if bad:
        raise ConfigError(
            f"cameras: {', '.join(repr(n) for n in bad)} is not a valid name: use letters, "
            "digits and '_', namespaces separated by '/' (e.g. front or robot/front_left).")
    dup = sorted({n.strip('/') for n in names if [m.strip('/') for m in names].count(
        n.strip('/')) > 1})
    if dup:
        raise ConfigError(f"cameras: {', '.join(dup)} given more than once.")
    if len(names) > MAX_CAMERAS:
        raise ConfigError(f'cameras: {len(names)} names; at most {MAX_CAMERAS}.')


def _check_one(name: str, value: Any, meta: dict, ftype: type) -> None:
    coerce(name, value, ftype)
    if meta.get('choices') and value not in meta['choices']:
        raise ConfigError(
            f"{name} '{value}' is not valid: choose one of {', '.join(meta['choices'])}.")
    rng = meta.get('range')
    if rng is not None:
        lo, hi = rng
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f'{name} must be a finite number, got {value}.')
        if not lo <= value <= hi:
            raise ConfigError(f'{name} = {value} is out of range [{lo}, {hi}].')


def _check_device(device: str) -> None:
    if not _DEVICE_RE.match(device):
        raise ConfigError(
            f"model.device '{device}' is not valid: use 'auto', 'cpu', 'cuda' or 'cuda:N'.")


def _check_value(name: str, value: Any, meta: dict, ftype: type) -> None:
    """Check one setting's own value: type, choices, range and, for text settings, format."""
    _check_one(name, value, meta, ftype)
    fmt = _FORMATS.get(name)
    if fmt is not None:
        fmt(value)


def check_settings(flat: Dict[str, Any]) -> Dict[str, Any]:
    """Check each given setting's own value, not how it relates to the others; return them typed.

    For a managed node while unconfigured: configure validates the whole config, and a value
    set before it must not be refused because another setting is still bad.
    """
    settings = {name: (meta, ftype) for name, _, meta, ftype in iter_settings()}
    typed = {}
    for key, value in flat.items():
        if key not in settings:
            raise ConfigError(f"unknown setting '{key}'.")
        meta, ftype = settings[key]
        typed[key] = coerce(key, value, ftype)
        _check_value(key, typed[key], meta, ftype)
    return typed


def config_from_flat(flat: Dict[str, Any], base: Optional[Config] = None) -> Config:
    """Build and validate a Config from dotted settings, coercing ints to floats."""
    base = base if base is not None else Config()
    types = {name: ftype for name, _, _, ftype in iter_settings(base)}
    typed = {}
    for key, value in flat.items():
        if key not in types:
            raise ConfigError(f"unknown setting '{key}'.")
        typed[key] = coerce(key, value, types[key])
    return base.replace(typed).validate()


_SIZE_RE = re.compile(r'^\s*(\d+)\s*[xX]\s*(\d+)\s*$')
MAX_WARMUP_SIZES = 16


def parse_sizes(sizes: Tuple[str, ...]) -> Tuple[Tuple[int, int], ...]:
    """model.warmup_sizes ['640x480', ...] -> ((width, height), ...) in order, duplicates once."""
    out = []
    for text in sizes:
        match = _SIZE_RE.match(text)
        wh = tuple(int(v) for v in match.groups()) if match else ()
        if not wh or not all(1 <= v <= 16384 for v in wh):
            raise ConfigError(
                f"model.warmup_sizes: '{text}' is not a frame size: give 'WIDTHxHEIGHT' in "
                "pixels (1 to 16384 each), e.g. ['640x480', '1280x720'].")
        if wh not in out:
            out.append(wh)
    if len(out) > MAX_WARMUP_SIZES:
        raise ConfigError(f'model.warmup_sizes: {len(out)} sizes; at most {MAX_WARMUP_SIZES}.')
    return tuple(out)


def parse_extrinsic(text: str, entry: str = '') -> Optional[Tuple[float, ...]]:
    """anchors.extrinsic 'x y z qx qy qz qw' -> 7 floats (quaternion normalised); None if empty.

    entry: how an error names the pose, for one of anchors.camera_extrinsics.
    """
    if not text.strip():
        return None
    try:
        vals = [float(v) for v in text.replace(',', ' ').split()]
    except ValueError:
        vals = []
    if len(vals) != 7 or not all(math.isfinite(v) for v in vals):
        raise ConfigError(f"{entry or 'anchors.extrinsic'}: the pose '{text.strip()}' must be 7 "
                          "numbers 'x y z qx qy qz qw'." if entry else
                          f"anchors.extrinsic '{text}' must be 7 numbers 'x y z qx qy qz qw'.")
    norm = math.sqrt(sum(v * v for v in vals[3:]))
    if abs(norm - 1.0) > 1e-3:
        raise ConfigError(f"{entry + ':' if entry else 'anchors.extrinsic'} quaternion has norm "
                          f'{norm:.4f}; give a unit quaternion (qx qy qz qw).')
    return tuple(vals[:3] + [v / norm for v in vals[3:]])


_CAMERA_POSE_EXAMPLE = "'front: 0.1 0 -0.2 0.5 -0.5 0.5 0.5'"


def parse_camera_extrinsics(entries: Tuple[str, ...]) -> Dict[str, str]:
    """anchors.camera_extrinsics ['CAMERA: x y z qx qy qz qw', ...] -> {camera: pose text}.

    Camera names lose a leading '/' (as cameras are matched); each pose is checked as
    anchors.extrinsic is. ConfigError naming the entry when one is malformed or a camera
    comes twice.
    """
    out: Dict[str, str] = {}
    for entry in entries:
        camera, colon, pose = entry.partition(':')
        camera = camera.strip()
        where = f"anchors.camera_extrinsics entry '{entry}'"
        if not colon or not _CAMERA_RE.match(camera) or not pose.strip():
            raise ConfigError(f"{where} is not 'CAMERA: x y z qx qy qz qw' (a camera of "
                              f'cameras, a colon, its pose), e.g. {_CAMERA_POSE_EXAMPLE}.')
        parse_extrinsic(pose, where)
        key = camera.strip('/')
        if key in out:
            raise ConfigError(f"{where}: camera '{key}' is given more than once; give one pose "
                              'per camera.')
        out[key] = pose.strip()
    return out


@functools.lru_cache(maxsize=64)
def _anchors_for_camera(anchors: AnchorsConfig, camera: str) -> AnchorsConfig:
    """AnchorsConfig.for_camera, once per settings and camera rather than once per frame."""
    pose = parse_camera_extrinsics(anchors.camera_extrinsics).get(camera)
    return anchors if pose is None else dataclasses.replace(anchors, extrinsic=pose)


def _check_camera_extrinsics(entries: Tuple[str, ...], cameras: Tuple[str, ...]) -> None:
    """Every anchors.camera_extrinsics entry names one of cameras (none without cameras)."""
    poses = parse_camera_extrinsics(entries)
    if poses and not cameras:
        raise ConfigError(
            f"anchors.camera_extrinsics is {list(entries)} but cameras is empty: one camera "
            'takes anchors.extrinsic. Set cameras, or move the pose to anchors.extrinsic.')
    names = {c.strip('/') for c in cameras}
    for entry in entries:
        camera = entry.partition(':')[0].strip().strip('/')
        if camera not in names:
            raise ConfigError(
                f"anchors.camera_extrinsics entry '{entry}': '{camera}' is not one of cameras "
                f"[{', '.join(cameras)}].")


# Settings whose text has a format of its own, checked with the setting's value.
_FORMATS: Dict[str, Callable[[Any], Any]] = {
    'model.device': _check_device, 'model.warmup_sizes': parse_sizes,
    'anchors.extrinsic': parse_extrinsic, 'anchors.camera_extrinsics': parse_camera_extrinsics,
    'cameras': _check_cameras,
}
