# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""One bag in, one bag out: the frames through the Pipeline, the outputs under the source stamps.

Reads and writes rosbag2 bags (sqlite3 or mcap) with `rosbags`, no ROS install needed. The
frames of one or more cameras go down the live (multi-camera) node's road (dpt_ros.core.frames:
calibration, anchor pairing, batched forwards, CDR), so the output bag holds the bytes the
node would have published, each camera under its namespace, under the source headers.

`process_bag` is a pure function of (input bag, BagOptions, the pipeline's config and
checkpoint): the same inputs give the same output bytes, on one machine or on a Ray worker.
The many-bag runner (bag_runs.py) and the command line (bag_cli.py) sit on top of it.
"""

from __future__ import annotations

from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
import functools
from itertools import groupby
from pathlib import Path
import time
from types import SimpleNamespace
from typing import (AbstractSet, Any, Callable, Deque, Dict, FrozenSet, Iterable, Iterator, List,
                    NamedTuple, Optional, Sequence, Set, Tuple)

from dpt_ros.core import conversions as conv
from dpt_ros.core import frames
from dpt_ros.core import inputs
from dpt_ros.core import outputs
from dpt_ros.core.anchors import AnchorError, AnchorInput
from dpt_ros.core.config import AnchorsConfig, Config
from dpt_ros.core.conversions import FrameError
from dpt_ros.core.frames import Calibration, FrameIn
from dpt_ros.core.geometry import IntrinsicsError
from dpt_ros.core.outputs import Output, STAGES
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.core.reports import kind_of, percentile

IMAGE, COMPRESSED = conv.IMAGE_TYPE, conv.COMPRESSED_TYPE
CAMERA_INFO, CLOUD = conv.INFO_TYPE, conv.CLOUD_TYPE
BAG_SUFFIXES = ('.mcap', '.db3')
# rosbag2 metadata versions rosbags can write. Humble reads offered_qos_profiles as a YAML
# string with integer enums (version <= 8) and fails on version 9's list; Jazzy and Kilted read
# both. Humble ignores the fields newer versions add, so 8 is the widest.
BAG_VERSIONS = (8, 9)
STORAGES = ('sqlite3', 'mcap')


class BagError(RuntimeError):
    """The bag or the options cannot be used; the message says what to do."""


# vision_msgs (ROS 2 releases 4.x, Humble to Kilted), which rosbags' type stores lack: the
# class map written beside a camera's segmentation, as the node publishes it.
VISION_MSGS = {
    'vision_msgs/msg/VisionClass': 'uint16 class_id\nstring class_name\n',
    outputs.LABEL_INFO_TYPE: 'std_msgs/Header header\nVisionClass[] class_map\n'
                             'float32 threshold\n',
}


@functools.lru_cache(maxsize=None)
def rosbags() -> SimpleNamespace:
    """Return the rosbags names dpt_bag uses (imported on first use: optional)."""
    try:
        from rosbags import interfaces
        from rosbags.rosbag2 import Reader, StoragePlugin, Writer
        from rosbags.typesys import get_types_from_msg, get_typestore, Stores
    except ImportError as exc:
        raise BagError('dpt_bag needs the rosbags package: pip install rosbags') from exc
    store = get_typestore(getattr(Stores, 'ROS2_JAZZY', None) or Stores.ROS2_HUMBLE)
    types: Dict[str, Any] = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return SimpleNamespace(Reader=Reader, Writer=Writer, StoragePlugin=StoragePlugin,
                           store=store, qos=interfaces)


def compatibility_note(storage: str, version: int) -> str:
    """One line on which ROS 2 distributions can play a bag written with these settings."""
    if version >= 9:
        return (f'metadata version {version}: Humble cannot read it (ros2 bag info/play fail); '
                'write --bag-version 8 for Humble')
    if storage == 'mcap':
        return ('mcap: Jazzy and Kilted play it; Humble needs the mcap plugin '
                '(sudo apt install ros-humble-rosbag2-storage-mcap)')
    return 'sqlite3, metadata version 8: plays on Humble, Jazzy and Kilted as installed'


@dataclass(frozen=True)
class BagOptions:
    """What to read from the input bag and how to write the output bag.

    The per-camera topic options hold one value per camera, in camera order, or none (each
    is then auto-detected). The cameras are the node's `cameras` (named, like the node), else
    one per image topic, else the bag's only image topic.
    """

    image_topics: Tuple[str, ...] = ()       # with `cameras`: remaps of their C/image topics
    camera_info_topics: Tuple[str, ...] = ()  # auto: the nearest CameraInfo to each image
    anchors_topics: Tuple[str, ...] = ()     # anchors.source's topics; auto for one camera
    anchors_info_topics: Tuple[str, ...] = ()  # CameraInfo of anchor depth images, another size
    namespace: Optional[str] = None          # the node's; default: the image topic's (one camera)
    storage: str = 'sqlite3'
    version: int = 8
    copy_inputs: bool = False
    batch: int = 4
    start: float = 0.0                       # seconds from the bag start
    end: Optional[float] = None              # seconds from the bag start (exclusive)
    every: int = 1                           # of each camera's frames
    points: bool = True
    viewers: bool = True
    # CPU threads per bag. On the CPU, oneDNN's convolutions give results that differ in the
    # last bits with the thread count, so it is part of what makes the output bytes.
    threads: int = 1

    def per_camera(self) -> Dict[str, Tuple[str, ...]]:
        """Return the per-camera topic options by command-line flag."""
        return {'--image-topic': self.image_topics, '--camera-info-topic': self.camera_info_topics,
                '--anchors-topic': self.anchors_topics,
                '--anchors-info-topic': self.anchors_info_topics}

    def validate(self, cameras: Sequence[str] = ()) -> 'BagOptions':
        """Return self, or raise BagError naming the bad option.

        cameras: the node's `cameras` (params file or --cameras) the bag is read with.
        """
        if self.storage not in STORAGES:
            raise BagError(f"storage '{self.storage}' is not one of {', '.join(STORAGES)}")
        if self.version not in BAG_VERSIONS:
            raise BagError(f'bag version {self.version} is not one of '
                           f"{', '.join(map(str, BAG_VERSIONS))}")
        if self.batch < 1 or self.every < 1 or self.threads < 1:
            raise BagError('--batch, --every and --threads must be >= 1')
        if self.start < 0 or (self.end is not None and self.end <= self.start):
            raise BagError('need 0 <= --start < --end')
        n = len(cameras) or len(self.image_topics) or 1
        what = f"{n} cameras ({', '.join(cameras)})" if cameras else \
            f'{n} --image-topic values' if n > 1 else 'one camera'
        for flag, values in self.per_camera().items():
            if values and len(values) != n:
                raise BagError(f'{flag} is given {len(values)} times for {what}: give it once '
                               'per camera, in the same order, or not at all (auto-detected)')
        dup = sorted({t for t in self.image_topics if self.image_topics.count(t) > 1})
        if dup:
            raise BagError(f"--image-topic {', '.join(dup)} given more than once")
        if self.namespace is not None and n > 1 and not cameras:
            raise BagError("--namespace with several --image-topic values: name the cameras "
                           "(--cameras or the params file) to say where each one's outputs go")
        return self


@dataclass
class CameraReport:
    """What one camera of a bag produced; plain data."""

    name: str
    image_topic: str
    namespace: str
    camera_info_topic: Optional[str] = None
    anchors_topic: Optional[str] = None
    frames: int = 0
    no_camera_info: int = 0                  # frames with no camera_info at or before them
    frames_with_anchors: int = 0             # frames paired with a usable anchor message


@dataclass
class BagReport:
    """What one bag produced; plain data (it travels back from Ray workers)."""

    cameras: List[CameraReport] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    topics: Dict[str, int] = field(default_factory=dict)
    skipped: Dict[str, int] = field(default_factory=dict)
    first_skipped: Dict[str, str] = field(default_factory=dict)  # kind -> what the first was
    # Warnings the pipeline gave processed frames (no message skipped): the first text of
    # each kind -> how many frames got one of that kind.
    warnings: Dict[str, int] = field(default_factory=dict)
    warning_kinds: Dict[str, str] = field(default_factory=dict)  # kind_of -> its key above
    stages_p50_ms: Dict[str, float] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def warn_once(self, kind: str, text: str) -> None:
        """Count a skipped message by kind; note the first of each kind."""
        self.skipped[kind] = self.skipped.get(kind, 0) + 1
        if kind not in self.first_skipped:
            self.first_skipped[kind] = text
            self.notes.append(f'warning: {text} (skipped; further ones are counted)')

    def frame_warning(self, text: str) -> None:
        """Count a warning given with a processed frame; note the first of each kind."""
        # A kind is the text's start with its numbers taken out (reports.kind_of, as the node
        # throttles its warnings): the figures change from frame to frame.
        kind = kind_of(text, 60)
        key = self.warning_kinds.get(kind)
        if key is None:
            key = self.warning_kinds[kind] = text
            self.notes.append(f'warning: {text} (further ones are counted)')
        self.warnings[key] = self.warnings.get(key, 0) + 1

    @property
    def no_camera_info(self) -> int:
        """Frames of all cameras with no camera_info at or before them."""
        return sum(c.no_camera_info for c in self.cameras)

    @property
    def fps(self) -> float:
        """Frames per second over the whole bag."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------------------- reading


