# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Test harness on real rclpy and DDS: own Context, background executor, output recorder.

Also the message helpers tests of several folders share: field-by-field comparison, a
stereo camera_info, conversion of rosbags messages to what `ros2 bag play` publishes.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
import subprocess
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from dpt_ros.core import conversions as conv
from dpt_ros.core import outputs
from dpt_ros.tools.toolkit import node_command, process_counters

rclpy = __import__('pytest').importorskip('rclpy', reason='rclpy (ROS 2) is not installed')

from builtin_interfaces.msg import Time  # noqa: E402, I100
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def header(i: int, frame_id: str = 'camera_color_optical_frame') -> Header:
    """Return a distinct, recognisable header per frame index."""
    return Header(frame_id=frame_id, stamp=Time(sec=1000 + i, nanosec=1234 * (i + 1)))


class Harness:
    """A client node in its own Context, spun by a background executor."""

    def __init__(self, name: str = 'dpt_test_client') -> None:
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = Node(name, context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.received: Dict[str, List[Any]] = collections.defaultdict(list)
        self._stop = False
        self._thread: Optional[threading.Thread] = None

    def add_node(self, node: Any) -> None:
        """Spin another node (e.g. an in-process DptNode) in the same executor."""
        self.executor.add_node(node)

    def start(self) -> 'Harness':
        """Start spinning in the background (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        return self

    def start_node(self, ns: str, *, cameras: Any = (), lifecycle: bool = False,
                   name: str = 'dpt', pipeline: Any = None, **params: Any) -> Any:
        """Start a DptNode (or an unconfigured DptLifecycleNode) under ns; spin both.

        params are parameter overrides by dotted name (**{'model.depth': path}).
        """
        from dpt_ros.ros.node import DptLifecycleNode, DptNode
        overrides = [Parameter(k, value=v) for k, v in params.items()]
        if cameras:
            overrides.append(Parameter('cameras', value=list(cameras)))
        kind = DptLifecycleNode if lifecycle else DptNode
        node = kind(name, context=self.ctx, namespace=ns, parameter_overrides=overrides,
                    pipeline=pipeline)
        self.add_node(node)
        self.start()
        return node

    def _spin(self) -> None:
        while not self._stop and self.ctx.ok():
            self.executor.spin_once(timeout_sec=0.02)

    def record(self, topic: str, msg_type: Any, qos: Any = 10) -> None:
        """Keep every message received on topic in self.received[topic]."""
        def cb(msg: Any, topic: str = topic) -> None:
            with self.lock:
                self.received[topic].append(msg)
        self.node.create_subscription(msg_type, topic, cb, qos)

    def record_outputs(self, ns: str, topics: Optional[List[str]] = None) -> None:
        """Subscribe (default QoS, depth 10) to the node's outputs under namespace ns."""
        for o in outputs.OUTPUTS:
            if topics is None or o.topic in topics:
                self.record(f'{ns}/{o.topic}', conv.msg_class(o.msg_type))

    def get(self, topic: str) -> List[Any]:
        """Messages received so far on topic."""
        with self.lock:
            return list(self.received.get(topic, []))

    def newest_status(self, camera: str = '') -> Any:
        """Return the node's (or its camera's) newest recorded /diagnostics status, or None."""
        from dpt_ros.ros import diagnostics as diag
        arrs = self.get('/diagnostics')
        return diag.status_of(arrs[-1].status, camera) if arrs else None

    def clear(self) -> None:
        """Forget received messages."""
        with self.lock:
            self.received.clear()

    def wait(self, pred: Callable[[], bool], timeout: float = 20.0) -> bool:
        """Poll pred until it holds or timeout passes."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            time.sleep(0.02)
        return pred()

    def wait_stamp(self, topic: str, stamp: int, timeout: float = 20.0) -> Any:
        """Wait for a message with this stamp (ns) on a recorded topic; return it."""
        ok = self.wait(lambda: any(stamp_of(m) == stamp for m in self.get(topic)), timeout)
        assert ok, f'no {topic} with stamp {stamp}; got {[stamp_of(m) for m in self.get(topic)]}'
        return next(m for m in self.get(topic) if stamp_of(m) == stamp)

    def publishers(self, ns: str, compressed: bool = False,
                   reliability: ReliabilityPolicy = ReliabilityPolicy.RELIABLE) -> Any:
        """Image (or image/compressed) and camera_info publishers under ns."""
        qos = QoSProfile(depth=5, reliability=reliability)
        img_type, img_topic = (CompressedImage, f'{ns}/image/compressed') if compressed else \
            (Image, f'{ns}/image')
        return (self.node.create_publisher(img_type, img_topic, qos),
                self.node.create_publisher(CameraInfo, f'{ns}/camera_info', qos))

    def wait_subscribed(self, pub: Any, timeout: float = 30.0) -> bool:
        """Wait until the node under test subscribes to pub's topic."""
        return self.wait(lambda: pub.get_subscription_count() > 0, timeout)

    def close(self) -> None:
        """Stop spinning and shut the context down."""
        self._stop = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        for n in list(self.executor.get_nodes()):
            self.executor.remove_node(n)
            n.destroy_node()
        self.executor.shutdown()
        rclpy.try_shutdown(context=self.ctx)


def same(a: Any, b: Any, path: str = 'msg') -> None:
    """Assert two ROS messages are equal field by field (arrays compared by value)."""
    if hasattr(a, 'get_fields_and_field_types'):
        assert type(a) is type(b), path
        for name in a.get_fields_and_field_types():
            same(getattr(a, name), getattr(b, name), f'{path}.{name}')
    elif isinstance(a, (list, tuple)) and a and hasattr(a[0], 'get_fields_and_field_types'):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f'{path}[{i}]')
    elif isinstance(a, (str, bool, int, float)):
        assert a == b, f'{path}: {a!r} != {b!r}'
    else:
        x, y = np.asarray(a), np.asarray(b)
        assert x.dtype == y.dtype and x.shape == y.shape, f'{path}: {x.dtype}{x.shape} vs ' \
            f'{y.dtype}{y.shape}'
        assert np.array_equal(x, y), path


