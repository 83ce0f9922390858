# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The ROS 2 client nodes of the tools: dpt_demo's and dpt_bench's publishers and subscribers.

Like node.py (the node itself) this module talks DDS through rclpy; it imports rclpy inside
its functions, so the rest of dpt_ros imports and runs without ROS.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from dpt_ros import conversions as conv
from dpt_ros.cli import node_command, NODE_STAGES, packaged_config, Saved, say, stop_process
from dpt_ros.sample import SampleFrame, synthetic_scene

PUBLISHER_ROLE = 'publisher'


def have_rclpy() -> bool:
    """Return True when rclpy and the message packages import (a ROS 2 is there)."""
    try:
        import rclpy  # noqa: F401
        from sensor_msgs.msg import Image  # noqa: F401
    except ImportError:
        return False
    return True


class InProcessPublisher:
    """In-process rclpy publishers with a subscriber attached, to time publish() honestly."""

    def __init__(self) -> None:
        self.ok = False
        try:
            import rclpy
            from rclpy.context import Context
            from rclpy.node import Node
            from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        except ImportError:
            return
        self.rclpy = rclpy
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = Node('dpt_bench_inproc', context=self.ctx)
        types = {conv.IMAGE_TYPE: Image, conv.CLOUD_TYPE: PointCloud2,
                 conv.INFO_TYPE: CameraInfo}
        self.pubs = {t: self.node.create_publisher(types[m], f'/dpt_bench/{t}', 2)
                     for t, m in conv.OUTPUT_TOPICS.items()}
        self.subs = [self.node.create_subscription(types[m], f'/dpt_bench/{t}',
                                                   lambda _msg: None, 2)
                     for t, m in conv.OUTPUT_TOPICS.items()]
        self.ok = True

    def publish(self, msgs: Dict[str, Any]) -> None:
        for topic, msg in msgs.items():
            self.pubs[topic].publish(msg)

    def close(self) -> None:
        if self.ok:
            self.node.destroy_node()
            self.rclpy.try_shutdown(context=self.ctx)