def is_bag(path: Path) -> bool:
    """Return whether a path looks like one bag: a rosbag2 folder or a .mcap / .db3 file."""
    return (path.is_dir() and (path / 'metadata.yaml').is_file()) or \
        (path.is_file() and path.suffix in BAG_SUFFIXES)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f'{type(exc).__name__}: {text[0][:200]}' if text else type(exc).__name__


@contextmanager
def open_bag(src: Path) -> Iterator[Any]:
    """Open a bag for reading; anything that is not a readable bag raises one clear BagError."""
    if not src.exists():
        raise BagError(f"input '{src}' does not exist")
    if not is_bag(src):
        raise BagError(f"'{src}' is not a bag: expected a rosbag2 folder (with metadata.yaml) "
                       'or a .mcap / .db3 file')
    reader = rosbags().Reader(src)
    try:
        reader.open()
    except Exception as exc:  # noqa: B902 - garbage raises whatever the parser meets first
        raise BagError(f"'{src}' is not a readable bag, truncated or corrupt? "
                       f'({_reason(exc)})') from exc
    try:
        yield reader
    finally:
        reader.close()


def _messages(reader: Any, connections: Sequence[Any], src: Path,
              start: Optional[int] = None, stop: Optional[int] = None) -> Iterator[Tuple]:
    """reader.messages, with a read failure (truncated, corrupt file) turned into a BagError."""
    it = reader.messages(connections, start=start, stop=stop)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception as exc:  # noqa: B902 - a truncated file raises many types
            raise BagError(f"'{src}' cannot be read to the end, truncated or corrupt? "
                           f'({_reason(exc)})') from exc
        yield item


