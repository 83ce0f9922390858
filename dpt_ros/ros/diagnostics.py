# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The node's /diagnostics: counters and latency per camera, stage timings, batches, the fit.

The statuses and their keys are written here and read back here: the benchmark's client,
the demo and the tests find a status in a DiagnosticArray with status_of / values_of /
camera_values and the stage timings with stage_p50.
"""

from __future__ import annotations

from collections import deque
import threading
import time
from typing import Any, Callable, Deque, Dict, Iterable, List, NamedTuple, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType

from dpt_ros.core.outputs import FRAME_STAGES
from dpt_ros.core.reports import percentile

NAME_PREFIX = 'dpt_ros: '
CAMERA_INFIX = ' camera '
# Transport loss is judged over windows of this many frames (received + lost) per camera.
LOSS_WINDOW = 20
_WINDOW = 200  # latencies kept per camera and stage
SILENT_S = 1.0  # a camera is silent after no frame for this long at least (input_silent)
# Frames stamped further ahead of the node's clock than this (their age below -AHEAD_S) come
# from a clock not in step with it: TF and every time synchroniser then refuse them.
AHEAD_S = 1.0
# Frames stamped further behind than this while /clock is published and use_sim_time is false
# come from a bag played with --clock or a simulator, on the clock this node does not follow.
BEHIND_S = 10.0
# The `points` value of a camera whose frames get no points for want of calibration (+ topic).
POINTS_NO_INFO = 'none: no camera_info received on'


class Heard(NamedTuple):
    """What the ROS graph says of a camera's topics ('' where nothing is wrong)."""

    publishers: int       # of the image topic (input_publishers)
    input_problem: str    # why none of them reaches this node: none, another type, QoS
    output_problem: str   # outputs with a subscriber that can never receive them (QoS)
    clock_problem: str    # /clock is published but this node does not follow it
    info_publishers: int  # of the camera_info topic (camera_info_publishers)
    unserved: str = ''    # outputs subscribed whose model is not loaded (not advertised)


def heard_values(heard: Optional[Heard]) -> Dict[str, str]:
    """Return a camera's graph facts as /diagnostics values (problems only where there are)."""
    if heard is None:
        return {}
    values = {'input_publishers': str(heard.publishers),
              'camera_info_publishers': str(heard.info_publishers)}
    for key in ('input_problem', 'output_problem', 'clock_problem', 'unserved'):
        if getattr(heard, key):
            values[key] = getattr(heard, key)
    return values


def stage_key(stage: str) -> str:
    """Return the key of a stage's p50 in milliseconds: forward -> forward_p50_ms."""
    return f'{stage}_p50_ms'


def status_name(fqn: str, camera: str = '') -> str:
    """Return the status name of the node (fully qualified name), or of one of its cameras."""
    return f'{NAME_PREFIX}{fqn}{CAMERA_INFIX}{camera}' if camera else f'{NAME_PREFIX}{fqn}'


def _camera_of(status: Any) -> Optional[str]:
    """Return the camera a dpt_ros status is of ('' for the node's own), None for others."""
    if not status.name.startswith(NAME_PREFIX):
        return None
    return status.name.split(CAMERA_INFIX, 1)[1] if CAMERA_INFIX in status.name else ''


def status_of(statuses: Iterable[Any], camera: str = '') -> Any:
    """Return the node's own status among statuses, or its named camera's; None if absent."""
    return next((st for st in statuses if _camera_of(st) == camera), None)


def values(status: Any) -> Dict[str, str]:
    """Return a status's values as a dict ({} for None)."""
    return {kv.key: kv.value for kv in status.values} if status is not None else {}


def values_of(statuses: Iterable[Any], camera: str = '') -> Dict[str, str]:
    """Return the values of the node's own status, or of its named camera's ({} if absent)."""
    return values(status_of(statuses, camera))


def builds_count(value: str) -> int:
    """Total of a backend_builds value ('0' or 'onnxruntime 2, tensorrt 1')."""
    return sum(int(part.split()[-1]) for part in value.split(', '))


def camera_values(statuses: Iterable[Any]) -> Dict[str, Dict[str, str]]:
    """Return the values of each named camera's status, by camera name."""
    return {_camera_of(st): values(st) for st in statuses if _camera_of(st)}


def stage_p50(values: Dict[str, str]) -> Dict[str, float]:
    """Return the per-stage p50 in milliseconds a node's values hold, by stage."""
    return {s: float(values[stage_key(s)]) for s in FRAME_STAGES if stage_key(s) in values}


