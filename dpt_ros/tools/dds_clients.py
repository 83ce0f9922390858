# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The tools' DDS client nodes: camera publishers and output subscribers around dpt_node.

dpt_demo and dpt_bench use them to drive the real node exactly as a robot does (and the
benchmark's relay process, its transport floor). Like node.py this module talks DDS through
rclpy; it imports rclpy inside its functions, so the tools import it, and the rest of dpt_ros
runs, without ROS (have_rclpy says whether a ROS 2 is there).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from dpt_ros.core import cdr
from dpt_ros.core import conversions as conv
from dpt_ros.core import outputs
from dpt_ros.core.outputs import FILL, PUBLISH
from dpt_ros.ros.serialized import SerializedPublisher
from dpt_ros.tools.sample import SampleFrame, synthetic_scene
from dpt_ros.tools.toolkit import (node_command, process_counters, profile_env, Saved, say,
                                   stop_process, summary, write_params_file)

PUBLISHER_ROLE = 'publisher'
RELAY_ROLE = 'relay'
# A publisher process sends its frames at its rate after start-up (torch import, frames): it
# gets this long beyond the sending before it counts as hung.
PUBLISHER_GRACE_S = 120.0
RELAY_RATE = 60.0  # frames/s offered to the relay when its sustained rate is measured
# The in-process publishers of dpt_bench's stage timings: never under the node's namespace,
# whose outputs the node computes only for topics someone subscribes to.
IN_PROCESS_NS = '/dpt_bench_inproc'


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
        except ImportError:
            return
        self.rclpy = rclpy
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = Node('dpt_bench_inproc', context=self.ctx)
        self.pubs = {}
        self.subs = []
        for o in outputs.OUTPUTS:
            cls, topic = conv.msg_class(o.msg_type), f'{IN_PROCESS_NS}/{o.topic}'
            self.pubs[o.name] = self.node.create_publisher(cls, topic, 2)
            self.subs.append(self.node.create_subscription(cls, topic, lambda _m: None, 2))
        self.senders = {name: SerializedPublisher(pub) for name, pub in self.pubs.items()}
        self.ok = True

    def publish(self, msgs: Dict[str, Any]) -> None:
        """Publish messages keyed by output name."""
        for name, msg in msgs.items():
            self.pubs[name].publish(msg)

    def close(self) -> None:
        """Destroy the node and its context."""
        if self.ok:
            self.node.destroy_node()
            self.rclpy.try_shutdown(context=self.ctx)


def wall_header(frame_id: str = 'camera') -> Any:
    """Return a Header stamped with the wall clock (latency = receive time - stamp)."""
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header
    now = time.time_ns()
    return Header(frame_id=frame_id, stamp=Time(sec=now // 10**9, nanosec=now % 10**9))


def run_publisher(args: argparse.Namespace) -> int:
    """Publish Image + CameraInfo stamped with wall time at a fixed rate (a process).

    Several namespaces (cameras) each get the rate, their frames spread evenly over the
    period, as unsynchronised cameras would send them.
    """
    import rclpy
    from sensor_msgs.msg import CameraInfo, Image
    rclpy.init()
    node = rclpy.create_node('dpt_bench_publisher')
    pubs = [(node.create_publisher(Image, f'{ns}/image', 5),
             node.create_publisher(CameraInfo, f'{ns}/camera_info', 5)) for ns in args.ns]
    s = synthetic_scene(args.width, args.height)
    end = time.monotonic() + 60
    while any(img.get_subscription_count() == 0 for img, _ in pubs) and \
            time.monotonic() < end:
        time.sleep(0.05)
    for _, info in pubs:
        info.publish(conv.camera_info_from_intrinsics(s.intrinsics, wall_header()))
    time.sleep(1.0)  # camera_info first, as a running camera driver would have sent it
    step = 1.0 / args.rate / len(pubs)
    nxt = time.monotonic()
    # Serialized once per frame straight from the arrays (as a C++ camera driver's would cost,
    # not a Python message each): the node receives the same bytes on the wire either way.
    pixels = conv.image_fields(s.rgb, 'rgb8')
    calib = conv.camera_info_from_intrinsics(s.intrinsics)
    for _ in range(args.count):
        for img, info in pubs:
            h = wall_header()
            info.publish(cdr.camera_info_cdr(calib, h))
            img.publish(cdr.image_cdr(pixels, h))
            nxt += step
            time.sleep(max(0.0, nxt - time.monotonic()))
    time.sleep(0.5)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def _publisher_process(spaces: List[str], width: int, height: int, rate: float, count: int,
                       env: Dict[str, str]) -> subprocess.Popen:
    """Start run_publisher in its own process (as a camera driver would be)."""
    cmd = [sys.executable, '-m', 'dpt_ros.tools.bench', '--role', PUBLISHER_ROLE, '--ns', *spaces,
           '--width', str(width), '--height', str(height), '--rate', f'{rate:.4f}',
           '--count', str(count)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def run_relay(args: argparse.Namespace) -> int:
    """Republish a prebuilt depth image and cloud with each camera image's header (a process).

    dpt_bench's transport floor: dpt_node's depth + points topics, sizes and QoS, published the
    way the node publishes (serialized CDR, dpt_ros.core.cdr, published in place from each
    publisher's buffer: dpt_ros.ros.serialized), with no model and no computation.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from sensor_msgs.msg import Image, PointCloud2
    w, h, ns = args.width, args.height, args.ns[0]
    depth = conv.image_fields(np.full((h, w), 2.0, np.float32), '32FC1')
    points = np.zeros((h * w, 4), np.float32)
    points[:, 2] = 2.0
    cloud = conv.pointcloud_fields(points, h, w, True)
    rclpy.init()
    node = rclpy.create_node('dpt_bench_relay')
    depth_pub = node.create_publisher(Image, f"{ns}/{outputs.BY_NAME['depth'].topic}", 2)
    cloud_pub = node.create_publisher(PointCloud2, f"{ns}/{outputs.BY_NAME['points'].topic}",
                                      2)

    times: Dict[str, List[float]] = {FILL: [], PUBLISH: []}
    senders = (SerializedPublisher(depth_pub), SerializedPublisher(cloud_pub))

    def relay(data: bytes) -> None:
        # Timed as the node times its own: fill = the CDR into each publisher's buffer,
        # publish = both publications.
        t0 = time.perf_counter()
        header = cdr.read_header(data)
        senders[0].write(cdr.fields_to_serialized(conv.IMAGE_TYPE, depth, header))
        senders[1].write(cdr.fields_to_serialized(conv.CLOUD_TYPE, cloud, header))
        t1 = time.perf_counter()
        for sender in senders:
            sender.send()
        times[FILL].append((t1 - t0) * 1e3)
        times[PUBLISH].append((time.perf_counter() - t1) * 1e3)
    # keep-last 1, as the node; raw: the image is never decoded (no model needs its pixels)
    node.create_subscription(Image, f'{ns}/image', relay, 1, raw=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        if args.times:
            Path(args.times).write_text(json.dumps(times))
    return 0


class Client:
    """A client node in its own Context, spun from the calling thread."""

    def __init__(self, name: str) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        self.rclpy = rclpy
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = Node(name, context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)

    def spin_until(self, pred: Callable[[], bool], limit: float,
                   proc: Optional[subprocess.Popen] = None, step: float = 0.02) -> bool:
        """Spin until pred holds, limit seconds pass or proc exits; return pred()."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if pred():
                return True
            if proc is not None and proc.poll() is not None:
                break
            self.executor.spin_once(timeout_sec=step)
        return pred()

    def spin_for(self, seconds: float, step: float = 0.02) -> None:
        """Spin for a while (let messages in flight arrive)."""
        self.spin_until(lambda: False, seconds, step=step)

    def set_parameters(self, node: str, values: Dict[str, Any], timeout: float = 30.0) -> bool:
        """Set parameters of a running node (fully qualified name) through its service."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter
        cli = self.node.create_client(SetParameters, f'{node}/set_parameters')
        try:
            if not cli.wait_for_service(timeout_sec=timeout):
                return False
            fut = cli.call_async(SetParameters.Request(parameters=[
                Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]))
            self.spin_until(fut.done, timeout)
            return fut.done() and all(r.successful for r in fut.result().results)
        finally:
            self.node.destroy_client(cli)

    def close(self) -> None:
        """Stop spinning and shut the context down."""
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.ctx)


def node_stages(diags: List[Any]) -> Dict[str, float]:
    """Per-stage p50 ms from the newest dpt_ros /diagnostics report that has them."""
    from dpt_ros.ros import diagnostics  # with rclpy, which these reports came through
    for arr in reversed(diags):
        values = diagnostics.values_of(arr.status)
        if values.get(diagnostics.stage_key('forward')):
            return diagnostics.stage_p50(values)
    return {}


def start_node(params: Dict[str, Any], ns: str, tmp: Path, **popen: Any) -> subprocess.Popen:
    """Start dpt_node with these dotted parameters (a params file) under namespace ns."""
    pfile = write_params_file(tmp / f"params{ns.replace('/', '_')}.yaml", params)
    cmd = node_command() + ['--ros-args', '--params-file', str(pfile), '-r', f'__ns:={ns}']
    return subprocess.Popen(cmd, text=True, **popen)


# ------------------------------------------------------------------ dpt_bench: DDS end to end

def _complete(arrivals: Dict[str, Dict[int, int]], kinds: List[str]) -> Dict[int, int]:
    """Stamp -> arrival of its last output, for the frames whose outputs all arrived."""
    return {s: max(arrivals[k][s] for k in kinds) for s in arrivals['depth']
            if all(s in arrivals[k] for k in kinds)}


def _per_frame(before: Dict[str, float], after: Dict[str, float],
               frames: int) -> Dict[str, float]:
    """Counters of process_counters per frame between two readings (empty if unreadable)."""
    if not before or not after or frames < 1:
        return {}
    return {k: (after[k] - before[k]) / frames for k in before}


def _latency_phase(client: Client, arrivals: Dict[str, Dict[int, int]], kinds: List[str],
                   ns: str, width: int, height: int, rate: float, count: int, settle_s: float,
                   env: Dict[str, str], pid: Optional[int] = None) -> Dict[str, Any]:
    """Run one publisher process at a rate; pair stamps with the arrival of every output.

    With the node's pid: its minor page faults, CPU time and context switches per frame
    published, counted once the warm-up frames are out.
    """
    warm = 2  # the first frames of a new size pay allocator / kernel-selection costs
    for d in arrivals.values():
        d.clear()
    pub = _publisher_process([ns], width, height, rate, count + warm, env)
    # spin_once returns as soon as a message arrives (its callback stamps the arrival); the
    # long timeout only keeps this process from stealing CPU from the node.
    limit = (count + warm) / rate + PUBLISHER_GRACE_S
    start: Tuple[int, Dict[str, float]] = (0, {})
    if pid is not None:
        client.spin_until(lambda: len(_complete(arrivals, kinds)) >= warm or
                          pub.poll() is not None, limit, step=0.05)
        start = (len(_complete(arrivals, kinds)), process_counters(pid))
    if not client.spin_until(lambda: pub.poll() is not None, limit, step=0.25):
        stop_process(pub, 5.0)
        raise RuntimeError(f'the publisher process did not finish within {limit:.0f} s')
    client.spin_for(settle_s, step=0.25)
    if pub.returncode != 0:
        raise RuntimeError(f'publisher failed: {pub.stderr.read()[-1000:]}')
    done = _complete(arrivals, kinds)
    node = _per_frame(start[1], process_counters(pid), len(done) - start[0]) \
        if pid is not None else {}
    for s in sorted(done)[:warm]:
        del done[s]
    lat = [(t - s) / 1e6 for s, t in done.items()]
    times = sorted(done.values())
    fps = (len(times) - 1) / ((times[-1] - times[0]) / 1e9) if len(times) > 2 else float('nan')
    out = {'latency': summary(lat), 'raw_latency': lat, 'received': len(done), 'sent': count,
           'rate_hz': rate, 'fps': fps}
    if node:
        out['node_per_frame'] = node
    return out


def _start_relay(ns: str, width: int, height: int, env: Dict[str, str],
                 times: Path) -> subprocess.Popen:
    cmd = [sys.executable, '-m', 'dpt_ros.tools.bench', '--role', RELAY_ROLE, '--ns', ns,
           '--width', str(width), '--height', str(height), '--times', str(times)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def bench_dds(depth: Path, seg: Optional[Path], device: str, precision: str, width: int,
              height: int, frames: int, est_ms: float, log: Any,
              depth_cfg: Optional[Dict[str, Any]] = None, backend: str = 'torch',
              relay: bool = False, keep_freed_off: bool = False) -> Dict[str, Any]:
    """Measure publisher process -> dpt_node process -> this process latency, throughput.

    The node runs as deployed (outputs published as CDR bytes, output.overlap on); its
    throughput is then measured again with output.overlap off (set live, same process).
    Each phase also counts the node process's page faults, CPU time and context switches per
    frame. With keep_freed_off, a second node with memory.keep_freed off runs the same
    phases. With relay, the same publisher and subscriber then time a relay process in the
    node's place (run_relay): the transport floor of this run, reported beside the node's
    figures.
    """
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image, PointCloud2

    ns = '/dpt_bench'
    tmp = Path(tempfile.mkdtemp(prefix='dpt_bench_'))
    params = {'model.depth': str(depth), 'model.segmentation': str(seg or ''),
              'model.device': device, 'model.precision': precision, 'model.backend': backend,
              'model.warmup_sizes': [f'{width}x{height}'],  # as deployed: built before frames
              **(depth_cfg or {})}
    env = dict(os.environ, **profile_env())
    client = Client('dpt_bench_subscriber')
    arrivals: Dict[str, Dict[int, int]] = {'depth': {}, 'points': {}, 'labels': {}}
    diags: List[Any] = []

    # The outputs arrive raw (serialized): only their stamps are read, so this process does
    # not spend the shared cores turning 6-20 MB a frame into Python messages.
    def arrived(kind: str) -> Callable[[bytes], None]:
        return lambda data: arrivals[kind].__setitem__(cdr.header_stamp_ns(data), time.time_ns())
    n = client.node
    n.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
    n.create_subscription(Image, f"{ns}/{outputs.BY_NAME['depth'].topic}", arrived('depth'), 10,
                          raw=True)
    n.create_subscription(PointCloud2, f"{ns}/{outputs.BY_NAME['points'].topic}",
                          arrived('points'), 10, raw=True)
    if seg:
        n.create_subscription(Image, f"{ns}/{outputs.BY_NAME['labels'].topic}",
                              arrived('labels'), 10, raw=True)
    kinds = ['depth', 'points'] + (['labels'] if seg else [])
    settle = max(3.0, 3 * est_ms / 1e3)
    # Latency: paced so the node is idle when each frame arrives; throughput: faster than
    # the node can go (it keeps the newest frame).
    lat_rate = min(10.0, 600.0 / max(est_ms, 1.0))
    thr_rate = min(60.0, 2500.0 / max(est_ms, 1.0))
    thr_frames = max(frames, int(thr_rate * 4))

    def phase(proc: subprocess.Popen, rate: float, count: int) -> Dict[str, Any]:
        res = _latency_phase(client, arrivals, kinds, ns, width, height, rate, count, settle,
                             env, proc.pid)
        res['node_p50_ms'] = node_stages(diags)
        return res

    def run_node(extra: Dict[str, Any]) -> Dict[str, Any]:
        """Latency, throughput, then throughput with output.overlap off, in one node."""
        diags.clear()
        proc = start_node(dict(params, **extra), ns, tmp, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=env)
        try:
            # The node takes frames and its outputs reach this subscriber: on a loaded machine
            # discovery of the output topics can lag the input's, and a phase's frames would
            # be published to nobody.
            client.spin_until(
                lambda: n.count_subscribers(f'{ns}/image') > 0 and all(
                    n.count_publishers(f'{ns}/{outputs.BY_NAME[k].topic}') > 0 for k in kinds),
                120, proc=proc, step=0.05)
            if proc.poll() is not None:
                raise RuntimeError(f'dpt_node exited: {proc.stderr.read()[-2000:]}')
            client.spin_for(1.0)  # the endpoints match once discovered
            res = {'latency': phase(proc, lat_rate, frames),
                   'throughput': phase(proc, thr_rate, thr_frames)}
            if client.set_parameters(f'{ns}/dpt', {'output.overlap': False}):
                res['throughput_no_overlap'] = phase(proc, thr_rate, thr_frames)
        finally:
            stop_process(proc)
        return res

    floor = None
    off = None
    try:
        out = run_node({})
        if keep_freed_off:
            off = run_node({'memory.keep_freed': False})
        if relay:
            times = tmp / 'relay_times.json'
            node = _start_relay(ns, width, height, env, times)
            try:
                client.spin_until(
                    lambda: n.count_subscribers(f'{ns}/image') > 0 and
                    n.count_publishers(f"{ns}/{outputs.BY_NAME['points'].topic}") > 0,
                    60, proc=node, step=0.05)
                if node.poll() is not None:
                    raise RuntimeError(f'relay exited: {node.stderr.read()[-2000:]}')
                client.spin_for(1.0)  # let both output topics match this subscriber
                floor = _latency_phase(client, arrivals, ['depth', 'points'], ns, width,
                                       height, lat_rate, frames, 3.0, env)
                # The most frames/s these publisher and subscriber processes pass on this
                # machine without a model (offered faster than any node here takes them): the
                # ceiling of the node's sustained figure.
                floor['throughput'] = _latency_phase(
                    client, arrivals, ['depth', 'points'], ns, width, height, RELAY_RATE,
                    int(RELAY_RATE * 4), 3.0, env)['fps']
            finally:
                stop_process(node)
            if times.exists():  # the relay's own fill and publish, as the node's diagnostics
                spent = json.loads(times.read_text())
                floor['fill_publish'] = summary([a + b for a, b in zip(spent[FILL],
                                                                       spent[PUBLISH])])
    finally:
        client.close()
        shutil.rmtree(tmp, ignore_errors=True)
    latency, sequential = out['latency'], out.get('throughput_no_overlap')
    log(f'    dds {width}x{height} ({backend}): e2e p50 {latency["latency"]["p50"]:.1f} ms '
        f'({latency["received"]}/{latency["sent"]}), sustained {out["throughput"]["fps"]:.2f} '
        'fps' + (f' ({sequential["fps"]:.2f} without overlap)' if sequential else '')
        + (f'; memory.keep_freed off: e2e p50 {off["latency"]["latency"]["p50"]:.1f} ms'
           if off else '')
        + (f', relay floor p50 {floor["latency"]["p50"]:.1f} ms' if floor else ''))
    out.update(width=width, height=height, segmentation=bool(seg), backend=backend)
    if off is not None:
        out['keep_freed_off'] = off
    if floor is not None:
        out['relay'] = floor
    return out


# ------------------------------------------------------------------ dpt_bench: many cameras

def _rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (Linux; nan elsewhere or once it is gone)."""
    try:
        for line in Path(f'/proc/{pid}/status').read_text().splitlines():
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float('nan')


def bench_cameras(ckpt: Path, device: str, precision: str, cameras: int, width: int,
                  height: int, rate: float, seconds: float, one_node: bool,
                  depth_cfg: Dict[str, Any], log: Any, backend: str = 'torch') -> Dict[str, Any]:
    """Cameras at a rate through one multi-camera dpt_node, or one dpt_node per camera.

    Same topics either way (camera K: /dpt_cams/camK/image in, /dpt_cams/camK/depth/image
    and .../points out), one publisher process for all cameras, depth + points. Returns the
    nodes' resident memory, all cameras' output frames/s, per-camera latency (receive -
    stamp) and each camera's share of the frames against an equal split, and from each
    node's last /diagnostics its batch sizes and backend builds (in all and after activation).
    """
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image, PointCloud2

    from dpt_ros.ros import diagnostics

    root = '/dpt_cams'
    names = [f'cam{k}' for k in range(cameras)]
    tmp = Path(tempfile.mkdtemp(prefix='dpt_bench_cams_'))
    env = dict(os.environ, **profile_env())
    params = {'model.depth': str(ckpt), 'model.device': device, 'model.precision': precision,
              'model.backend': backend, 'model.warmup_sizes': [f'{width}x{height}'],
              **depth_cfg}
    popen = {'stdout': subprocess.DEVNULL, 'stderr': subprocess.PIPE, 'env': env}
    if one_node:
        nodes = [start_node(dict(params, cameras=names), root, tmp, **popen)]
    else:
        nodes = [start_node(params, f'{root}/{n}', tmp, **popen) for n in names]
    client = Client('dpt_bench_cameras')
    arrivals = {(n, kind): {} for n in names for kind in ('depth', 'points')}

    def arrived(key: Tuple[str, str]) -> Callable[[bytes], None]:  # raw: only the stamp read
        return lambda data: arrivals[key].__setitem__(cdr.header_stamp_ns(data), time.time_ns())
    for n in names:
        client.node.create_subscription(Image, f"{root}/{n}/{outputs.BY_NAME['depth'].topic}",
                                        arrived((n, 'depth')), 10, raw=True)
        client.node.create_subscription(
            PointCloud2, f"{root}/{n}/{outputs.BY_NAME['points'].topic}",
            arrived((n, 'points')), 10, raw=True)
    reports: Dict[str, Dict[str, str]] = {}  # node status name -> its last values

    def report(arr: Any) -> None:
        for st in arr.status:
            if st.name.startswith(diagnostics.NAME_PREFIX + root) and \
                    diagnostics.CAMERA_INFIX not in st.name:
                reports[st.name] = diagnostics.values(st)
    client.node.create_subscription(DiagnosticArray, '/diagnostics', report, 10)
    rss: Dict[int, float] = {}
    warm_s = 3.0  # first frames of each camera pay allocator and first-call costs
    try:
        up = client.spin_until(lambda: all(client.node.count_subscribers(f'{root}/{n}/image')
                                           for n in names) or
                               any(p.poll() is not None for p in nodes), 300, step=0.1)
        if not up or any(p.poll() is not None for p in nodes):
            raise RuntimeError('dpt_node did not come up: ' + ' | '.join(
                p.stderr.read()[-1500:] for p in nodes if p.poll() is not None))
        count = int((seconds + warm_s) * rate)
        t_start = time.time_ns()
        pub = _publisher_process([f'{root}/{n}' for n in names], width, height, rate, count,
                                 env)
        last = 0.0
        while pub.poll() is None:
            client.executor.spin_once(timeout_sec=0.1)
            if time.monotonic() - last > 0.5:
                last = time.monotonic()
                for p in nodes:
                    rss[p.pid] = max(rss.get(p.pid, 0.0), _rss_mb(p.pid))
        client.spin_for(3.0, step=0.1)  # the last outputs and a /diagnostics of each node
        if pub.returncode != 0:
            raise RuntimeError(f'publisher failed: {pub.stderr.read()[-1000:]}')
    finally:
        client.close()
        for p in nodes:
            stop_process(p)
        shutil.rmtree(tmp, ignore_errors=True)
    t_from = t_start + int((1.0 + warm_s) * 1e9)  # the publisher waits 1 s before frames
    per_camera: Dict[str, Dict[str, Any]] = {}
    done_all: List[int] = []
    for n in names:
        depth, points = arrivals[(n, 'depth')], arrivals[(n, 'points')]
        done = {s: max(t, points[s]) for s, t in depth.items() if s in points and s >= t_from}
        lat = [(t - s) / 1e6 for s, t in done.items()]
        per_camera[n] = dict(summary(lat), received=len(done))
        done_all += list(done.values())
    total = sum(c['received'] for c in per_camera.values())
    for c in per_camera.values():
        c['share'] = c['received'] * len(names) / total if total else 0.0
    span = (max(done_all) - min(done_all)) / 1e9 if len(done_all) > 1 else float('nan')
    out = {'layout': 'one node' if one_node else f'{cameras} nodes', 'cameras': cameras,
           'rate_hz': rate, 'width': width, 'height': height, 'seconds': seconds,
           'sent_per_camera': int(seconds * rate), 'rss_mb': sum(rss.values()),
           'fps': (len(done_all) - 1) / span if span > 0 else float('nan'),
           'per_camera': per_camera,
           'min_share': min((c['share'] for c in per_camera.values()), default=0.0),
           'backend': backend, 'nodes_reporting': len(reports)}

    def total(key: str) -> Optional[int]:
        vals = [v.get(key) for v in reports.values()]
        if not vals or any(x is None for x in vals):
            return None
        return sum(diagnostics.builds_count(x) for x in vals)
    out['backend_builds'] = total('backend_builds')
    out['backend_builds_after_activation'] = total('backend_builds_after_activation')
    out['max_batch_size'] = max((int(v.get('max_batch_size', 0)) for v in reports.values()),
                                default=0)
    log(f"    {out['layout']}: {out['rss_mb']:.0f} MiB resident, {out['fps']:.2f} frames/s, "
        f"lowest share {out['min_share']:.2f}")
    return out


# ------------------------------------------------------------------ dpt_demo: frames to files

# What the demo asks beyond the defaults: normals in the cloud too (its .ply files hold them).
DEMO_SETTINGS = {'points.normals': True}


def _saved_from_messages(msgs: Dict[str, Any], latency_ms: float) -> Saved:
    """Turn one frame's output messages (by output name) into arrays, as the demo writes them."""
    saved = Saved(latency_ms=latency_ms)
    for name, msg in msgs.items():
        o = outputs.BY_NAME[name]
        if o.msg_type == conv.CLOUD_TYPE:
            pts = conv.read_points(msg).reshape(-1)
            xyz = np.stack([pts['x'], pts['y'], pts['z']], axis=1)
            rgb = conv.unpack_rgb(pts['rgb']) if 'rgb' in pts.dtype.names else None
            saved.cloud = (xyz, rgb)
            saved.cloud_fields = {n: pts[n] for n in pts.dtype.names
                                  if n not in ('x', 'y', 'z', 'rgb')}
        elif o.msg_type == conv.IMAGE_TYPE:
            arr = conv.image_to_array(msg)
            saved.arrays[name] = conv.encoded_to_depth(arr, msg.encoding) if name == 'depth' \
                else arr
    return saved


class _OutputCollector:
    """Every output message of the node under ns, by (output name, stamp)."""

    def __init__(self, client: Client, ns: str) -> None:
        self.got: Dict[Tuple[str, int], Any] = {}
        self.arrival: Dict[int, float] = {}
        for o in outputs.OUTPUTS:
            client.node.create_subscription(conv.msg_class(o.msg_type), f'{ns}/{o.topic}',
                                            self._callback(o.name), 10)

    def _callback(self, name: str) -> Callable[[Any], None]:
        def cb(msg: Any) -> None:
            stamp = conv.stamp_ns(msg.header)
            self.got[(name, stamp)] = msg
            self.arrival[stamp] = max(self.arrival.get(stamp, 0.0), time.perf_counter())
        return cb

    def names(self, stamp: int) -> set:
        """Return the names of the outputs received for this stamp."""
        return {n for (n, s) in self.got if s == stamp}

    def messages(self, stamp: int) -> Dict[str, Any]:
        """Return the messages received for this stamp, by output name."""
        return {n: m for (n, s), m in list(self.got.items()) if s == stamp}


def _first_frame_complete(have: set, seg: bool) -> bool:
    """Frame 0 is complete once the outputs any checkpoint of its kind produces are in."""
    return 'depth_colored' in have and ('relative' in have or 'points' in have) and (
        not seg or 'overlay' in have)


def run_through_node(frames: List[SampleFrame], depth: str, seg: str, device: str,
                     timeout: float) -> Tuple[List[Saved], Dict[str, float]]:
    """Publish frames to a dpt_node process over DDS; collect every output per frame."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header
    from builtin_interfaces.msg import Time

    ns = '/dpt_demo'
    tmp = Path(tempfile.mkdtemp(prefix='dpt_demo_'))
    proc = start_node(dict(DEMO_SETTINGS, **{'model.depth': depth, 'model.segmentation': seg,
                                             'model.device': device}),
                      ns, tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    say(f"started the node: {' '.join(proc.args)}")
    log: List[str] = []
    reader = threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True)
    reader.start()
    client = Client('dpt_demo_client')
    collect = _OutputCollector(client, ns)
    diags: List[Any] = []
    client.node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
    img_pub = client.node.create_publisher(Image, f'{ns}/image', 5)
    info_pub = client.node.create_publisher(CameraInfo, f'{ns}/camera_info', 5)
    results: List[Saved] = []
    try:
        if not client.spin_until(lambda: img_pub.get_subscription_count() > 0, timeout, proc):
            raise RuntimeError('the node did not come up:\n' + ''.join(log[-20:]))
        client.spin_for(1.0)  # every output subscription matched: frame 0 is not half-done
        expected: set = set()
        for i, frame in enumerate(frames):
            header = Header(frame_id='camera_color_optical_frame',
                            stamp=Time(sec=1_700_000_000 + i, nanosec=0))
            stamp = conv.stamp_ns(header)
            info_pub.publish(conv.camera_info_from_intrinsics(frame.intrinsics, header))
            client.spin_for(0.05)
            sent = time.perf_counter()
            img_pub.publish(conv.image_msg(header, frame.rgb, 'rgb8'))
            if expected:  # after frame 0: every output frame 0 produced
                complete = lambda: expected <= collect.names(stamp)  # noqa: E731
            else:
                complete = lambda: _first_frame_complete(collect.names(stamp),  # noqa: E731
                                                         bool(seg))
            if not client.spin_until(complete, timeout, proc):
                raise RuntimeError(f'no outputs for frame {i} within {timeout:.0f} s:\n'
                                   + ''.join(log[-20:]))
            if not expected:
                client.spin_for(1.0)  # let every output of the first frame arrive
                expected = collect.names(stamp)
            latency = (collect.arrival[stamp] - sent) * 1e3
            results.append(_saved_from_messages(collect.messages(stamp), latency))
        client.spin_for(1.2)  # one more /diagnostics report
    finally:
        client.close()
        stop_process(proc)
        reader.join(timeout=5)
        shutil.rmtree(tmp, ignore_errors=True)
    if proc.returncode not in (0, -2, None):
        say(''.join(log[-20:]))
    return results, node_stages(diags)