def run_publisher(args: argparse.Namespace) -> int:
    """Publish Image + CameraInfo stamped with wall time at a fixed rate (a process)."""
    import rclpy
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header
    rclpy.init()
    node = rclpy.create_node('dpt_bench_publisher')
    img_pub = node.create_publisher(Image, f'{args.ns}/image', 5)
    info_pub = node.create_publisher(CameraInfo, f'{args.ns}/camera_info', 5)
    s = synthetic_scene(args.width, args.height)
    end = time.monotonic() + 60
    while img_pub.get_subscription_count() == 0 and time.monotonic() < end:
        time.sleep(0.05)
    info_pub.publish(conv.camera_info_from_intrinsics(s.intrinsics, Header(frame_id='camera')))
    time.sleep(1.0)  # camera_info first, as a running camera driver would have sent it
    period = 1.0 / args.rate
    nxt = time.monotonic()
    for i in range(args.count):
        now = time.time_ns()
        h = Header(frame_id='camera', stamp=Time(sec=now // 10**9, nanosec=now % 10**9))
        info_pub.publish(conv.camera_info_from_intrinsics(s.intrinsics, h))
        img_pub.publish(conv.image_msg(h, s.rgb, 'rgb8'))
        nxt += period
        time.sleep(max(0.0, nxt - time.monotonic()))
    time.sleep(0.5)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def profile_env() -> Dict[str, str]:
    """Env vars selecting the packaged large-frame Fast DDS profile (none if one is set)."""
    profile = packaged_config('fastdds_large_frames.xml')
    if profile is None or os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE'):
        return {}
    return {'FASTDDS_DEFAULT_PROFILES_FILE': str(profile),
            'FASTRTPS_DEFAULT_PROFILES_FILE': str(profile)}


def bench_dds(depth: Path, seg: Optional[Path], device: str, precision: str, width: int,
              height: int, frames: int, est_ms: float, log: Any,
              depth_cfg: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Measure publisher process -> dpt_node process -> this process latency, throughput."""
    from dpt_ros.bench import summary  # bench imports this module: not at the top
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image, PointCloud2

    ns = '/dpt_bench'
    tmp = Path(tempfile.mkdtemp(prefix='dpt_bench_'))
    params = tmp / 'p.yaml'
    import yaml
    tree: Dict[str, Any] = {'model': {'depth': str(depth), 'segmentation': str(seg or ''),
                                      'device': device, 'precision': precision}}
    for key, value in (depth_cfg or {}).items():
        group, name = key.split('.')
        tree.setdefault(group, {})[name] = value
    params.write_text(yaml.safe_dump({'/**': {'ros__parameters': tree}}))
    env = dict(os.environ, **profile_env())
    node = subprocess.Popen(node_command() + ['--ros-args', '--params-file', str(params),
                                              '-r', f'__ns:={ns}'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)
    ctx = Context()
    rclpy.init(context=ctx)
    client = Node('dpt_bench_subscriber', context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(client)
    arrivals: Dict[str, Dict[int, float]] = {'depth': {}, 'points': {}, 'labels': {}}

    def cb(kind: str):
        def f(msg: Any) -> None:
            arrivals[kind][conv.stamp_ns(msg.header)] = time.time_ns()
        return f
    from diagnostic_msgs.msg import DiagnosticArray
    node_stats: Dict[str, float] = {}

    def on_diag(arr: Any) -> None:
        for st in arr.status:
            if st.name.startswith('dpt_ros') and st.hardware_id is not None:
                for kv in st.values:
                    if kv.key.endswith('_p50_ms'):
                        node_stats[kv.key[:-7]] = float(kv.value)
    client.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 10)
    client.create_subscription(Image, f'{ns}/depth/image', cb('depth'), 10)
    client.create_subscription(PointCloud2, f'{ns}/points', cb('points'), 10)
    if seg:
        client.create_subscription(Image, f'{ns}/segmentation/image', cb('labels'), 10)

    warm = 2  # the first frames of a new size pay allocator / kernel-selection costs

    def phase(rate: float, count: int) -> Dict[str, Any]:
        for d in arrivals.values():
            d.clear()
        cmd = [sys.executable, '-m', 'dpt_ros.bench', '--role', PUBLISHER_ROLE, '--ns', ns,
               '--width', str(width), '--height', str(height), '--rate', f'{rate:.4f}',
               '--count', str(count + warm)]
        pub = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
        t_first = None
        # spin_once returns as soon as a message arrives (its callback stamps the arrival);
        # the long timeout only keeps this process from stealing CPU from the node.
        while pub.poll() is None:
            ex.spin_once(timeout_sec=0.25)
        end = time.monotonic() + max(3.0, 3 * est_ms / 1e3)
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.25)
        if pub.returncode != 0:
            raise RuntimeError(f'publisher failed: {pub.stderr.read()[-1000:]}')
        kinds = ['depth', 'points'] + (['labels'] if seg else [])
        done = {s: max(arrivals[k][s] for k in kinds) for s in arrivals['depth']
                if all(s in arrivals[k] for k in kinds)}
        for s in sorted(done)[:warm]:
            del done[s]
        lat = [(t - s) / 1e6 for s, t in done.items()]
        times = sorted(done.values())
        if len(times) > 2:
            t_first = times[0]
            fps = (len(times) - 1) / ((times[-1] - t_first) / 1e9)
        else:
            fps = float('nan')
        return {'latency': summary(lat), 'raw_latency': lat, 'received': len(done),
                'sent': count, 'rate_hz': rate, 'fps': fps, 'node_p50_ms': dict(node_stats)}

    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and node.poll() is None and \
                client.count_subscribers(f'{ns}/image') == 0:
            ex.spin_once(timeout_sec=0.05)
        if node.poll() is not None:
            raise RuntimeError(f'dpt_node exited: {node.stderr.read()[-2000:]}')
        # Latency: paced so the node is idle when each frame arrives.
        lat_rate = min(10.0, 600.0 / max(est_ms * 1.0, 1.0))
        latency = phase(lat_rate, frames)
        # Throughput: faster than the node can go; it keeps the newest frame.
        thr_rate = min(60.0, 2500.0 / max(est_ms, 1.0))
        throughput = phase(thr_rate, max(frames, int(thr_rate * 4)))
    finally:
        ex.shutdown()
        client.destroy_node()
        rclpy.try_shutdown(context=ctx)
        stop_process(node)
    log(f'    dds {width}x{height}: e2e p50 {latency["latency"]["p50"]:.1f} ms '
        f'({latency["received"]}/{latency["sent"]}), sustained {throughput["fps"]:.2f} fps')
    return {'latency': latency, 'throughput': throughput, 'width': width, 'height': height,
            'segmentation': bool(seg)}


def run_through_node(frames: List[SampleFrame], depth: str, seg: str, device: str,
                     timeout: float) -> Tuple[List[Saved], Dict[str, float]]:
    """Publish frames to a dpt_node process over DDS; collect every output per frame."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_msgs.msg import Header
    import yaml

    ns = '/dpt_demo'
    params = {'model': {'depth': depth, 'segmentation': seg, 'device': device}}
    tmp = Path(tempfile.mkdtemp(prefix='dpt_demo_'))
    pfile = tmp / 'params.yaml'
    pfile.write_text(yaml.safe_dump({'/**': {'ros__parameters': params}}))
    cmd = node_command() + ['--ros-args', '--params-file', str(pfile), '-r', f'__ns:={ns}']
    say(f"starting the node: {' '.join(cmd)}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: List[str] = []
    reader = threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True)
    reader.start()

    ctx = Context()
    rclpy.init(context=ctx)
    client = Node('dpt_demo_client', context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(client)
    got: Dict[Tuple[str, int], Any] = {}
    arrival: Dict[int, float] = {}
    diags: List[Any] = []
    types = {conv.IMAGE_TYPE: Image, conv.CLOUD_TYPE: PointCloud2, conv.INFO_TYPE: CameraInfo}
    for topic, t in conv.OUTPUT_TOPICS.items():
        def cb(msg: Any, topic: str = topic) -> None:
            stamp = conv.stamp_ns(msg.header)
            got[(topic, stamp)] = msg
            arrival[stamp] = max(arrival.get(stamp, 0.0), time.perf_counter())
        client.create_subscription(types[t], f'{ns}/{topic}', cb, 10)
    client.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
    img_pub = client.create_publisher(Image, f'{ns}/image', 5)
    info_pub = client.create_publisher(CameraInfo, f'{ns}/camera_info', 5)

    def spin_until(pred: Any, limit: float) -> bool:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if pred():
                return True
            if proc.poll() is not None:
                return pred()
            ex.spin_once(timeout_sec=0.02)
        return pred()

    results: List[Saved] = []
    try:
        if not spin_until(lambda: img_pub.get_subscription_count() > 0, timeout):
            raise RuntimeError('the node did not come up:\n' + ''.join(log[-20:]))
        # Wait until every output subscription is matched so frame 0 is not half-computed.
        spin_until(lambda: False, 1.0)
        topics: set = set()
        for i, frame in enumerate(frames):
            header = Header(frame_id='camera_color_optical_frame',
                            stamp=Time(sec=1_700_000_000 + i, nanosec=0))
            stamp = conv.stamp_ns(header)
            info_pub.publish(conv.camera_info_from_intrinsics(frame.intrinsics, header))
            spin_until(lambda: False, 0.05)
            sent = time.perf_counter()
            img_pub.publish(conv.image_msg(header, frame.rgb, 'rgb8'))

            def have() -> set:
                return {t for (t, s) in got if s == stamp}

            def done() -> bool:
                if topics:  # after frame 0: every topic frame 0 produced
                    return topics <= have()
                h = have()
                return conv.TOPIC_DEPTH_COLORED in h and (
                    conv.TOPIC_DEPTH_RELATIVE in h or conv.TOPIC_POINTS in h) and (
                    not seg or conv.TOPIC_OVERLAY in h)
            if not spin_until(done, timeout):
                raise RuntimeError(f'no outputs for frame {i} within {timeout:.0f} s:\n'
                                   + ''.join(log[-20:]))
            if not topics:
                spin_until(lambda: False, 1.0)  # let every topic of the first frame arrive
                topics = have()
            saved = Saved()
            saved.latency_ms = (arrival[stamp] - sent) * 1e3
            for (topic, s), msg in list(got.items()):
                if s != stamp:
                    continue
                if topic == conv.TOPIC_POINTS:
                    pts = conv.read_points(msg).reshape(-1)
                    xyz = np.stack([pts['x'], pts['y'], pts['z']], axis=1)
                    rgb = conv.unpack_rgb(pts['rgb']) if 'rgb' in pts.dtype.names else None
                    saved.cloud = (xyz, rgb)
                elif topic == conv.TOPIC_DEPTH:
                    saved.arrays['depth'] = conv.encoded_to_depth(conv.image_to_array(msg),
                                                                  msg.encoding)
                elif topic != conv.TOPIC_DEPTH_INFO:
                    key = {conv.TOPIC_DEPTH_RELATIVE: 'relative',
                           conv.TOPIC_DEPTH_COLORED: 'colored', conv.TOPIC_LABELS: 'labels',
                           conv.TOPIC_SEG_COLORED: 'seg_colored',
                           conv.TOPIC_OVERLAY: 'overlay'}[topic]
                    saved.arrays[key] = conv.image_to_array(msg)
            results.append(saved)
        spin_until(lambda: False, 1.2)  # one more /diagnostics report
    finally:
        ex.shutdown()
        client.destroy_node()
        rclpy.try_shutdown(context=ctx)
        stop_process(proc)
        reader.join(timeout=5)
        shutil.rmtree(tmp, ignore_errors=True)
    stages: Dict[str, float] = {}
    for arr in reversed(diags):
        vals = {kv.key: kv.value for st in arr.status if st.name.startswith('dpt_ros')
                for kv in st.values}
        if vals.get('forward_p50_ms'):
            stages = {s: float(vals[f'{s}_p50_ms']) for s in NODE_STAGES
                      if f'{s}_p50_ms' in vals}
            break
    if proc.returncode not in (0, -2, None):
        say(''.join(log[-20:]))
    return results, stages