class Stats:
    """Counters and bounded latency windows of one camera (or of all), never growing."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received = self.processed = self.dropped = self.errors = 0
        self.lost = 0  # reported lost in transport by the middleware (message_lost events)
        self.last = (0, 0, 0, 0, 0)  # received, processed, dropped, lost, errors at last report
        self._window = (0, 0)  # received, lost when the current loss window began
        self.last_t = time.monotonic()
        self.processed_t = self.last_t  # when the newest frame was processed
        self.received_t = self.last_t   # when the newest frame arrived (or counting began)
        self.gaps: Deque[float] = deque(maxlen=LOSS_WINDOW)  # seconds between arrivals
        self.stages: Dict[str, Deque[float]] = {s: deque(maxlen=_WINDOW) for s in FRAME_STAGES}
        self.total: Deque[float] = deque(maxlen=_WINDOW)
        self.age: Deque[float] = deque(maxlen=_WINDOW)

    def add_received(self, dropped: bool) -> None:
        """Count one frame received, and whether it replaced one waiting (a drop)."""
        now = time.monotonic()
        with self.lock:
            if self.received:
                self.gaps.append(now - self.received_t)
            self.received += 1
            self.dropped += int(dropped)
            self.received_t = now

    def add_error(self) -> None:
        """Count one frame that could not be used or published."""
        with self.lock:
            self.errors += 1

    def add_timings(self, timings: Dict[str, float], total_ms: float,
                    age_ms: Optional[float]) -> None:
        """Count one processed frame with its stage timings, latency and age (None: unknown)."""
        with self.lock:
            self.processed += 1
            self.processed_t = time.monotonic()
            for k, v in timings.items():
                if k in self.stages:
                    self.stages[k].append(v)
            self.total.append(total_ms)
            if age_ms is not None:
                self.age.append(age_ms)

    def add_lost(self, count: int) -> Optional[Tuple[int, int]]:
        """Count frames lost in transport; at the end of a loss window return (lost, seen) in it.

        A window ends once LOSS_WINDOW frames were seen (received + lost) since it began.
        """
        with self.lock:
            self.lost += count
            rec0, lost0 = self._window
            lost, seen = self.lost - lost0, self.received - rec0 + self.lost - lost0
            if seen < LOSS_WINDOW:
                return None
            self._window = (self.received, self.lost)
            return lost, seen

    def report(self) -> Tuple[Dict[str, str], bool]:
        """Rates since the last report, counters and latency; and whether frames go unused."""
        now = time.monotonic()
        with self.lock:
            dt = max(now - self.last_t, 1e-6)
            rec, proc, drop, lost = self.received, self.processed, self.dropped, self.lost
            errors = self.errors
            rates = ((rec - self.last[0]) / dt, (proc - self.last[1]) / dt, drop - self.last[2],
                     lost - self.last[3], rec - self.last[0], errors - self.last[4])
            self.last, self.last_t = (rec, proc, drop, lost, errors), now
            total = list(self.total)
            age = percentile(self.age, 50)
            processed_t = self.processed_t
            quiet, usual = now - self.received_t, percentile(self.gaps, 50)
        values = {
            'input_rate_hz': f'{rates[0]:.2f}', 'output_rate_hz': f'{rates[1]:.2f}',
            'frames_received': str(rec), 'frames_processed': str(proc),
            'frames_dropped': str(drop), 'dropped_since_last_report': str(rates[2]),
            'frames_lost': str(lost), 'lost_since_last_report': str(rates[3]),
            'received_since_last_report': str(rates[4]), 'bad_frames': str(errors),
            'bad_since_last_report': str(rates[5]),
            'latency_p50_ms': f'{percentile(total, 50):.2f}',
            'latency_p95_ms': f'{percentile(total, 95):.2f}', 'frame_age_p50_ms': f'{age:.2f}',
            'seconds_since_last_frame': f'{quiet:.2f}' if rec else 'nan',
            # No frame for two periods, three of the camera's usual gaps and SILENT_S: nothing
            # is published, which is not 'ok'.
            'input_silent': str(quiet > max(2 * dt, 3 * (usual if usual == usual else 0.0),
                                            SILENT_S)).lower(),
        }
        # In this period, as every other warning: frames that stop being processed while the
        # camera streams (the last listener left) are not 'ok' because some were before. A
        # model slower than the period is not idle until twice its usual latency has passed.
        slow = proc and now - processed_t <= 2e-3 * percentile(total, 95)
        return values, bool(rates[4] and not rates[1] and not slow)

    def stage_p50(self) -> Dict[str, str]:
        """Per-stage p50 in ms, as /diagnostics values."""
        with self.lock:
            return {stage_key(k): f'{percentile(v, 50):.2f}' for k, v in self.stages.items() if v}


def _status(name: str, values: Dict[str, str], idle: bool) -> DiagnosticStatus:
    """One DiagnosticStatus: its level and message say what the values mean."""
    status = DiagnosticStatus()
    status.name = name
    status.hardware_id = values.get('gpu', values.get('device', ''))
    rates = (float(values.get('input_rate_hz', 0)), float(values.get('output_rate_hz', 0)),
             int(values.get('dropped_since_last_report', 0)))
    lost, got = int(values.get('lost_since_last_report', 0)), \
        int(values.get('received_since_last_report', 0))
    bad = int(values.get('bad_since_last_report', 0))
    ahead = -float(values.get('frame_age_p50_ms', 'nan')) / 1e3  # nan without stamps
    status.level = DiagnosticStatus.OK
    if lost > got:
        status.level = DiagnosticStatus.WARN
        status.message = 'most input frames are lost in transport (frames_lost; see the log)'
    elif values.get('input_silent') == 'true':
        status.level = DiagnosticStatus.WARN
        # The graph says why when it can (input_problem); else the camera is not sending.
        why = values.get('input_problem', 'is the camera publishing?')
        status.message = (f"no frames received for {values['seconds_since_last_frame']} s "
                          f'({why})' if values.get('frames_received', '0') != '0'
                          else f'no frames received yet ({why})')
    elif bad and 2 * bad >= got:
        status.level = DiagnosticStatus.WARN
        status.message = 'most input frames cannot be used (bad_frames; see the log)'
    elif idle:
        status.level = DiagnosticStatus.WARN
        why = values.get('output_problem') or (
            f"nothing subscribes to an output this node computes; subscribed but not "
            f"published: {values['unserved']}" if 'unserved' in values else 'no subscribers?')
        status.message = f'frames arrive but none were processed ({why})'
    elif values.get('metric_suspended') == 'true':
        status.level = DiagnosticStatus.WARN
        # The fit state says why: no anchors, refused (and the test), degenerate.
        why = values.get('fit_state', 'no anchors')
        if 'anchors_problem' in values:
            why += f": {values['anchors_problem']}"
        status.message = f'no metres ({why}): depth/image and points suspended'
    elif values.get('points', '').startswith('none'):
        status.level = DiagnosticStatus.WARN
        status.message = f"points not published ({values['points']}" + (
            ': nothing publishes it)' if values.get('camera_info_publishers') == '0' and
            values['points'].startswith(POINTS_NO_INFO) else ')')
    elif 'output_problem' in values:
        status.level = DiagnosticStatus.WARN
        status.message = values['output_problem']
    elif -ahead > BEHIND_S and 'clock_problem' in values:
        status.level = DiagnosticStatus.WARN
        status.message = (f"frames are stamped {-ahead:.1f} s behind this node's clock "
                          f"(frame_age_p50_ms) and {values['clock_problem']}: set "
                          'use_sim_time true for this node')
    elif ahead > AHEAD_S:
        status.level = DiagnosticStatus.WARN
        status.message = (f"frames are stamped {ahead:.1f} s ahead of this node's clock "
                          "(frame_age_p50_ms): the camera's clock is not in step with this "
                          "computer's, or use_sim_time differs between them")
    elif 'unpublished' in values or 'unserved' in values:
        # OK: the node does what its settings say; a recorder of every topic subscribes these
        # too. The subscriber that expected them learns why here (and in the log).
        status.message = 'subscribed but not published: ' + '; '.join(
            values[k] for k in ('unpublished', 'unserved') if k in values)
    elif rates[2] and rates[1] < 0.5 * rates[0]:
        status.message = 'keeping up with the newest frame, dropping older ones'
    else:
        status.message = 'ok'
    status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    return status


def anchor_values(cam: Any, pipe: Any) -> Dict[str, str]:
    """Return a camera's anchor counters and, in depth.mode fitted, its last fit."""
    a = cam.anchors
    if a is None or pipe is None:
        return {}
    values = {'anchors_topic': cam.anchor_topics[0], 'anchor_messages': str(a.messages),
              'frames_with_anchors': str(a.paired),
              'frames_without_anchors': str(a.unpaired),
              'frames_with_bad_anchors': str(a.bad)}
    if a.messages and a.problem:  # why the newest frame got none, while messages do arrive
        values['anchors_problem'] = a.problem
    if pipe.depth_mode() != 'fitted':
        return values
    # Times metres stopped while anchor messages kept arriving (fit_state says why now).
    values['metre_dropouts'] = str(cam.metre_dropouts)
    rep = pipe.fit_report(cam.name)
    values.update({
        'anchors_received': str(rep.received), 'anchors_used': str(rep.used),
        'anchors_inliers': str(rep.inliers), 'scale': f'{rep.scale:.6g}',
        'shift': f'{rep.shift:.6g}', 'residual_absrel': f'{rep.residual:.4f}',
        'fit_age_s': f'{rep.age:.3f}', 'fit_state': rep.state or 'no frames yet',
        'fit_held': str(rep.held).lower(),
        'metric_suspended': str(bool(rep.state) and not rep.metric).lower()})
    return values


