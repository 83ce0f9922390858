# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""`dpt_bag`: process a recorded bag offline, faster than real time, into a new bag.

Reads and writes rosbag2 bags (mcap or sqlite3) with `rosbags`, no ROS install needed. The
frames go through the same Pipeline and the same result -> message mapping as the live node,
so the output bag holds what the node would have published, under the source stamps.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
import shutil
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from dpt_ros import conversions as conv
from dpt_ros import outputs
from dpt_ros.config import Config, ConfigError
from dpt_ros.conversions import FrameError
from dpt_ros.geometry import IntrinsicsError
from dpt_ros.models import ModelLoadError
from dpt_ros.outputs import EncodeOptions, Output, STAGES
from dpt_ros.params import config_from_params_file
from dpt_ros.pipeline import Pipeline

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'


class BagError(RuntimeError):
    """The bag or the options cannot be used; the message says what to do."""


def _rosbags():
    try:
        from rosbags.rosbag2 import Reader, StoragePlugin, Writer
        from rosbags.typesys import get_typestore, Stores
    except ImportError as exc:
        raise BagError('dpt_bag needs the rosbags package: pip install rosbags') from exc
    store = getattr(Stores, 'ROS2_JAZZY', None) or Stores.ROS2_HUMBLE
    return Reader, Writer, StoragePlugin, get_typestore(store)


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


class _BagOut:
    """Writes node-equivalent messages into the output bag, one connection per topic."""

    def __init__(self, writer: Any, store: Any, namespace: str) -> None:
        self.writer, self.store, self.ns = writer, store, namespace
        self.conns: Dict[str, Any] = {}
        self.counts: Dict[str, int] = {}

    def _conn(self, topic: str, msgtype: str) -> Any:
        if topic not in self.conns:
            self.conns[topic] = self.writer.add_connection(topic, msgtype, typestore=self.store)
        return self.conns[topic]

    def raw(self, topic: str, msgtype: str, stamp: int, data: bytes) -> None:
        """Copy an input message through unchanged."""
        self.writer.write(self._conn(topic, msgtype), stamp, data)

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
            self.writer.write(self._conn(full, msgtype), logtime,
                              self.store.serialize_cdr(msg, msgtype))
            self.counts[full] = self.counts.get(full, 0) + 1