def output_namespace(image_topic: str) -> str:
    """Return the node namespace for an image topic (/cam/color/image_raw -> /cam/color)."""
    base = image_topic[:-len('/compressed')] if image_topic.endswith('/compressed') \
        else image_topic
    return base.rsplit('/', 1)[0] if '/' in base.strip('/') else ''


def _absolute(ns: str) -> str:
    """'/a/b' for 'a/b', '/a/b/' or '/a/b'; '' for the root namespace."""
    return ('/' + ns.strip('/')) if ns.strip('/') else ''


def _listing(topics: Dict[str, Any]) -> str:
    return '\n  '.join(f'{t} ({_types(i)}, {i.msgcount} msgs)' for t, i in sorted(
        topics.items())) or '(none)'


def _types(info: Any) -> str:
    return info.msgtype or ' and '.join(sorted({c.msgtype for c in info.connections}))


def bag_topics(reader: Any) -> Dict[str, Any]:
    """Return reader.topics, a topic recorded with several types read as the one dpt_bag reads.

    A topic that publishers of two types shared is recorded as one topic of two connections,
    and rosbags gives it no type. When exactly one of its types is one dpt_bag reads (an
    image, a CameraInfo, a cloud), the topic is that type's connections; the others are left
    out, and a BagPlan reads only the connections of its topics' types.
    """
    topics = {}
    for topic, info in reader.topics.items():
        if info.msgtype is None:
            read = {c.msgtype for c in info.connections} & {IMAGE, COMPRESSED, CAMERA_INFO, CLOUD}
            if len(read) == 1:
                conns = [c for c in info.connections if c.msgtype in read]
                info = info._replace(msgtype=read.pop(), connections=conns,
                                     msgcount=sum(c.msgcount for c in conns))
        topics[topic] = info
    return topics


def _pick(topics: Dict[str, Any], wanted: Optional[str], types: Sequence[str], what: str,
          near: str = '') -> Optional[str]:
    if wanted:
        if wanted not in topics:
            raise BagError(f"topic '{wanted}' is not in the bag; it has:\n  {_listing(topics)}")
        if topics[wanted].msgtype not in types:
            raise BagError(f"topic '{wanted}' is {topics[wanted].msgtype}, not "
                           f"{' or '.join(types)}")
        return wanted
    found = [t for t, i in topics.items() if i.msgtype in types]
    if len(found) > 1 and near:
        close = [t for t in found if output_namespace(t) == output_namespace(near)]
        found = close if len(close) == 1 else found
    if len(found) == 1:
        return found[0]
    if not found:
        if what == 'camera_info':
            return None
        raise BagError(f'the bag has no {what} topic ({" or ".join(types)}); it has:\n  '
                       f'{_listing(topics)}')
    several = ', or give --image-topic once per camera to process several' \
        if what == 'image' else ''
    raise BagError(f"the bag has {len(found)} {what} topics ({', '.join(sorted(found))}); "
                   f'choose one with --{what.replace("_", "-")}-topic{several}')


@dataclass(frozen=True)
class CameraPlan:
    """One camera of a bag: its topics, and where its outputs go."""

    name: str                                # the node's camera name: its depth.temporal source
    image_topic: str
    image_type: str
    info_topic: Optional[str]
    namespace: str                           # outputs go to NAMESPACE/depth/image, ...
    anchors_topic: Optional[str] = None
    anchors_info_topic: Optional[str] = None

    @property
    def paired_topics(self) -> Dict[str, str]:
        """Topics read beside the images, by role; each frame gets the latest of each."""
        roles = {inputs.CAMERA_INFO: self.info_topic, inputs.ANCHORS: self.anchors_topic,
                 inputs.ANCHORS_INFO: self.anchors_info_topic}
        return {role: topic for role, topic in roles.items() if topic}

    @property
    def label(self) -> str:
        """How notes name this camera."""
        return f"camera '{self.name}' ({self.image_topic})" if self.name else self.image_topic


@dataclass(frozen=True)
class BagPlan:
    """The cameras and the time window one bag is read with."""

    cameras: Tuple[CameraPlan, ...]
    start_ns: Optional[int]
    stop_ns: Optional[int]
    expected_frames: int
    msgtypes: Dict[str, str] = field(default_factory=dict)  # topic -> the type read from it

    def reads(self, conn: Any, topics: AbstractSet[str]) -> bool:
        """Whether a connection is one of these topics, of the type read from it."""
        return conn.topic in topics and self.msgtypes.get(conn.topic, conn.msgtype) == \
            conn.msgtype

    @property
    def paired_topics(self) -> AbstractSet[str]:
        """Every topic read beside the images, of any camera."""
        return {t for c in self.cameras for t in c.paired_topics.values()}


def _pick_info(topics: Dict[str, Any], wanted: Optional[str], img: str,
               several: bool) -> Optional[str]:
    """Return the camera_info of an image topic: given, else the one in its namespace.

    With one camera, the bag's only CameraInfo is taken whatever its name (as recorded); with
    several, only the one beside each image, so no camera gets another one's calibration.
    """
    if wanted or not several:
        return _pick(topics, wanted, (CAMERA_INFO,), 'camera_info', near=img)
    beside = sorted(t for t, i in topics.items() if i.msgtype == CAMERA_INFO
                    and output_namespace(t) == output_namespace(img))
    if len(beside) > 1:
        raise BagError(f"image topic '{img}' has {len(beside)} CameraInfo topics beside it "
                       f"({', '.join(beside)}); give --camera-info-topic once per camera")
    return beside[0] if beside else None