class Diagnostics:
    """Stage timings and batch sizes of the whole node, and the /diagnostics publisher."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.stages = Stats()
        self.batch_sizes: Dict[int, int] = {}
        self._pub: Any = None
        self._timer: Any = None

    def count_batch(self, size: int) -> None:
        """Count one forward of size frames."""
        with self.stages.lock:
            self.batch_sizes[size] = self.batch_sizes.get(size, 0) + 1

    def open(self, period: float, statuses: Callable[[], List[DiagnosticStatus]]) -> None:
        """Publish statuses() on /diagnostics every period seconds (steady time).

        At each activation: the batch counts start again, as the pipeline's forwards and
        backend builds do (batches and forwards of one activation, never of two).
        """
        with self.stages.lock:
            self.batch_sizes.clear()
        self._pub = self.node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        # On the steady clock: under use_sim_time a paused bag must not stop the reports.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._timer = self.node.create_timer(period, lambda: self._publish(statuses()),
                                             clock=steady)

    def _publish(self, statuses: List[DiagnosticStatus]) -> None:
        if self._pub is None:
            return
        arr = DiagnosticArray()
        arr.header.stamp = self.node.get_clock().now().to_msg()
        arr.status = statuses
        self._pub.publish(arr)

    def close(self) -> None:
        """Stop reporting."""
        if self._timer is not None:
            self.node.destroy_timer(self._timer)
        if self._pub is not None:
            self.node.destroy_publisher(self._pub)
        self._pub = self._timer = None

    def statuses(self, cameras: List[Any], named: bool, pipe: Any,
                 graph: Optional[Callable[[Any], Optional[Heard]]] = None
                 ) -> List[DiagnosticStatus]:
        """Build the statuses: the node, then one per named camera.

        Without named cameras the node's status also holds its camera's counters and latency.
        graph(camera): what the ROS graph says of the camera's topics (CameraIO.heard).
        """
        fqn = self.node.get_fully_qualified_name()
        node_values: Dict[str, str] = {}
        idle = False
        if not named:
            node_values, idle = cameras[0].stats.report()
        node_values.update(self.stages.stage_p50())
        with self.stages.lock:
            sizes = dict(sorted(self.batch_sizes.items()))
        batches = sum(sizes.values())
        node_values['batches'] = str(batches)
        node_values['mean_batch_size'] = \
            f'{sum(k * v for k, v in sizes.items()) / batches:.2f}' if batches else 'nan'
        node_values['max_batch_size'] = str(max(sizes, default=0))
        if pipe:
            # Network forwards: one per batch for a checkpoint serving depth and segmentation.
            node_values['forwards'] = str(pipe.forwards)
            # Sessions, engines or compiles built; one after activation made a frame wait.
            built = pipe.backend_builds
            node_values['backend_builds'] = ', '.join(
                f'{k} {v}' for k, v in sorted(built.items())) or '0'
            after = pipe.builds_after_prepare
            if after is not None:
                node_values['backend_builds_after_activation'] = str(after)
            node_values.update(pipe.describe())
        if not named:
            node_values['input_topic'] = cameras[0].image_topic
            node_values.update(heard_values(graph(cameras[0]) if graph else None))
            node_values.update(anchor_values(cameras[0], pipe))
            node_values.update(cameras[0].notes)
            return [_status(status_name(fqn), node_values, idle)]
        node_values['cameras'] = ', '.join(c.name for c in cameras)
        out = [_status(status_name(fqn), node_values, False)]
        for cam in cameras:
            values, cam_idle = cam.stats.report()
            values['input_topic'] = cam.image_topic
            values.update(heard_values(graph(cam) if graph else None))
            values.update(anchor_values(cam, pipe))
            values.update(cam.notes)
            out.append(_status(status_name(fqn, cam.name), values, cam_idle))
        return out