def stereo_right_camera_info() -> CameraInfo:
    """Return a calibrated right camera of a stereo pair: P != K, D != 0, Tx = -fx' * B."""
    info = CameraInfo(width=640, height=480, distortion_model='plumb_bob')
    info.k = [520.0, 0.0, 322.0, 0.0, 518.0, 241.0, 0.0, 0.0, 1.0]
    info.d = [-0.3, 0.1, 0.001, -0.0005, 0.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [480.0, 0.0, 318.0, -48.0, 0.0, 482.0, 236.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def rclpy_message(msg: Any, msgtype: str) -> Any:
    """Convert a rosbags Image, CompressedImage or CameraInfo to what ros2 bag play publishes."""
    h = Header(frame_id=msg.header.frame_id,
               stamp=Time(sec=msg.header.stamp.sec, nanosec=msg.header.stamp.nanosec))
    if msgtype.endswith('CameraInfo'):
        out = CameraInfo(header=h, height=msg.height, width=msg.width,
                         distortion_model=msg.distortion_model)
        out.d, out.k, out.r, out.p = (list(map(float, v)) for v in (msg.d, msg.k, msg.r, msg.p))
        return out
    if msgtype.endswith('CompressedImage'):
        return CompressedImage(header=h, format=msg.format, data=msg.data.tobytes())
    return Image(header=h, height=msg.height, width=msg.width, encoding=msg.encoding,
                 is_bigendian=msg.is_bigendian, step=msg.step, data=msg.data.tobytes())


def stamp_of(msg: Any) -> int:
    """Stamp of a message in nanoseconds."""
    return conv.stamp_ns(msg.header)


class NodeProcess:
    """dpt_node (or dpt_lifecycle_node) started by its executable with --ros-args."""

    def __init__(self, ros_args: List[str], env: Optional[Dict[str, str]] = None,
                 executable: str = 'dpt_node') -> None:
        self.env = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
        self.proc = subprocess.Popen(node_command(executable) + ['--ros-args'] + ros_args,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=self.env)
        self.out: List[str] = []
        self.err: List[str] = []
        self._readers = [threading.Thread(target=self._read, args=(s, buf), daemon=True)
                         for s, buf in ((self.proc.stdout, self.out),
                                        (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream: Any, buf: List[str]) -> None:
        for line in stream:
            buf.append(line)

    def text(self) -> str:
        """Everything the process printed so far."""
        return ''.join(self.out) + ''.join(self.err)

    def rss_mb(self) -> float:
        """Resident memory of the node process (Linux)."""
        for line in Path(f'/proc/{self.proc.pid}/status').read_text().splitlines():
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
        return float('nan')

    def minor_faults(self) -> int:
        """Minor page faults of the node process so far (Linux)."""
        return int(process_counters(self.proc.pid)['minor_faults'])

    def wait_exit(self, timeout: float = 60.0) -> int:
        """Wait for the process to end and return its exit code."""
        rc = self.proc.wait(timeout=timeout)
        for t in self._readers:
            t.join(timeout=5)
        return rc

    def stop(self) -> int:
        """SIGINT, as Ctrl-C does; kill if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                return self.wait_exit(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.wait_exit(10)
        return self.wait_exit(10)


def backproject_check(points_msg: Any, depth: np.ndarray, info: Any) -> float:
    """Largest distance (m) between the cloud and depth back-projected as depth_image_proc does.

    depth_image_proc (convertDepth) takes image_geometry's fx(), fy(), cx(), cy(): P's, and
    ignores distortion and Tx: x = (u - cx) * z / fx.
    """
    pts = conv.read_points(points_msg)
    fx, fy, cx, cy = info.p[0], info.p[5], info.p[2], info.p[6]
    h, w = depth.shape
    assert pts.shape == (h, w), f'organized cloud {pts.shape} != depth {depth.shape}'
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    z = depth.astype(np.float64)
    x = (u - cx) * z / fx
    y = (v - cy) * z / fy
    valid = np.isfinite(z)
    assert np.array_equal(valid, np.isfinite(pts['z'])), 'NaN pattern of cloud and depth differ'
    err = np.sqrt((pts['x'][valid] - x[valid]) ** 2 + (pts['y'][valid] - y[valid]) ** 2
                  + (pts['z'][valid] - z[valid]) ** 2)
    return float(err.max()) if err.size else 0.0