def _pick_anchors(topics: Dict[str, Any], wanted: Optional[str], wanted_info: Optional[str],
                  cfg: Config, images: Sequence[str], info: Optional[str],
                  ns: str) -> Tuple[Optional[str], Optional[str]]:
    """Pick a camera's anchors topic of anchors.source and, for depth images, its camera_info.

    With several cameras, camera NS reads NS/anchors/depth (or NS/anchors/points, or
    NS/anchors/depth/compressedDepth) as the node does, unless --anchors-topic names them.
    """
    source = cfg.anchors.source
    if source == 'none':
        return None, None
    row, = inputs.of_role(inputs.ANCHORS, cfg)
    if not wanted and len(images) > 1:
        wanted = f'{ns}/{row.topic}'
        if wanted not in topics:
            raise BagError(f'anchors.source is {source} and the bag has no {wanted} (the '
                           f"node's topic for camera {ns}): give --anchors-topic once per "
                           'camera, in camera order')
    others = {t: i for t, i in topics.items() if t not in images}
    anchors = _pick(others, wanted, (row.msg_type,), 'anchors')
    if source != 'depth_image':
        return anchors, None
    if wanted_info:
        return anchors, _pick(topics, wanted_info, (CAMERA_INFO,), 'camera_info')
    # Auto: a CameraInfo beside the anchors (not the image's), if there is exactly one.
    near = [t for t, i in topics.items() if i.msgtype == CAMERA_INFO and t != info
            and output_namespace(t) == output_namespace(anchors)]
    return anchors, near[0] if len(near) == 1 else None


def _camera_image(topics: Dict[str, Any], base: str, name: str, transport: str) -> str:
    """Return camera `name`'s image topic under `base`.

    BASE/image, BASE/image/compressed, else the one image topic in namespace BASE (image_raw,
    image_rect_color, ...).
    """
    rows = inputs.of_role(inputs.IMAGE)
    kinds = tuple(r.msg_type for r in rows)
    found = [t for t in (f'{base}/{r.topic}' for r in rows)
             if t in topics and topics[t].msgtype in kinds]
    found = found or sorted(t for t, i in topics.items()
                            if i.msgtype in kinds and output_namespace(t) == base)
    if len(found) > 1:  # raw and compressed of one stream: input.transport says which
        kind = next(r.msg_type for r in rows if r.value == transport)
        found = [t for t in found if topics[t].msgtype == kind] or found
    if len(found) == 1:
        return found[0]
    if found:
        raise BagError(f"camera '{name}': {len(found)} image topics in {base} "
                       f"({', '.join(found)}); give --image-topic once per camera")
    raise BagError(f"camera '{name}': no image topic {base}/image (or {base}/image/compressed, "
                   f'or another image topic in {base}) in the bag; give --image-topic once per '
                   f'camera to name its topics. The bag has:\n  {_listing(topics)}')


def _cameras(topics: Dict[str, Any], opts: BagOptions,
             cfg: Config) -> List[Tuple[str, str, str]]:
    """(name, image topic, output namespace) of each camera, as the node would name them."""
    # A compressedDepth topic is a depth camera's (anchors), never a colour image.
    candidates = {t: i for t, i in topics.items() if t not in opts.anchors_topics
                  and not t.endswith('/' + conv.COMPRESSED_DEPTH)}
    kinds = (IMAGE, COMPRESSED)
    given = list(opts.image_topics)
    if cfg.cameras:
        # Camera C of a node in namespace NS: NS/C/image (remapped by --image-topic), and
        # every output under NS/C, as the node publishes them.
        ns = _absolute(opts.namespace or '')
        out = []
        for k, name in enumerate(cfg.cameras):
            base = _absolute(name if name.startswith('/') else f'{ns}/{name}')
            img = _pick(candidates, given[k], kinds, 'image') if given else \
                _camera_image(candidates, base, name, cfg.input.transport)
            out.append((name, img, base))
        return out
    if len(given) > 1:
        # As a node with cameras named after the image topics' namespaces.
        images = [_pick(candidates, t, kinds, 'image') for t in given]
        return [(_absolute(output_namespace(t)).lstrip('/'), t,
                 _absolute(output_namespace(t))) for t in images]
    img = _pick(candidates, given[0] if given else None, kinds, 'image')
    ns = opts.namespace if opts.namespace is not None else output_namespace(img)
    return [('', img, _absolute(ns))]


def _expected_frames(reader: Any, opts: BagOptions, cameras: Sequence[CameraPlan]) -> int:
    """Frames the window gives, from the bag's index (an estimate with --start / --end)."""
    expected = 0
    for cam in cameras:
        total = bag_topics(reader)[cam.image_topic].msgcount
        if opts.start or opts.end is not None:  # for the progress bar only
            span = max(reader.end_time - reader.start_time, 1)
            lo = opts.start * 1e9
            hi = min(opts.end * 1e9 if opts.end is not None else span, span)
            total = min(total, int(total * max(hi - lo, 0) / span) + 1)
        expected += (total + opts.every - 1) // opts.every
    return expected