class _Progress:
    """One stderr line: done/total, frames/s, ETA (no dependency)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = max(total, 1), enabled
        self.t0 = self.last = time.monotonic()

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.5 and not force):
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float('inf')
        bar = '#' * int(30 * done / self.total)
        sys.stderr.write(f'\r[{bar:<30}] {done}/{self.total} frames  {rate:5.1f} frames/s  '
                         f'ETA {eta:5.0f} s ')
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write('\n')


def _warn_once(seen: Dict[str, int], kind: str, text: str) -> None:
    seen[kind] = seen.get(kind, 0) + 1
    if seen[kind] == 1:
        print(f'dpt_bag: warning: {text} (skipped; further ones are counted)', file=sys.stderr)


def build_config(args: argparse.Namespace) -> Config:
    """Config from --params-file (same YAML as the node) plus command-line overrides."""
    overrides = {k: v for k, v in (('model.depth', args.model),
                                   ('model.segmentation', args.segmentation),
                                   ('model.device', args.device)) if v is not None}
    if args.params_file:
        return config_from_params_file(args.params_file, args.node_name, overrides)
    from dpt_ros.config import config_from_flat
    return config_from_flat(overrides)


def process_bag(args: argparse.Namespace, log: Any = print) -> Dict[str, Any]:
    """Run the whole job; return a summary dict (raises BagError / ConfigError / ...)."""
    Reader, Writer, StoragePlugin, store = _rosbags()
    src, dst = Path(args.input), Path(args.output)
    if not src.exists():
        raise BagError(f"input bag '{src}' does not exist")
    if dst.exists():
        if not args.force:
            raise BagError(f"output '{dst}' exists; pass --force to overwrite it")
        if dst.is_dir():
            shutil.rmtree(dst)
        else:
            dst.unlink()
    cfg = build_config(args)
    with Reader(src) as reader:
        topics = reader.topics
        if reader.message_count == 0:
            raise BagError(f"the bag '{src}' is empty (no messages)")
        img_topic = _pick(topics, args.image_topic, (IMAGE, COMPRESSED), 'image')
        info_topic = _pick(topics, args.camera_info_topic, (CAMERA_INFO,), 'camera_info',
                           near=img_topic)
        if topics[img_topic].msgcount == 0:
            raise BagError(f"topic '{img_topic}' has no messages")
        if info_topic is None:
            log('no CameraInfo topic in the bag: writing depth without points and '
                'depth/camera_info (give --camera-info-topic if it has another name)')
        img_type = topics[img_topic].msgtype
        ns = args.namespace if args.namespace is not None else output_namespace(img_topic)
        ns = ('/' + ns.strip('/')) if ns.strip('/') else ''
        t0 = reader.start_time
        start = t0 + int(args.start * 1e9) if args.start else None
        stop = t0 + int(args.end * 1e9) if args.end is not None else None
        conns = [c for c in reader.connections if c.topic in (img_topic, info_topic)]
        total = topics[img_topic].msgcount
        if args.start or args.end is not None:
            span = max(reader.end_time - t0, 1)
            lo = (args.start or 0) * 1e9
            hi = min((args.end * 1e9) if args.end is not None else span, span)
            total = int(total * max(hi - lo, 0) / span) + 1
        total = (total + args.every - 1) // args.every

        log(f'input {src} ({img_topic} {img_type.split("/")[-1]}'
            f'{", " + info_topic if info_topic else ""}) -> {dst} ({args.storage}, '
            f"outputs under '{ns or '/'}')")
        t_load = time.perf_counter()
        pipe = Pipeline(cfg, log=lambda m: log(f'  {m}'))
        log(f'model ready in {time.perf_counter() - t_load:.1f} s: '
            + ', '.join(f'{k}={v}' for k, v in pipe.describe().items()))
        no_points = args.no_points or info_topic is None
        want = outputs.names(viewers=not args.no_viewers,
                             exclude=('points',) if no_points else ())
        storage = StoragePlugin.MCAP if args.storage == 'mcap' else StoragePlugin.SQLITE3
        writer = Writer(dst, version=9, storage_plugin=storage)
        writer.open()
        out = _BagOut(writer, store, ns)
        progress = _Progress(total, not args.quiet)
        seen: Dict[str, int] = {}
        timings: List[Dict[str, float]] = []
        batch: List[Tuple[Any, Any, Any, Any, int, float]] = []
        info_msg: Any = None
        n_img = processed = 0
        t_run = time.perf_counter()

        def flush() -> None:
            nonlocal processed
            if not batch:
                return
            results = pipe.process_batch([b[0] for b in batch], [b[1] for b in batch], want)
            for (frame, intr, header, info, logtime, decode_ms), r in zip(batch, results):
                r.timings['decode'] = decode_ms
                for w in r.warnings:
                    _warn_once(seen, 'result:' + w[:30], w)
                encoded = outputs.encode(r, EncodeOptions(cfg.depth.encoding, info is not None))
                out.result(encoded, header, info, logtime)
                timings.append(r.timings)
                processed += 1
            batch.clear()
            progress.update(processed)

        try:
            for conn, logtime, raw in reader.messages(conns, start=start, stop=stop):
                if args.copy_inputs:
                    out.raw(conn.topic, conn.msgtype, logtime, raw)
                if conn.topic == info_topic:
                    try:
                        info_msg = store.deserialize_cdr(raw, conn.msgtype)
                    except Exception as exc:  # noqa: B902 - corrupt bytes raise many types
                        _warn_once(seen, 'info', f'unreadable CameraInfo at {logtime}: {exc}')
                    continue
                n_img += 1
                if (n_img - 1) % args.every:
                    continue
                t_dec = time.perf_counter()
                try:
                    msg = store.deserialize_cdr(raw, conn.msgtype)
                    frame = (conv.decode_compressed(msg) if conn.msgtype == COMPRESSED
                             else conv.decode_image(msg))
                except FrameError as exc:
                    _warn_once(seen, 'frame', f'bad frame at {logtime}: {exc}')
                    continue
                except Exception as exc:  # noqa: B902 - corrupt CDR raises many types
                    _warn_once(seen, 'cdr', f'undecodable {conn.msgtype} at {logtime}: {exc}')
                    continue
                intr = info = None
                if info_msg is not None:
                    try:
                        intr = conv.intrinsics_from_camera_info(info_msg, cfg.input.rectified)
                        intr.check(frame.width, frame.height)
                        info = info_msg
                    except (IntrinsicsError, FrameError) as exc:
                        _warn_once(seen, 'intrinsics', f'camera_info unusable: {exc}')
                        intr = None
                if batch and (batch[0][0].pixels.shape != frame.pixels.shape
                              or batch[0][0].layout != frame.layout):
                    flush()
                decode_ms = (time.perf_counter() - t_dec) * 1e3
                batch.append((frame, intr, msg.header, info, logtime, decode_ms))
                if len(batch) >= args.batch:
                    flush()
            flush()
        finally:
            progress.update(processed, force=True)
            progress.close()
            writer.close()
            pipe.close()
    seconds = time.perf_counter() - t_run
    stages = {k: statistics.median(t[k] for t in timings) for k in ('decode',) + STAGES
              if timings and k in timings[0]}
    skipped = dict(seen)
    return {'frames': processed, 'seconds': seconds,
            'fps': processed / seconds if seconds > 0 else 0.0, 'stages_p50_ms': stages,
            'skipped': skipped, 'topics': dict(out.counts), 'output': str(dst),
            'image_topic': img_topic, 'camera_info_topic': info_topic}


def parser() -> argparse.ArgumentParser:
    """Command-line interface of dpt_bag."""
    ap = argparse.ArgumentParser(
        prog='dpt_bag', description='Run dpt_ros over a rosbag2 bag (mcap or sqlite3) and write '
        'depth, points and segmentation into a new bag, stamped like the source frames.')
    ap.add_argument('input', help='input bag: a rosbag2 folder, or a .mcap / .db3 file')
    ap.add_argument('output', help='output bag folder (must not exist, unless --force)')
    ap.add_argument('--image-topic', help='image topic (Image or CompressedImage); '
                    'auto-detected when the bag has exactly one')
    ap.add_argument('--camera-info-topic', help='CameraInfo topic; auto-detected')
    ap.add_argument('--params-file', help="the node's params YAML (same file as ros2 launch)")
    ap.add_argument('--node-name', default='dpt', help='node section in the params file')
    ap.add_argument('--model', help='override model.depth (folder or hub id)')
    ap.add_argument('--segmentation', help='override model.segmentation')
    ap.add_argument('--device', help='override model.device')
    ap.add_argument('--namespace', help="output topic namespace (default: the image topic's)")
    ap.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    ap.add_argument('--copy-inputs', action='store_true',
                    help='copy the image and camera_info topics into the output bag')
    ap.add_argument('--batch', type=int, default=4, help='frames per forward pass')
    ap.add_argument('--start', type=float, default=0.0, help='seconds from the bag start')
    ap.add_argument('--end', type=float, help='seconds from the bag start (exclusive)')
    ap.add_argument('--every', type=int, default=1, help='process every N-th frame')
    ap.add_argument('--no-points', action='store_true', help='do not write points')
    ap.add_argument('--no-viewers', action='store_true',
                    help='do not write colored depth / segmentation viewing images')
    ap.add_argument('--force', action='store_true', help='overwrite the output')
    ap.add_argument('--quiet', action='store_true', help='no progress bar')
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of `dpt_bag`; errors print one line and exit 2."""
    args = parser().parse_args(argv)
    if args.batch < 1 or args.every < 1 or args.start < 0 or (
            args.end is not None and args.end <= args.start):
        parser().error('--batch and --every must be >= 1, and 0 <= --start < --end')
    try:
        s = process_bag(args)
    except (BagError, ConfigError, ModelLoadError, FileNotFoundError) as exc:
        print(f'dpt_bag: error: {exc}', file=sys.stderr)
        return 2
    print(f"processed {s['frames']} frames in {s['seconds']:.2f} s ({s['fps']:.1f} frames/s) "
          f"-> {s['output']}")
    if s['stages_p50_ms']:
        stages = ', '.join(f'{k} {v:.1f}' for k, v in s['stages_p50_ms'].items())
        print(f'per-stage p50 (ms): {stages}')
    for topic, n in sorted(s['topics'].items()):
        print(f'  {topic}: {n} messages')
    if s['skipped']:
        print('skipped: ' + ', '.join(f'{k} {v}' for k, v in s['skipped'].items()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
