# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The ROS 2 node: topics, parameters, QoS, the latest-frame worker and /diagnostics.

This is the only module that imports rclpy; everything it computes comes from the
pipeline, and every message it fills comes from dpt_ros.conversions.
"""

from __future__ import annotations

from collections import deque
import signal
import statistics
import sys
import threading
import time
import traceback
from typing import Any, Deque, Dict, List, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from dpt_ros import conversions as conv
from dpt_ros import outputs
from dpt_ros.config import Config, config_from_flat, ConfigError, iter_settings
from dpt_ros.conversions import FrameError
from dpt_ros.geometry import IntrinsicsError
from dpt_ros.models import ModelLoadError
from dpt_ros.outputs import EncodeOptions, FRAME_STAGES
from dpt_ros.params import param_table, ParamSpec
from dpt_ros.pipeline import Pipeline

_OWN_GROUPS = tuple(sorted({name.split('.')[0] + '.' for name, *_ in iter_settings()}))
CLASS_NAMES_PARAM = 'segmentation.class_names'
_WARN_PERIOD_S = 5.0


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """Build the ParameterDescriptor for one table entry (what `ros2 param describe` shows)."""
    d = ParameterDescriptor(description=spec.describe(), read_only=spec.read_only,
                            additional_constraints=f'allowed: {spec.constraint()}')
    if spec.type is float:
        # Doubles accept YAML integers ('max: 10'), which static typing would refuse; the
        # value is checked and converted by Config validation instead.
        d.type = ParameterType.PARAMETER_DOUBLE
        d.dynamic_typing = True
        if spec.range is not None:
            d.floating_point_range = [FloatingPointRange(
                from_value=float(spec.range[0]), to_value=float(spec.range[1]), step=0.0)]
    elif spec.type is int and spec.range is not None:
        d.integer_range = [IntegerRange(from_value=int(spec.range[0]),
                                        to_value=int(spec.range[1]), step=1)]
    return d


class _Stats:
    """Counters and bounded latency windows for /diagnostics (never grows)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received = self.processed = self.dropped = self.errors = 0
        self.last = (0, 0, 0)  # received, processed, dropped at the last report
        self.last_t = time.monotonic()
        self.stages: Dict[str, Deque[float]] = {s: deque(maxlen=200) for s in FRAME_STAGES}
        self.total: Deque[float] = deque(maxlen=200)
        self.age: Deque[float] = deque(maxlen=200)

    def add_timings(self, timings: Dict[str, float], total_ms: float, age_ms: float) -> None:
        with self.lock:
            self.processed += 1
            for k, v in timings.items():
                if k in self.stages:
                    self.stages[k].append(v)
            self.total.append(total_ms)
            self.age.append(age_ms)


class _Throttle:
    """Warn at most once per period per problem kind, counting what was suppressed."""

    def __init__(self, log: Any, period: float = _WARN_PERIOD_S) -> None:
        self.log = log
        self.period = period
        self.last: Dict[str, Tuple[float, int]] = {}

    def __call__(self, key: str, text: str) -> None:
        now = time.monotonic()
        t, suppressed = self.last.get(key, (-1e9, 0))
        if now - t < self.period:
            self.last[key] = (t, suppressed + 1)
            return
        more = f' ({suppressed} more like this suppressed)' if suppressed else ''
        self.log.warning(text + more)
        self.last[key] = (now, 0)