def _empty_window(reader: Any, opts: BagOptions, cameras: Sequence[CameraPlan]) -> str:
    """Say that the --start / --end window holds no frame, and what the bag spans."""
    end = f' --end {opts.end:g} s' if opts.end is not None else ''
    window = f'--start {opts.start:g} s{end}'
    topics = ', '.join(c.image_topic for c in cameras)
    return (f'no frames of {topics} in the window {window} (seconds from the bag start): '
            f'the bag spans {(reader.end_time - reader.start_time) / 1e9:.3f} s')


def plan_bag(reader: Any, opts: BagOptions, src: Path, cfg: Optional[Config] = None) -> BagPlan:
    """Choose the cameras, their topics and the window for one open bag (BagError if unusable).

    cfg gives the node's `cameras`, input.transport and anchors.source (whose topics are read
    beside the images); default: one camera, no anchors.
    """
    cfg = cfg if cfg is not None else Config()
    opts.validate(cfg.cameras)
    topics = bag_topics(reader)
    if reader.message_count == 0:
        raise BagError(f"the bag '{src}' is empty (no messages)")
    found = _cameras(topics, opts, cfg)
    images = [img for _, img, _ in found]
    by_ns: Dict[str, str] = {}
    for _, img, ns in found:
        if ns in by_ns:
            raise BagError(f"image topics {by_ns[ns]} and {img} would both write their outputs "
                           f"under {ns or '/'}: name the cameras (--cameras) to tell them apart")
        by_ns[ns] = img
    cameras = []
    for k, (name, img, ns) in enumerate(found):
        if topics[img].msgcount == 0:
            raise BagError(f"topic '{img}' has no messages")
        info_topic, anchors_topic, anchors_info_topic = (
            values[k] if values else None for values in (
                opts.camera_info_topics, opts.anchors_topics, opts.anchors_info_topics))
        info = _pick_info(topics, info_topic, img, len(found) > 1)
        anchors, anchors_info = _pick_anchors(topics, anchors_topic, anchors_info_topic,
                                              cfg, images, info, ns)
        cameras.append(CameraPlan(name, img, topics[img].msgtype, info, ns, anchors,
                                  anchors_info))
    t0 = reader.start_time
    if t0 + int(opts.start * 1e9) >= reader.end_time:  # end_time: just after the last message
        raise BagError(_empty_window(reader, opts, cameras))
    read = {c.image_topic for c in cameras} | {t for c in cameras
                                               for t in c.paired_topics.values()}
    return BagPlan(tuple(cameras), t0 + int(opts.start * 1e9) if opts.start else None,
                   t0 + int(opts.end * 1e9) if opts.end is not None else None,
                   _expected_frames(reader, opts, cameras),
                   {t: topics[t].msgtype for t in read})


class InBag(NamedTuple):
    """Where a frame of the bag comes from (FrameIn.origin)."""

    camera: int                               # index into BagPlan.cameras
    logtime: int


class _Paired:
    """One camera's paired topics: its calibration (the newest camera_info), its anchors."""

    def __init__(self, plan: CameraPlan, store: Any, report: BagReport, cam: CameraReport,
                 rectified: bool, anchors: Optional[AnchorInput] = None) -> None:
        self.roles = {topic: role for role, topic in plan.paired_topics.items()}
        self.store, self.report, self.cam, self.rectified = store, report, cam, rectified
        self.anchors = anchors
        self.anchor_stamp = -1  # newest anchor message stamp seen
        self.calibration = Calibration()
        self.images = 0  # image messages of this camera seen in the window (for --every)

    def update(self, conn: Any, logtime: int, raw: bytes) -> None:
        """Take a paired message: the newest camera_info, or an anchor message (or skip it)."""
        role = self.roles[conn.topic]
        try:
            msg = self.store.deserialize_cdr(raw, conn.msgtype)
        except Exception as exc:  # noqa: B902 - corrupt bytes raise many types
            self.report.warn_once(role, f'unreadable {role} on {conn.topic} at {logtime}: {exc}')
            return
        if role == inputs.ANCHORS and self.anchors is not None:
            self.anchors.add(msg)
            self.anchor_stamp = max(self.anchor_stamp, conv.stamp_ns(msg.header))
            return
        if role == inputs.ANCHORS_INFO and self.anchors is not None:
            self.anchors.set_info(msg)
        if role == inputs.CAMERA_INFO:
            self.calibration.update(msg)

    def calibrate(self, f: FrameIn) -> None:
        """Give a frame the intrinsics of the newest camera_info if it fits (else counted)."""
        try:
            f.calibrate(self.calibration, self.rectified)
        except IntrinsicsError as exc:
            self.report.warn_once('intrinsics', f'camera_info on {self.cam.camera_info_topic} '
                                  f'unusable: {exc}')

    def settled(self, f: FrameIn, now: int, cfg: Optional[AnchorsConfig]) -> bool:
        """Whether no anchor message nearer to f can come any more (log time now)."""
        if self.anchors is None:
            return True
        return self.anchor_stamp >= f.stamp_ns or \
            now - f.origin.logtime > cfg.max_age * 1e9 + 1e9

    def pair_anchors(self, f: FrameIn, cfg: AnchorsConfig) -> None:
        """Give a frame the anchors nearest in stamp (a bad message is counted, not fatal)."""
        try:
            f.pair(self.anchors, cfg)
        except AnchorError as exc:
            self.report.warn_once('anchors', f'bad anchor message on {self.cam.anchors_topic} '
                                  f'for the frame at {f.origin.logtime}: {exc}')
        if f.anchors is not None:
            self.cam.frames_with_anchors += 1


