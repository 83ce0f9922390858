# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""One bag in, one bag out: the frames through the Pipeline, the outputs under the source stamps.

Reads and writes rosbag2 bags (sqlite3 or mcap) with `rosbags`, no ROS install needed. The
frames go through the same Pipeline and the same result -> message mapping as the live node,
so the output bag holds what the node would have published, under the source headers.

`process_bag` is a pure function of (input bag, BagOptions, the pipeline's config and
checkpoint): the same inputs give the same output bytes, on one machine or on a Ray worker.
The many-bag runner (bag_runs.py) and the command line (bag_cli.py) sit on top of it.
"""

from __future__ import annotations

from collections import deque
from contextlib import contextmanager
import dataclasses
from dataclasses import dataclass, field
import functools
from itertools import groupby
from pathlib import Path
import statistics
import time
from types import SimpleNamespace
from typing import (AbstractSet, Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence,
                    Tuple)

from dpt_ros import conversions as conv
from dpt_ros import outputs
from dpt_ros.anchors import AnchorError, AnchorInput
from dpt_ros.config import AnchorsConfig
from dpt_ros.conversions import Frame, FrameError
from dpt_ros.geometry import Intrinsics, IntrinsicsError
from dpt_ros.metric import Anchors
from dpt_ros.outputs import EncodeOptions, Output, STAGES
from dpt_ros.pipeline import Pipeline

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
CLOUD = 'sensor_msgs/msg/PointCloud2'
BAG_SUFFIXES = ('.mcap', '.db3')
# rosbag2 metadata versions rosbags can write. Humble reads offered_qos_profiles as a YAML
# string with integer enums (version <= 8) and fails on version 9's list; Jazzy and Kilted read
# both. Humble ignores the fields newer versions add, so 8 is the widest.
BAG_VERSIONS = (8, 9)
STORAGES = ('sqlite3', 'mcap')


class BagError(RuntimeError):
    """The bag or the options cannot be used; the message says what to do."""


@functools.lru_cache(maxsize=None)
def rosbags() -> SimpleNamespace:
    """Return the rosbags names dpt_bag uses (imported on first use: optional)."""
    try:
        from rosbags import interfaces
        from rosbags.rosbag2 import Reader, StoragePlugin, Writer
        from rosbags.typesys import get_typestore, Stores
    except ImportError as exc:
        raise BagError('dpt_bag needs the rosbags package: pip install rosbags') from exc
    store = getattr(Stores, 'ROS2_JAZZY', None) or Stores.ROS2_HUMBLE
    return SimpleNamespace(Reader=Reader, Writer=Writer, StoragePlugin=StoragePlugin,
                           store=get_typestore(store), qos=interfaces)


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
    """What to read from the input bag and how to write the output bag."""

    image_topic: Optional[str] = None        # auto-detected when the bag has exactly one
    camera_info_topic: Optional[str] = None  # auto-detected (the one next to the image)
    anchors_topic: Optional[str] = None      # anchors.source's topic; auto-detected
    anchors_info_topic: Optional[str] = None  # CameraInfo of a depth image of another size
    namespace: Optional[str] = None          # default: the image topic's namespace
    storage: str = 'sqlite3'
    version: int = 8
    copy_inputs: bool = False
    batch: int = 4
    start: float = 0.0                       # seconds from the bag start
    end: Optional[float] = None              # seconds from the bag start (exclusive)
    every: int = 1
    points: bool = True
    viewers: bool = True
    # CPU threads per bag. On the CPU, oneDNN's convolutions give results that differ in the
    # last bits with the thread count, so it is part of what makes the output bytes.
    threads: int = 1

    def validate(self) -> 'BagOptions':
        """Return self, or raise BagError naming the bad option."""
        if self.storage not in STORAGES:
            raise BagError(f"storage '{self.storage}' is not one of {', '.join(STORAGES)}")
        if self.version not in BAG_VERSIONS:
            raise BagError(f'bag version {self.version} is not one of '
                           f"{', '.join(map(str, BAG_VERSIONS))}")
        if self.batch < 1 or self.every < 1 or self.threads < 1:
            raise BagError('--batch, --every and --threads must be >= 1')
        if self.start < 0 or (self.end is not None and self.end <= self.start):
            raise BagError('need 0 <= --start < --end')
        return self


@dataclass
class BagReport:
    """What one bag produced; plain data (it travels back from Ray workers)."""

    image_topic: str = ''
    camera_info_topic: Optional[str] = None
    frames: int = 0
    seconds: float = 0.0
    no_camera_info: int = 0                  # frames with no camera_info at or before them
    anchors_topic: Optional[str] = None
    frames_with_anchors: int = 0             # frames paired with a usable anchor message
    topics: Dict[str, int] = field(default_factory=dict)
    skipped: Dict[str, int] = field(default_factory=dict)
    stages_p50_ms: Dict[str, float] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def warn_once(self, kind: str, text: str) -> None:
        """Count a skipped message; keep the text of the first of each kind."""
        self.skipped[kind] = self.skipped.get(kind, 0) + 1
        if self.skipped[kind] == 1:
            self.notes.append(f'warning: {text} (skipped; further ones are counted)')

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


def _pick(topics: Dict[str, Any], wanted: Optional[str], types: Sequence[str], what: str,
          near: str = '') -> Optional[str]:
    listing = '\n  '.join(f'{t} ({i.msgtype}, {i.msgcount} msgs)' for t, i in sorted(
        topics.items())) or '(none)'
    if wanted:
        if wanted not in topics:
            raise BagError(f"topic '{wanted}' is not in the bag; it has:\n  {listing}")
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
                       f'{listing}')
    raise BagError(f"the bag has {len(found)} {what} topics ({', '.join(sorted(found))}); "
                   f'choose one with --{what.replace("_", "-")}-topic')


@dataclass(frozen=True)
class BagPlan:
    """The topics and the time window one bag is read with."""

    image_topic: str
    image_type: str
    info_topic: Optional[str]
    namespace: str
    start_ns: Optional[int]
    stop_ns: Optional[int]
    expected_frames: int
    anchors_topic: Optional[str] = None
    anchors_info_topic: Optional[str] = None

    @property
    def paired_topics(self) -> Dict[str, str]:
        """Topics read beside the images, by role; each frame gets the latest of each."""
        roles = {'camera_info': self.info_topic, 'anchors': self.anchors_topic,
                 'anchors_info': self.anchors_info_topic}
        return {role: topic for role, topic in roles.items() if topic}


def _pick_anchors(topics: Dict[str, Any], opts: BagOptions, source: str, img: str,
                  info: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """Pick the anchors topic of anchors.source and, for depth images, its camera_info."""
    if source == 'none':
        return None, None
    types = (IMAGE,) if source == 'depth_image' else (CLOUD,)
    others = {t: i for t, i in topics.items() if t != img}
    anchors = _pick(others, opts.anchors_topic, types, 'anchors')
    if source != 'depth_image':
        return anchors, None
    if opts.anchors_info_topic:
        return anchors, _pick(topics, opts.anchors_info_topic, (CAMERA_INFO,), 'camera_info')
    # Auto: a CameraInfo beside the anchors (not the image's), if there is exactly one.
    near = [t for t, i in topics.items() if i.msgtype == CAMERA_INFO and t != info
            and output_namespace(t) == output_namespace(anchors)]
    return anchors, near[0] if len(near) == 1 else None


def plan_bag(reader: Any, opts: BagOptions, src: Path, anchors: str = 'none') -> BagPlan:
    """Choose the topics and window for one open bag; raise BagError if it cannot be used.

    anchors: anchors.source; its topic is read beside the images ('none': no anchors).
    """
    topics = reader.topics
    if reader.message_count == 0:
        raise BagError(f"the bag '{src}' is empty (no messages)")
    candidates = {t: i for t, i in topics.items() if t != opts.anchors_topic}
    img = _pick(candidates, opts.image_topic, (IMAGE, COMPRESSED), 'image')
    info = _pick(topics, opts.camera_info_topic, (CAMERA_INFO,), 'camera_info', near=img)
    anchors_topic, anchors_info = _pick_anchors(topics, opts, anchors, img, info)
    if topics[img].msgcount == 0:
        raise BagError(f"topic '{img}' has no messages")
    ns = opts.namespace if opts.namespace is not None else output_namespace(img)
    ns = ('/' + ns.strip('/')) if ns.strip('/') else ''
    t0 = reader.start_time
    start = t0 + int(opts.start * 1e9) if opts.start else None
    stop = t0 + int(opts.end * 1e9) if opts.end is not None else None
    total = topics[img].msgcount
    if opts.start or opts.end is not None:  # an estimate, for the progress bar only
        span = max(reader.end_time - t0, 1)
        lo = opts.start * 1e9
        hi = min(opts.end * 1e9 if opts.end is not None else span, span)
        total = min(total, int(total * max(hi - lo, 0) / span) + 1)
    total = (total + opts.every - 1) // opts.every
    return BagPlan(img, topics[img].msgtype, info, ns, start, stop, total, anchors_topic,
                   anchors_info)


@dataclass
class FrameIn:
    """One decoded frame and the latest paired messages (camera_info, ...) at or before it."""

    frame: Frame
    header: Any
    logtime: int
    paired: Dict[str, Any]
    intrinsics: Optional[Intrinsics]
    decode_ms: float
    anchors: Optional[Anchors] = None         # paired by stamp (anchors.max_age)


class _Paired:
    """The newest message of each paired topic, by role; every anchor message for pairing."""

    def __init__(self, topics: Dict[str, str], store: Any, report: BagReport,
                 rectified: bool, anchors: Optional[AnchorInput] = None) -> None:
        self.roles = {topic: role for role, topic in topics.items()}
        self.latest: Dict[str, Any] = {}
        self.store, self.report, self.rectified = store, report, rectified
        self.anchors = anchors
        self.anchor_stamp = -1  # newest anchor message stamp seen
        self._intr: Tuple[Any, Optional[Intrinsics]] = (None, None)

    def update(self, conn: Any, logtime: int, raw: bytes) -> None:
        """Keep a paired message as the newest of its role (an unreadable one is skipped)."""
        role = self.roles[conn.topic]
        try:
            msg = self.store.deserialize_cdr(raw, conn.msgtype)
        except Exception as exc:  # noqa: B902 - corrupt bytes raise many types
            self.report.warn_once(role, f'unreadable {role} at {logtime}: {exc}')
            return
        if role == 'anchors' and self.anchors is not None:
            self.anchors.add(msg)
            self.anchor_stamp = max(self.anchor_stamp, conv.stamp_ns(msg.header))
            return
        if role == 'anchors_info' and self.anchors is not None:
            self.anchors.set_info(msg)
        self.latest[role] = msg

    def intrinsics(self, frame: Frame) -> Optional[Intrinsics]:
        """Intrinsics of the newest camera_info if it fits the frame, else None (counted)."""
        info = self.latest.get('camera_info')
        if info is None:
            return None
        if self._intr[0] is not info:
            try:
                self._intr = (info, conv.intrinsics_from_camera_info(info, self.rectified))
            except (IntrinsicsError, FrameError) as exc:
                self.report.warn_once('intrinsics', f'camera_info unusable: {exc}')
                self._intr = (info, None)
        intr = self._intr[1]
        if intr is not None:
            try:
                intr.check(frame.width, frame.height)
            except IntrinsicsError as exc:
                self.report.warn_once('intrinsics', f'camera_info unusable: {exc}')
                return None
        return intr


def _seed_paired(reader: Any, plan: BagPlan, paired: _Paired, src: Path,
                 copy: Callable[[Any, int, bytes], None]) -> None:
    """Before a --start window: the newest paired message from anywhere earlier in the bag.

    A camera_info is often recorded once, latched, long before the window starts.
    """
    if plan.start_ns is None or not plan.paired_topics:
        return
    last: Dict[str, Tuple[Any, int, bytes]] = {}
    conns = [c for c in reader.connections if c.topic in paired.roles]
    for conn, logtime, raw in _messages(reader, conns, src, stop=plan.start_ns):
        last[conn.topic] = (conn, logtime, raw)
    for conn, logtime, raw in last.values():
        paired.update(conn, logtime, raw)
        copy(conn, logtime, raw)


def _decode(store: Any, conn: Any, raw: bytes, logtime: int,
            report: BagReport) -> Optional[Tuple[Frame, Any]]:
    """Image or CompressedImage bytes -> (Frame, header); None (counted) if unusable."""
    try:
        msg = store.deserialize_cdr(raw, conn.msgtype)
        frame = (conv.decode_compressed(msg) if conn.msgtype == COMPRESSED
                 else conv.decode_image(msg))
    except FrameError as exc:
        report.warn_once('frame', f'bad frame at {logtime}: {exc}')
        return None
    except Exception as exc:  # noqa: B902 - corrupt CDR raises many types
        report.warn_once('cdr', f'undecodable {conn.msgtype} at {logtime}: {exc}')
        return None
    return frame, msg.header


def _pair_anchors(f: FrameIn, paired: _Paired, cfg: AnchorsConfig, report: BagReport) -> None:
    """Give a frame the anchors nearest in stamp (a bad message is counted, not fatal)."""
    try:
        f.anchors = paired.anchors.for_frame(conv.stamp_ns(f.header),
                                             (f.frame.width, f.frame.height), f.intrinsics,
                                             str(f.header.frame_id), cfg)
    except AnchorError as exc:
        report.warn_once('anchors', f'bad anchor message for the frame at {f.logtime}: {exc}')
    if f.anchors is not None:
        report.frames_with_anchors += 1


def read_frames(reader: Any, plan: BagPlan, opts: BagOptions, src: Path, store: Any,
                report: BagReport, copy: Callable[[Any, int, bytes], None],
                rectified: bool, anchors: Optional[AnchorsConfig] = None) -> Iterator[FrameIn]:
    """Yield the window's frames (every N-th), each with the paired messages at or before it.

    rectified: the images are rectified (intrinsics from camera_info P, else K and D).
    anchors: with the plan's anchors topic, each frame gets the anchor message nearest in
    stamp; a frame waits until a later-stamped anchor message (or a second of log time past
    anchors.max_age) shows that no nearer one can come.
    """
    anchor_input = AnchorInput(anchors.source) if plan.anchors_topic and anchors else None
    paired = _Paired(plan.paired_topics, store, report, rectified, anchor_input)
    _seed_paired(reader, plan, paired, src, copy)
    pending: Deque[FrameIn] = deque()

    def settled(f: FrameIn, now: int) -> bool:
        if anchor_input is None:
            return True
        return paired.anchor_stamp >= conv.stamp_ns(f.header) or \
            now - f.logtime > anchors.max_age * 1e9 + 1e9

    def release(now: Optional[int]) -> Iterator[FrameIn]:
        while pending and (now is None or settled(pending[0], now)):
            f = pending.popleft()
            if anchor_input is not None:
                _pair_anchors(f, paired, anchors, report)
            yield f

    conns = [c for c in reader.connections
             if c.topic == plan.image_topic or c.topic in paired.roles]
    n_img = 0
    stream = _messages(reader, conns, src, start=plan.start_ns, stop=plan.stop_ns)
    # Messages sharing one log time: paired ones first, so 'at or before' holds on ties.
    for _, same_time in groupby(stream, key=lambda m: m[1]):
        group = sorted(same_time, key=lambda m: m[0].topic == plan.image_topic)
        for conn, logtime, raw in group:
            copy(conn, logtime, raw)
            if conn.topic != plan.image_topic:
                paired.update(conn, logtime, raw)
                continue
            n_img += 1
            if (n_img - 1) % opts.every:
                continue
            t_dec = time.perf_counter()
            decoded = _decode(store, conn, raw, logtime, report)
            if decoded is None:
                continue
            frame, header = decoded
            intr = paired.intrinsics(frame)
            if plan.info_topic and 'camera_info' not in paired.latest:
                report.no_camera_info += 1
            pending.append(FrameIn(frame, header, logtime, dict(paired.latest), intr,
                                   (time.perf_counter() - t_dec) * 1e3))
        yield from release(logtime)
    yield from release(None)


def batches(frames: Iterator[FrameIn], size: int) -> Iterator[List[FrameIn]]:
    """Group consecutive frames of one size and layout, at most `size` per batch."""
    batch: List[FrameIn] = []
    for f in frames:
        if batch and (batch[0].frame.pixels.shape != f.frame.pixels.shape
                      or batch[0].frame.layout != f.frame.layout):
            yield batch
            batch = []
        batch.append(f)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------------------- writing


class BagOut:
    """Writes node-equivalent messages into the output bag, one connection per topic."""

    def __init__(self, writer: Any, rb: Any, namespace: str, cfg: Any) -> None:
        self.writer, self.store, self.ns = writer, rb.store, namespace
        self.conns: Dict[str, Any] = {}
        self.counts: Dict[str, int] = {}
        q = rb.qos
        # What the node offers on its outputs, so a player offers the same.
        self.output_qos = [q.Qos(
            q.QosHistory.KEEP_LAST, cfg.output.history_depth,
            q.QosReliability.RELIABLE if cfg.output.reliability == 'reliable'
            else q.QosReliability.BEST_EFFORT, q.QosDurability.VOLATILE, q.QosTime(0, 0),
            q.QosTime(0, 0), q.QosLiveliness.AUTOMATIC, q.QosTime(0, 0), False)]

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

    def result(self, encoded: List[Tuple[Output, Dict[str, Any]]], header: Any,
               info: Any, logtime: int) -> None:
        """Write one frame's outputs under the source header."""
        T = self.store.types
        for o, f in encoded:
            topic, msgtype = o.topic, o.msg_type
            if msgtype == conv.INFO_TYPE:
                msg = dataclasses.replace(info, header=header)
            elif msgtype == conv.CLOUD_TYPE:
                msg = T[msgtype](
                    header=header, height=f['height'], width=f['width'],
                    fields=[T['sensor_msgs/msg/PointField'](name=n, offset=o, datatype=d,
                                                            count=c)
                            for n, o, d, c in f['fields']],
                    is_bigendian=bool(f['is_bigendian']), point_step=f['point_step'],
                    row_step=f['row_step'], data=f['data'], is_dense=f['is_dense'])
            else:
                msg = T[msgtype](header=header, height=f['height'], width=f['width'],
                                 encoding=f['encoding'], is_bigendian=f['is_bigendian'],
                                 step=f['step'], data=f['data'])
            full = f'{self.ns}/{topic}'
            self.writer.write(self._conn(full, msgtype, self.output_qos), logtime,
                              self.store.serialize_cdr(msg, msgtype))
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