class DptNode(Node):
    """Depth, point clouds and segmentation from a camera stream with DPT models."""

    def __init__(self, node_name: str = 'dpt', *, pipeline: Optional[Pipeline] = None,
                 **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._warn = _Throttle(self.get_logger())
        self._warned_once: set = set()
        self._cfg = self._declare_parameters()
        self._stats = _Stats()
        self._cond = threading.Condition()
        self._pending: Optional[Tuple[Any, float]] = None
        self._camera_info: Optional[CameraInfo] = None
        self._stop = False
        # One thread does all torch work: it loads the model, then runs every frame. On the
        # CPU a forward from a thread other than the one whose OpenMP pool ran the loading is
        # ~20 % slower (measured: DPT-base 1.15 s vs 1.40 s on 2 cores); on CUDA it keeps the
        # current device and streams in one thread.
        self._pipeline: Optional[Pipeline] = pipeline
        self._load_error: Optional[BaseException] = None
        self._ready = threading.Event()
        self._worker = threading.Thread(target=self._worker_main, name='dpt_worker', daemon=True)
        self._worker.start()
        self._wait_loaded()
        if self._load_error is not None:
            raise self._load_error
        assert self._pipeline is not None
        self._labels = self._pipeline.labels
        self.declare_parameter(
            CLASS_NAMES_PARAM, self._labels or Parameter.Type.STRING_ARRAY,
            ParameterDescriptor(description='Class names of the segmentation model, by id '
                                '(index = value in segmentation/image). Read-only.',
                                read_only=True))
        self.add_on_set_parameters_callback(self._on_set_parameters)

        out_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=self._cfg.output.history_depth,
            reliability=(ReliabilityPolicy.RELIABLE if self._cfg.output.reliability == 'reliable'
                         else ReliabilityPolicy.BEST_EFFORT))
        # Advertise only what this node can publish: no segmentation topics without a
        # segmentation model, no depth topics without a depth model (depth.mode is live, so
        # a depth model gets all of them).
        self._pubs = {o.name: self.create_publisher(conv.msg_class(o.msg_type), o.topic, out_qos)
                      for o in outputs.OUTPUTS if self._pipeline.model_for(o.task) is not None}
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._publish_label_info()

        base = self._resolve('image')
        compressed = self._cfg.input.transport == 'compressed'
        self._image_topic = base + '/compressed' if compressed else base
        self._image_type = CompressedImage if compressed else Image
        self._info_topic = self._resolve('camera_info')
        self._subs: Dict[str, Any] = {}
        self._sub_reliability: Dict[str, ReliabilityPolicy] = {}
        self._subscribe(self._image_topic, self._image_type, self._on_image)
        self._subscribe(self._info_topic, CameraInfo, self._on_camera_info)

        steady = Clock(clock_type=ClockType.STEADY_TIME)
        # Timers on the steady clock: under use_sim_time a paused bag must not stop them.
        self._diag_timer = self.create_timer(self._cfg.diagnostics.period, self._diagnostics,
                                             clock=steady)
        self._qos_timer = None
        if self._cfg.input.reliability == 'auto':
            self._qos_timer = self.create_timer(1.0, self._match_publishers, clock=steady)
        info = self._pipeline.describe()
        self.get_logger().info(
            f"dpt_ros ready: {', '.join(f'{k}={v}' for k, v in info.items())}; "
            f'input {self._image_topic} + {self._info_topic}')
        if self._labels:
            self.get_logger().info(f'segmentation classes: {self._labels}')

    # ------------------------------------------------------------------ parameters

    def _declare_parameters(self) -> Config:
        """Declare every table parameter; return the validated config (ConfigError if bad)."""
        overrides = dict(getattr(self, '_parameter_overrides', {}) or {})
        for spec in param_table():
            try:
                self.declare_parameter(spec.name, spec.default, _descriptor(spec))
            except Exception as exc:  # noqa: B902 - rclpy raises several types here
                given = overrides.get(spec.name)
                shown = f' = {given.value!r}' if given is not None else ''
                raise ConfigError(f'parameter {spec.name}{shown}: {exc} '
                                  f'(allowed: {spec.constraint()}).') from exc
        unknown = sorted(n for n in overrides if n.startswith(_OWN_GROUPS)
                         and not self.has_parameter(n) and n != CLASS_NAMES_PARAM)
        if unknown:
            known = ', '.join(p.name for p in param_table())
            raise ConfigError(f"unknown parameter(s) {', '.join(unknown)}; known: {known}.")
        flat = {spec.name: self.get_parameter(spec.name).value for spec in param_table()}
        return config_from_flat(flat)

    def _on_set_parameters(self, params: List[Parameter]) -> SetParametersResult:
        names = {p.name for p in param_table()}
        changes = {p.name: p.value for p in params if p.name in names}
        if not changes:
            return SetParametersResult(successful=True)
        flat = {name: value for name, value, _, _ in iter_settings(self._cfg)}
        flat.update(changes)
        try:
            cfg = config_from_flat(flat)
            self._pipeline.update(cfg)  # checked against the model; applies from the next frame
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self._cfg = cfg
        self.get_logger().info(
            'parameters updated: ' + ', '.join(f'{k}={v!r}' for k, v in changes.items()))
        return SetParametersResult(successful=True)

    @property
    def config(self) -> Config:
        """The settings in force."""
        return self._cfg

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline this node runs."""
        return self._pipeline

    # ------------------------------------------------------------------ topics and QoS

    def _resolve(self, name: str) -> str:
        """Fully qualified, remapped topic name (image_transport appends '/compressed')."""
        if hasattr(self, 'resolve_topic_name'):
            return self.resolve_topic_name(name)
        ns = self.get_namespace().rstrip('/')
        return f'{ns}/{name}'

    def _reliability(self, topic: str) -> ReliabilityPolicy:
        """Return the configured reliability, or in 'auto' what the publishers offer."""
        choice = self._cfg.input.reliability
        if choice == 'reliable':
            return ReliabilityPolicy.RELIABLE
        if choice == 'best_effort':
            return ReliabilityPolicy.BEST_EFFORT
        offered = [i.qos_profile.reliability for i in self.get_publishers_info_by_topic(topic)]
        if not offered:
            return self._sub_reliability.get(topic, ReliabilityPolicy.RELIABLE)
        # A reliable subscription cannot match a best-effort publisher; the reverse works.
        if any(r == ReliabilityPolicy.BEST_EFFORT for r in offered):
            return ReliabilityPolicy.BEST_EFFORT
        return ReliabilityPolicy.RELIABLE

    def _subscribe(self, topic: str, msg_type: Any, callback: Any) -> None:
        rel = self._reliability(topic)
        old = self._subs.pop(topic, None)
        if old is not None:
            self.destroy_subscription(old)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=rel)
        self._subs[topic] = self.create_subscription(msg_type, topic, callback, qos)
        self._sub_reliability[topic] = rel

    def _match_publishers(self) -> None:
        """With reliability 'auto', follow the publishers' QoS when a camera (re)appears."""
        for topic, msg_type, cb in ((self._image_topic, self._image_type, self._on_image),
                                    (self._info_topic, CameraInfo, self._on_camera_info)):
            rel = self._reliability(topic)
            if rel != self._sub_reliability.get(topic):
                name = 'best_effort' if rel == ReliabilityPolicy.BEST_EFFORT else 'reliable'
                self.get_logger().info(f'{topic}: publisher offers {name}; resubscribing {name}')
                self._subscribe(topic, msg_type, cb)

    def _publish_label_info(self) -> None:
        """Publish vision_msgs/LabelInfo (transient local) when vision_msgs is installed."""
        self._label_pub = None
        if not self._labels:
            return
        try:
            from vision_msgs.msg import LabelInfo, VisionClass
        except ImportError:
            return
        from rclpy.qos import DurabilityPolicy
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._label_pub = self.create_publisher(LabelInfo, outputs.TOPIC_LABEL_INFO, qos)
        msg = LabelInfo()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.class_map = [VisionClass(class_id=i, class_name=n) for i, n in enumerate(self._labels)]
        self._label_pub.publish(msg)

    # ------------------------------------------------------------------ callbacks

    def _on_image(self, msg: Any) -> None:
        # Only keep the newest frame; the worker takes it when free (arrival order, never
        # stamps, so a looping bag or a clock jump cannot stall it).
        with self._stats.lock:
            self._stats.received += 1
        with self._cond:
            if self._pending is not None:
                with self._stats.lock:
                    self._stats.dropped += 1
            self._pending = (msg, time.monotonic())
            self._cond.notify()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    # ------------------------------------------------------------------ worker

    def _wait_loaded(self) -> None:
        """Wait for the worker to load the model; on Ctrl-C let it finish, stop it, re-raise."""
        try:
            self._ready.wait()
        except BaseException:
            # A process that exits while a thread is inside torch's C++ aborts ('terminate
            # called without an active exception'): finish loading (seconds), then leave.
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the second Ctrl-C of launch
            with self._cond:
                self._stop = True
                self._cond.notify_all()
            if self._pipeline is not None:
                self._pipeline.cancel()  # an engine build stops at its next step
            self._ready.wait()
            self._worker.join(timeout=10.0)
            raise

    def _worker_main(self) -> None:
        """Load the pipeline (unless given), report to __init__, then process frames."""
        try:
            if self._pipeline is None:
                self._pipeline = Pipeline(self._cfg, log=self.get_logger().info)
            else:
                self._pipeline.update(self._cfg)
            if not self._stop:
                self._pipeline.prepare()  # engine build/load, compile, autotune: not on frame 1
        except BaseException as exc:  # noqa: B902 - handed to __init__, which raises it
            self._load_error = exc
            return
        finally:
            self._ready.set()
        self._work()

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait(0.5)
                if self._stop:
                    return
                msg, arrived = self._pending
                self._pending = None
            try:
                self._handle(msg, arrived)
            except Exception as exc:  # noqa: B902 - the worker must outlive any frame
                if self._stop or not self.context.ok():
                    return  # Ctrl-C: rclpy shut the context down while a frame was in flight
                with self._stats.lock:
                    self._stats.errors += 1
                self._warn('internal', f'frame failed: {exc!r}\n{traceback.format_exc()}')

    def _subscribed(self, name: str) -> bool:
        pub = self._pubs.get(name)
        return pub is not None and pub.get_subscription_count() > 0

    def _wanted(self) -> frozenset:
        """Names of the outputs someone subscribes to."""
        return frozenset(name for name in self._pubs if self._subscribed(name))

    def _intrinsics(self, width: int, height: int) -> Tuple[Any, Any]:
        """(Intrinsics, CameraInfo) usable for this frame size, or (None, None) with a warning."""
        info = self._camera_info
        if info is None:
            if 'no_info' not in self._warned_once:
                self._warned_once.add('no_info')
                self.get_logger().warning(
                    f'no camera_info received on {self._info_topic} yet: publishing depth '
                    'without points and depth/camera_info until it arrives.')
            return None, None
        try:
            intr = conv.intrinsics_from_camera_info(info, self._cfg.input.rectified)
            intr.check(width, height)
        except (IntrinsicsError, ValueError) as exc:
            self._warn('bad_info', f'camera_info on {self._info_topic} unusable ({exc}); '
                                   'publishing depth without points for this frame.')
            return None, None
        return intr, info

    def _handle(self, msg: Any, arrived: float) -> None:
        want = self._wanted()
        if not want:
            return  # no one listens: spend nothing
        t0 = time.perf_counter()
        try:
            if isinstance(msg, CompressedImage):
                frame = conv.decode_compressed(msg)
            else:
                frame = conv.decode_image(msg)
        except FrameError as exc:
            with self._stats.lock:
                self._stats.errors += 1
            self._warn('frame', f'skipping frame from {self._image_topic}: {exc}')
            return
        decode_ms = (time.perf_counter() - t0) * 1e3
        intr = info = None
        if want & {'points', 'depth', 'depth_info'}:
            intr, info = self._intrinsics(frame.width, frame.height)
        cfg = self._cfg
        mode = self._pipeline.depth_mode()
        if 'points' in want and mode == 'relative_inverse' and 'relative_points' not in \
                self._warned_once:
            self._warned_once.add('relative_points')
            self.get_logger().warning(
                'points need metric depth: the depth model is relative (depth.mode '
                f"'{cfg.depth.mode}'). Set depth.mode to 'metric' or 'affine_inverse' with "
                'depth.scale/depth.shift, or use a metric checkpoint.')
        if intr is None:
            want = want - {'points'}
        result = self._pipeline.process(frame, intr, want)
        for w in result.warnings:
            self._warn('result:' + w[:40], w)
        t1 = time.perf_counter()
        encoded = outputs.encode(result, EncodeOptions(cfg.depth.encoding, info is not None), want)
        msgs = [(o.name, conv.fields_to_msg(o.msg_type, f, msg.header, info))
                for o, f in encoded if self._subscribed(o.name)]
        t2 = time.perf_counter()
        for name, out in msgs:
            self._pubs[name].publish(out)
        t3 = time.perf_counter()
        timings = dict(result.timings, decode=decode_ms, fill=(t2 - t1) * 1e3,
                       publish=(t3 - t2) * 1e3)
        age_ms = (self.get_clock().now().nanoseconds - conv.stamp_ns(msg.header)) / 1e6
        self._stats.add_timings(timings, (time.monotonic() - arrived) * 1e3, age_ms)

    # ------------------------------------------------------------------ diagnostics

    def diagnostics_status(self) -> DiagnosticStatus:
        """Build one DiagnosticStatus with rates, latencies, drops and the model in use."""
        s = self._stats
        now = time.monotonic()
        with s.lock:
            dt = max(now - s.last_t, 1e-6)
            rec, proc, drop = s.received, s.processed, s.dropped
            rates = ((rec - s.last[0]) / dt, (proc - s.last[1]) / dt, drop - s.last[2])
            s.last, s.last_t = (rec, proc, drop), now
            p50 = {k: statistics.median(v) for k, v in s.stages.items() if v}
            total = statistics.median(s.total) if s.total else float('nan')
            age = statistics.median(s.age) if s.age else float('nan')
            errors = s.errors
        values = {
            'input_rate_hz': f'{rates[0]:.2f}', 'output_rate_hz': f'{rates[1]:.2f}',
            'frames_received': str(rec), 'frames_processed': str(proc),
            'frames_dropped': str(drop), 'dropped_since_last_report': str(rates[2]),
            'bad_frames': str(errors), 'latency_p50_ms': f'{total:.2f}',
            'frame_age_p50_ms': f'{age:.2f}',
        }
        values.update({f'{k}_p50_ms': f'{v:.2f}' for k, v in p50.items()})
        values.update(self._pipeline.describe())
        values['input_topic'] = self._image_topic
        status = DiagnosticStatus()
        status.name = f'dpt_ros: {self.get_fully_qualified_name()}'
        status.hardware_id = values.get('gpu', values.get('device', ''))
        if rec and not proc:
            status.level = DiagnosticStatus.WARN
            status.message = 'frames arrive but none were processed (no subscribers?)'
        elif rates[2] and rates[1] < 0.5 * rates[0]:
            status.level = DiagnosticStatus.OK
            status.message = 'keeping up with the newest frame, dropping older ones'
        else:
            status.level = DiagnosticStatus.OK
            status.message = 'ok'
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        return status

    def _diagnostics(self) -> None:
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [self.diagnostics_status()]
        self._diag_pub.publish(arr)

    @property
    def dropped(self) -> int:
        """Frames replaced by a newer one before the worker took them."""
        return self._stats.dropped

    @property
    def processed(self) -> int:
        """Frames fully processed and published."""
        return self._stats.processed

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        """Stop the worker and free the models (idempotent)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._pipeline is not None:
            self._pipeline.cancel()
        if self._worker.is_alive() and threading.current_thread() is not self._worker:
            self._worker.join(timeout=10.0)
        if self._pipeline is not None:
            self._pipeline.close()

    def destroy_node(self) -> None:
        """Stop the worker before the node's handles go away."""
        if hasattr(self, '_worker'):
            self.close()
        super().destroy_node()


def main(args: Optional[List[str]] = None) -> int:
    """Entry point of `dpt_node`; exits 2 with one message on a bad parameter or model."""
    rclpy.init(args=args)
    node = None
    try:
        node = DptNode()
        rclpy.spin(node)
    except (ConfigError, ModelLoadError) as exc:
        print(f'dpt_node: error: {exc}', file=sys.stderr, flush=True)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # noqa: B902 - told apart below
        if rclpy.ok():
            raise  # a real error
        # else Ctrl-C shut the context down while the node was being built
    finally:
        # ros2 launch delivers Ctrl-C twice (terminal + launch), at any moment, start-up
        # included; ignore the second so teardown finishes without a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