def _seed_paired(reader: Any, plan: BagPlan, users: Dict[str, List[_Paired]], src: Path,
                 copy: Callable[[Any, int, bytes], None]) -> None:
    """Before a --start window: the newest paired message from anywhere earlier in the bag.

    A camera_info is often recorded once, latched, long before the window starts.
    """
    if plan.start_ns is None or not plan.paired_topics:
        return
    last: Dict[str, Tuple[Any, int, bytes]] = {}
    conns = [c for c in reader.connections if plan.reads(c, users.keys())]
    for conn, logtime, raw in _messages(reader, conns, src, stop=plan.start_ns):
        last[conn.topic] = (conn, logtime, raw)
    for conn, logtime, raw in last.values():
        for paired in users[conn.topic]:
            paired.update(conn, logtime, raw)
        copy(conn, logtime, raw)


def _decode(store: Any, conn: Any, raw: bytes, logtime: int, report: BagReport,
            pipe: Optional[Pipeline], **fields: Any) -> Optional[FrameIn]:
    """Image or CompressedImage bytes -> FrameIn; None (counted) if unusable or unfit for pipe."""
    try:
        msg = store.deserialize_cdr(raw, conn.msgtype)
        return FrameIn.decode(msg, conn.msgtype == COMPRESSED, pipe, **fields)
    except FrameError as exc:
        report.warn_once('frame', f'bad frame on {conn.topic} at {logtime}: {exc}')
        return None
    except Exception as exc:  # noqa: B902 - corrupt CDR raises many types
        report.warn_once('cdr', f'undecodable {conn.msgtype} on {conn.topic} at {logtime}: '
                         f'{exc}')
        return None


def read_frames(reader: Any, plan: BagPlan, opts: BagOptions, src: Path, store: Any,
                report: BagReport, copy: Callable[[Any, int, bytes], None],
                rectified: bool, anchors: Optional[AnchorsConfig] = None,
                wants: Optional[Sequence[FrozenSet[str]]] = None,
                pipe: Optional[Pipeline] = None) -> Iterator[FrameIn]:
    """Yield the window's frames of every camera in log-time order, with their paired messages.

    Each camera's every N-th frame, with its camera's paired messages at or before it, and
    the outputs its camera writes (wants, one set per camera; default all).

    report.cameras holds one CameraReport per plan camera (their counters are filled here).
    rectified: the images are rectified (intrinsics from camera_info P, else K and D).
    anchors: with a camera's anchors topic, each of its frames gets the anchor message nearest
    in stamp; a frame waits until a later-stamped anchor message (or a second of log time past
    anchors.max_age) shows that no nearer one can come. pipe: frames its models cannot take
    (too small) are skipped and counted, like undecodable ones.
    """
    cams = [_Paired(c, store, report, r, rectified,
                    AnchorInput(anchors.source) if c.anchors_topic and anchors else None)
            for c, r in zip(plan.cameras, report.cameras)]
    image_of = {c.image_topic: k for k, c in enumerate(plan.cameras)}
    users: Dict[str, List[_Paired]] = {}
    for paired in cams:
        for topic in paired.roles:
            users.setdefault(topic, []).append(paired)
    _seed_paired(reader, plan, users, src, copy)
    pending: Deque[FrameIn] = deque()

    def release(now: Optional[int]) -> Iterator[FrameIn]:
        # In log-time order over all cameras: the output bag is written in that order.
        while pending and (now is None or cams[pending[0].origin.camera].settled(
                pending[0], now, anchors)):
            f = pending.popleft()
            if cams[f.origin.camera].anchors is not None:
                cams[f.origin.camera].pair_anchors(f, anchors)
            yield f

    conns = [c for c in reader.connections if plan.reads(c, image_of.keys() | users.keys())]
    stream = _messages(reader, conns, src, start=plan.start_ns, stop=plan.stop_ns)
    # Messages sharing one log time: paired ones first, so 'at or before' holds on ties.
    for _, same_time in groupby(stream, key=lambda m: m[1]):
        group = sorted(same_time, key=lambda m: m[0].topic in image_of)
        for conn, logtime, raw in group:
            copy(conn, logtime, raw)
            for paired in users.get(conn.topic, ()):
                paired.update(conn, logtime, raw)
            k = image_of.get(conn.topic)
            if k is None:
                continue
            cam = cams[k]
            cam.images += 1
            if (cam.images - 1) % opts.every:
                continue
            t_dec = time.perf_counter()
            f = _decode(store, conn, raw, logtime, report, pipe, camera=plan.cameras[k].name,
                        want=wants[k] if wants else outputs.ALL, origin=InBag(k, logtime))
            if f is None:
                continue
            cam.calibrate(f)
            if cam.calibration.info is None:  # no topic, or nothing on it yet
                cam.cam.no_camera_info += 1
            f.decode_ms = (time.perf_counter() - t_dec) * 1e3  # with reading and calibration
            pending.append(f)
        yield from release(logtime)
    yield from release(None)