def _run_batch(batch: List[FrameIn], pipe: Pipeline, want: AbstractSet[str], out: BagOut,
               report: BagReport, timings: List[Dict[str, float]], source: str) -> None:
    """Run one batch through the pipeline and write each frame's outputs."""
    results = pipe.process_batch([f.frame for f in batch], [f.intrinsics for f in batch], want,
                                 [f.anchors for f in batch], [source] * len(batch),
                                 [conv.stamp_ns(f.header) * 1e-9 for f in batch])
    for f, r in zip(batch, results):
        r.timings['decode'] = f.decode_ms
        for w in r.warnings:
            report.warn_once('result:' + w[:30], w)
        info = f.paired.get('camera_info') if f.intrinsics is not None else None
        encoded = outputs.encode(r, EncodeOptions(pipe.config.depth.encoding, info is not None))
        out.result(encoded, f.header, info, f.logtime)
        timings.append(r.timings)
        report.frames += 1


def process_bag(src: Path, dst: Path, opts: BagOptions, pipe: Pipeline,
                on_frames: Callable[[int], None] = lambda n: None) -> BagReport:
    """Read src, run every frame through pipe, write dst (a new folder); return the report.

    Raises BagError when src is not a usable bag; dst is then incomplete and the caller
    removes it (bag_runs writes into a staging folder and commits only complete bags).
    """
    rb = rosbags()
    t_run = time.perf_counter()
    with open_bag(src) as reader:
        cfg = pipe.config
        plan = plan_bag(reader, opts, src, cfg.anchors.source)
        report = BagReport(plan.image_topic, plan.info_topic, anchors_topic=plan.anchors_topic)
        if plan.info_topic is None:
            report.notes.append('no CameraInfo topic in the bag: writing depth without points '
                                'and depth/camera_info (give --camera-info-topic if it has '
                                'another name)')
        no_points = not opts.points or plan.info_topic is None
        want = outputs.names(viewers=opts.viewers, exclude=('points',) if no_points else ())
        timings: List[Dict[str, float]] = []
        with open_output(dst, opts, rb) as writer:
            out = BagOut(writer, rb, plan.namespace, pipe.config)
            copy = out.raw if opts.copy_inputs else (lambda conn, t, raw: None)
            frames = read_frames(reader, plan, opts, src, rb.store, report, copy,
                                 cfg.input.rectified, cfg.anchors)
            for batch in batches(frames, opts.batch):
                _run_batch(batch, pipe, want, out, report, timings, plan.image_topic)
                on_frames(report.frames)
    if report.no_camera_info:
        report.notes.append(f'{report.no_camera_info} of {report.frames} frames had no '
                            f'camera_info at or before them on {plan.info_topic}: no points '
                            'or depth/camera_info for those')
    if plan.anchors_topic:
        report.notes.append(f'{report.frames_with_anchors} of {report.frames} frames paired '
                            f'with anchors on {plan.anchors_topic}')
    report.seconds = time.perf_counter() - t_run
    report.topics = dict(sorted(out.counts.items()))
    report.stages_p50_ms = {k: statistics.median(t[k] for t in timings)
                            for k in ('decode',) + STAGES if timings and k in timings[0]}
    return report