def batches(stream: Iterable[FrameIn], size: int, window: int,
            key: Callable[[FrameIn], Tuple] = lambda f: f.group,
            one_per_camera: bool = False) -> Iterator[List[Tuple[int, FrameIn]]]:
    """Group frames of one key, of any camera, at most `size` per batch.

    key: what frames of one forward share (FrameIn.batch_key: the network input; by default
    the frame size and layout). Yields (index in the frame stream, frame) lists. A group goes
    out when full; a frame waits for company at most `window` later frames (its group then
    goes as it is), which bounds memory; a camera whose key changes sends its earlier group
    first, so each camera's frames reach the pipeline in order (depth.temporal follows each
    camera in time). one_per_camera: a camera's next frame also sends the group its last one
    waits in (at most one frame per camera in a batch, as the node's scheduler forms them):
    for a prompted model, whose prompt is guided by the camera's previous output.
    """
    groups: Dict[Tuple, List[Tuple[int, FrameIn]]] = {}
    where: Dict[str, Tuple] = {}  # camera -> the group its waiting frames are in

    def take(key: Tuple) -> List[Tuple[int, FrameIn]]:
        batch = groups.pop(key)
        for _, f in batch:
            where.pop(f.camera, None)
        return batch

    def oldest() -> Tuple:
        return min(groups, key=lambda g: groups[g][0][0])

    for i, f in enumerate(stream):
        k = key(f)
        if f.camera in where and (one_per_camera or where[f.camera] != k):
            yield take(where[f.camera])
        groups.setdefault(k, []).append((i, f))
        where[f.camera] = k
        if len(groups[k]) >= size:
            yield take(k)
        while groups and groups[oldest()][0][0] <= i - window:
            yield take(oldest())
    while groups:
        yield take(oldest())


# ---------------------------------------------------------------------------- writing


class BagOut:
    """Writes the node's CDR bytes into the output bag, one connection per topic."""

    def __init__(self, writer: Any, rb: Any, cfg: Any, labels: Sequence[str] = ()) -> None:
        self.writer, self.store = writer, rb.store
        self.conns: Dict[str, Any] = {}
        self.counts: Dict[str, int] = {}
        self.labels = list(labels)
        self.labelled: Set[str] = set()  # namespaces whose label_info is written
        q = rb.qos

        def offered(depth: int, reliable: bool, durability: Any) -> List[Any]:
            return [q.Qos(q.QosHistory.KEEP_LAST, depth, q.QosReliability.RELIABLE if reliable
                          else q.QosReliability.BEST_EFFORT, durability, q.QosTime(0, 0),
                          q.QosTime(0, 0), q.QosLiveliness.AUTOMATIC, q.QosTime(0, 0), False)]
        # What the node offers on its outputs, so a player offers the same: label_info is
        # transient local, so a player serves it to subscribers that join after it played.
        self.output_qos = offered(cfg.output.history_depth, cfg.output.reliability == 'reliable',
                                  q.QosDurability.VOLATILE)
        self.label_qos = offered(1, True, q.QosDurability.TRANSIENT_LOCAL)

    def _conn(self, topic: str, msgtype: str, qos: Sequence[Any]) -> Any:
        if topic not in self.conns:
            self.conns[topic] = self.writer.add_connection(
                topic, msgtype, typestore=self.store, offered_qos_profiles=qos)
        return self.conns[topic]

    def raw(self, conn: Any, stamp: int, data: bytes) -> None:
        """Copy an input message through unchanged, with the QoS it was recorded with."""
        qos = getattr(conn.ext, 'offered_qos_profiles', None) or []
        self.writer.write(self._conn(conn.topic, conn.msgtype, qos), stamp, data)
        self.counts[conn.topic] = self.counts.get(conn.topic, 0) + 1

    def label_info(self, logtime: int, namespace: str) -> None:
        """Write the camera's vision_msgs/LabelInfo (class id -> name) as the node does."""
        t = self.store.types
        cls = t['vision_msgs/msg/VisionClass']
        msg = t[outputs.LABEL_INFO_TYPE](
            header=t['std_msgs/msg/Header'](
                stamp=t['builtin_interfaces/msg/Time'](sec=logtime // 10**9,
                                                       nanosec=logtime % 10**9), frame_id=''),
            class_map=[cls(class_id=i, class_name=n) for i, n in enumerate(self.labels)],
            threshold=0.0)
        topic = f'{namespace}/{outputs.TOPIC_LABEL_INFO}'
        conn = self._conn(topic, outputs.LABEL_INFO_TYPE, self.label_qos)
        self.writer.write(conn, logtime, self.store.serialize_cdr(msg, outputs.LABEL_INFO_TYPE))
        self.counts[topic] = self.counts.get(topic, 0) + 1
        self.labelled.add(namespace)

    def write(self, messages: List[Tuple[Output, bytes]], logtime: int, namespace: str) -> None:
        """Write one frame's outputs (core.frames.messages) under its camera's namespace.

        Before a camera's first segmentation output, its label_info.
        """
        if self.labels and namespace not in self.labelled and any(
                o.task == outputs.SEGMENTATION_TASK for o, _ in messages):
            self.label_info(logtime, namespace)
        for o, data in messages:
            full = f'{namespace}/{o.topic}'
            self.writer.write(self._conn(full, o.msg_type, self.output_qos), logtime, data)
            self.counts[full] = self.counts.get(full, 0) + 1


@contextmanager
def open_output(dst: Path, opts: BagOptions, rb: Any) -> Iterator[Any]:
    """Open a rosbags Writer on dst (which must not exist); close it (metadata) on success."""
    plugin = rb.StoragePlugin.MCAP if opts.storage == 'mcap' else rb.StoragePlugin.SQLITE3
    writer = rb.Writer(dst, version=opts.version, storage_plugin=plugin)
    writer.open()
    try:
        yield writer
    except BaseException:
        abort = getattr(writer, 'abort', None)  # rosbags >= 0.11; the caller removes dst
        if abort is not None:
            abort()
        raise
    writer.close()


# ---------------------------------------------------------------------------- one bag


def _wants(opts: BagOptions, plan: BagPlan, pipe: Pipeline) -> List[FrozenSet[str]]:
    """Return the outputs each camera writes (no points without its camera_info).

    Normals come with a checkpoint that has a normals head; from depth they are an option
    (normals.source: depth): a bag of a depth checkpoint keeps the topics it always had.
    """
    cfg = pipe.config
    skip = set() if pipe.normals_source(cfg) == 'head' or cfg.normals.source == 'depth' else \
        {o.name for o in outputs.OUTPUTS if o.from_normals}
    return [frozenset(outputs.names(viewers=opts.viewers, exclude=skip | (
        {'points'} if not opts.points or c.info_topic is None else set())))
        for c in plan.cameras]


def _run_batch(batch: List[Tuple[int, FrameIn]], pipe: Pipeline, report: BagReport,
               timings: List[Dict[str, float]]) -> Iterator[Tuple[int, FrameIn, List]]:
    """Run one batch (frames of any cameras, one network input) as the node does (frames.run).

    Yields (index, frame, its outputs as CDR) per frame.
    """
    index = {id(f): i for i, f in batch}
    for done in frames.run(pipe, [f for _, f in batch]):
        for f, r in done:
            for w in r.warnings:
                report.frame_warning(w)
            timings.append(r.timings)
            report.frames += 1
            report.cameras[f.origin.camera].frames += 1
            yield index[id(f)], f, frames.messages(f, r, pipe.config.depth.encoding)


def _notes(plan: BagPlan, report: BagReport) -> None:
    """Per camera: what it lacked (camera_info, anchors), in the report's notes."""
    several = len(plan.cameras) > 1
    for c, r in zip(plan.cameras, report.cameras):
        prefix = f'{c.label}: ' if several else ''
        if r.no_camera_info and c.info_topic:  # without the topic, said once above
            report.notes.append(f'{prefix}{r.no_camera_info} of {r.frames} frames had no '
                                f'camera_info at or before them on {c.info_topic}: no points '
                                'or depth/camera_info for those')
        if c.anchors_topic:
            report.notes.append(f'{prefix}{r.frames_with_anchors} of {r.frames} frames paired '
                                f'with anchors on {c.anchors_topic}')


def process_bag(src: Path, dst: Path, opts: BagOptions, pipe: Pipeline,
                on_frames: Callable[[int], None] = lambda n: None) -> BagReport:
    """Read src, run every frame through pipe, write dst (a new folder); return the report.

    Frames of all cameras are batched by size in log-time order; their outputs are written
    in that order, each camera's under its namespace. Raises BagError when src is not a
    usable bag; dst is then incomplete and the caller removes it (bag_runs writes into a
    staging folder and commits only complete bags).
    """
    rb = rosbags()
    t_run = time.perf_counter()
    pipe.reset_state()  # nothing of the bag a worker ran before (fits, temporal, RNG)
    with open_bag(src) as reader:
        cfg = pipe.config
        plan = plan_bag(reader, opts, src, cfg)
        report = BagReport([CameraReport(c.name, c.image_topic, c.namespace, c.info_topic,
                                         c.anchors_topic) for c in plan.cameras])
        for c in plan.cameras:
            if c.info_topic is None:
                report.notes.append(
                    (f'{c.label}: no CameraInfo topic beside it' if len(plan.cameras) > 1
                     else 'no CameraInfo topic in the bag') + ': writing depth without points '
                    'and depth/camera_info (give --camera-info-topic if it has another name)')
        timings: List[Dict[str, float]] = []
        with open_output(dst, opts, rb) as writer:
            out = BagOut(writer, rb, cfg, pipe.labels)
            copy = out.raw if opts.copy_inputs else (lambda conn, t, raw: None)
            stream = read_frames(reader, plan, opts, src, rb.store, report, copy,
                                 cfg.input.rectified, cfg.anchors, _wants(opts, plan, pipe),
                                 pipe)
            done: Dict[int, Tuple[FrameIn, List]] = {}
            written = 0
            window = 2 * opts.batch * len(plan.cameras)
            for batch in batches(stream, opts.batch, window, lambda f: f.batch_key(pipe),
                                 one_per_camera=pipe.prompted):
                for i, f, messages in _run_batch(batch, pipe, report, timings):
                    done[i] = (f, messages)
                while written in done:  # in frame order, whichever batch finished first
                    f, messages = done.pop(written)
                    out.write(messages, f.origin.logtime,
                              plan.cameras[f.origin.camera].namespace)
                    written += 1
                on_frames(report.frames)
        if not report.frames:  # an empty output marked complete would be skipped for good
            bad = {k: t for k, t in report.first_skipped.items() if k in ('frame', 'cdr')}
            if bad:  # as _decode counts them
                # The report and its notes are lost with the bag: the first error goes along.
                first = next(iter(bad.values())).splitlines()[0][:300]
                raise BagError(f'none of the frames could be processed: '
                               f'{sum(report.skipped[k] for k in bad)} skipped as unusable, '
                               f'the first: {first}')
            raise BagError(_empty_window(reader, opts, plan.cameras))
    _notes(plan, report)
    report.seconds = time.perf_counter() - t_run
    report.topics = dict(sorted(out.counts.items()))
    report.stages_p50_ms = {k: percentile([t[k] for t in timings], 50)
                            for k in ('decode',) + STAGES if timings and k in timings[0]}
    return report
