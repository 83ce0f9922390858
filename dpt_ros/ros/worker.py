# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The node's one worker thread: jobs, then batches of frames down the one frame road.

One worker thread does all torch work (loading, moving, every frame): on the CPU a forward from
a thread other than the one whose OpenMP pool ran the loading is slower, and on CUDA it keeps
the current device and stream in one thread. Each batch goes down dpt_ros.core.frames: decoded,
calibrated, paired with anchors, run one forward per network input, serialized to CDR. In
depth.mode fitted, and with a prompted model, a frame becomes ready once its anchor message
(stamped at or after it) is in, or after anchors.max_age (the scheduler's gate): the pairing
dpt_bag makes. With output.overlap a second thread publishes a batch's outputs while the worker
runs the next forward (scheduler.Handoff: one batch in flight, the worker waits for it, nothing
queues). Teardown runs as a job (detach): between batches, never under a frame being decoded.
"""

from __future__ import annotations

import math
import signal
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

from sensor_msgs.msg import CompressedImage

from dpt_ros.core import frames, outputs
from dpt_ros.core.anchors import AnchorError
from dpt_ros.core.config import Config
from dpt_ros.core.conversions import FrameError, stamp_ns
from dpt_ros.core.frames import FrameIn
from dpt_ros.core.geometry import IntrinsicsError
from dpt_ros.core.inputs import ANCHORS
from dpt_ros.core.outputs import Result
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.core.reports import kind_of, Throttle
from dpt_ros.ros.cameras import Camera
from dpt_ros.ros.diagnostics import Diagnostics, POINTS_NO_INFO
from dpt_ros.ros.scheduler import Handoff, Job, Scheduler, Taken

Done = List[Tuple[FrameIn, Result]]  # one forward's frames and results
# How often Worker.run looks whether the worker thread it waits on is still there.
JOB_POLL_S = 0.25


class Owner(Protocol):
    """What the worker reads from the node it works for (cfg and pipeline change live)."""

    node: Any                   # the rclpy node: context, clock, logger
    cfg: Config
    pipeline: Optional[Pipeline]
    cameras: List[Camera]
    diagnostics: Diagnostics
    warn: Throttle              # a kind of problem at most once per period
    once: Throttle              # a kind of problem once for good


class Worker:
    """The worker thread of a configured node, its frame slots and its publishing hand-off."""

    def __init__(self, rt: Owner) -> None:
        self.rt = rt
        self._by_name = {c.name: c for c in rt.cameras}
        self.scheduler = Scheduler(list(self._by_name), self.gate)
        self.handoff = Handoff(on_error=self.publish_failed)
        self.building: Optional[Pipeline] = None  # being warmed up on this thread
        self._thread = threading.Thread(target=self._work, name='dpt_worker', daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the worker thread runs."""
        return self._thread.is_alive()

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the worker thread and return its result (raise what it raised).

        On Ctrl-C meanwhile, let fn finish (a process that exits while a thread is inside
        torch's C++ aborts), stop the worker, then re-raise. When the worker thread has ended
        (stopped, or left after rclpy shut down under a frame) fn runs here instead: nothing
        else runs on the worker's state any more, and a transition must not wait forever.
        """
        job = self.scheduler.submit(fn)
        try:
            if not self._wait(job):
                job()
        except BaseException:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the second Ctrl-C of launch
            building = self.building
            if building is not None:
                building.cancel()  # an engine build stops at its next step
            self.scheduler.stop()
            self._wait(job)  # one never taken is not run: the node is stopping
            self._thread.join(timeout=10.0)
            raise
        return job.result()

    def _wait(self, job: Job) -> bool:
        """Wait until the worker ran job (True), or until it ended without taking it (False)."""
        while not job.done.wait(JOB_POLL_S):
            if not self._thread.is_alive() and self.scheduler.withdraw(job):
                return False
        return True

    def stop(self) -> None:
        """Stop publishing and the thread (a batch being published finishes first)."""
        self.handoff.close()  # wakes a worker waiting to hand a batch over
        self.scheduler.stop()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=10.0)
        self.handoff.stop()

    def gate(self, camera: str, msg: Any) -> Optional[float]:
        """Return how long a frame may wait for its anchor message, None when it is ready.

        depth.mode fitted, or a prompted model (Prompt Depth Anything: the anchors are its
        prompt): a frame waits, at most anchors.max_age, while its camera's anchors are live
        and none stamped at or after the frame has arrived (an aligned depth image usually
        comes after its colour frame): it then pairs with the message dpt_bag pairs.
        Before the first anchor message, a frame waits when the anchor topic has a publisher
        (a stream about to start). Called by the scheduler under its lock; cheap.
        """
        cam, cfg, pipe = self._by_name.get(camera), self.rt.cfg, self.rt.pipeline
        anchors = cam.anchors if cam is not None else None
        if anchors is None or cfg is None or pipe is None or not pipe.uses_anchors(cfg):
            return None
        if anchors.messages == 0:
            topic = cam.topic(ANCHORS)
            return cfg.anchors.max_age if self.rt.node.count_publishers(topic) else None
        # Live: a message within a second past max_age (dpt_bag's patience on log time).
        if not anchors.pending(stamp_ns(msg.header), cfg.anchors.max_age + 1.0,
                               cfg.anchors.max_age):
            return None
        return cfg.anchors.max_age

    # ------------------------------------------------------------------ the thread

    def _work(self) -> None:
        """Run jobs and batches until stopped."""
        rt, scheduler, by_name = self.rt, self.scheduler, self._by_name
        while True:
            item = scheduler.next(lambda: rt.cfg.batch.max_size,
                                  lambda: rt.cfg.batch.max_wait_ms / 1e3)
            if item is None:
                return
            if isinstance(item, Job):
                item()
                del item  # its result may be a pipeline: hold no reference while waiting
                continue
            if rt.pipeline is None:
                continue  # frames that arrived just before deactivation
            taken = [(by_name[t.camera], t) for t in item]
            try:
                self.handle_batch(taken)
            except Exception as exc:  # noqa: B902 - the worker must outlive any frame
                if scheduler.stopped or not rt.node.context.ok():
                    return  # Ctrl-C: rclpy shut the context down while a frame was in flight
                for cam, _ in taken:
                    cam.stats.add_error()
                rt.warn('internal', f'frame failed: {exc!r}\n{traceback.format_exc()}')

    # ------------------------------------------------------------------ one batch

    def frame(self, cam: Camera, taken: Taken, cfg: Config) -> Optional[FrameIn]:
        """Decode one taken frame for the batch; None when no one listens or it is unusable."""
        rt = self.rt
        want = cam.wanted()
        if not want:
            return None  # no one listens: spend nothing
        try:
            f = FrameIn.decode(taken.msg, isinstance(taken.msg, CompressedImage), rt.pipeline,
                               camera=cam.name, want=want, origin=(cam, taken))
        except FrameError as exc:
            cam.stats.add_error()
            rt.warn('frame' + cam.name, f'skipping frame from {cam.image_topic}: {exc}')
            return None
        except Exception as exc:  # noqa: B902 - one camera's frame never fails the batch
            cam.stats.add_error()
            rt.warn('frame' + cam.name, f'skipping frame from {cam.image_topic}: it could not '
                    f'be decoded ({exc!r})')
            return None
        if not f.header.frame_id:
            rt.once(('no_frame_id', cam.name),
                    f'images on {cam.image_topic} have an empty frame_id: every output keeps '
                    "the image's header, so RViz and tf cannot place them. Set the camera "
                    "driver's frame (e.g. its frame_id parameter).")
        anchors = cam.anchors
        # depth.mode fitted, or a model whose prompt the anchors are (Prompt Depth Anything)
        fitted = anchors is not None and rt.pipeline.uses_anchors(cfg)
        if fitted or rt.pipeline.needs_intrinsics(want, cfg):
            self._calibrate(f, cam, cfg)
        cam.points_left_out = ''
        if f.intrinsics is None:
            if 'points' in want:  # someone listens: /diagnostics says why none come
                cam.points_left_out = (f'{POINTS_NO_INFO} {cam.info_topic}'
                                       if cam.camera_info is None
                                       else 'none: camera_info unusable (see the log)')
            f.want = want - {'points'}
        if fitted:  # anchor decoding is timed as part of the frame's decode stage
            t1 = time.perf_counter()
            try:
                f.pair(anchors, cfg.anchors)
            except AnchorError as exc:
                # Throttled per camera and kind of problem: a driver sending the same bad
                # message at 30 Hz logs once a period, a second problem still gets its line.
                rt.warn(f'anchors:{cam.name}:{kind_of(str(exc))}',
                        f'skipping the anchors on {cam.anchor_topics[0]} for a frame of '
                        f'{cam.label}: {exc}')
            f.decode_ms += (time.perf_counter() - t1) * 1e3
        return f

    def _calibrate(self, f: FrameIn, cam: Camera, cfg: Config) -> None:
        """Give f its camera's intrinsics, or none with a warning."""
        if cam.camera_info is None:
            self.rt.once(('no_info', cam.name),
                         f'no camera_info received on {cam.info_topic} yet: publishing depth '
                         'without points and depth/camera_info until it arrives.')
            return
        try:
            f.calibrate(cam.calibration, cfg.input.rectified)
        except (IntrinsicsError, ValueError, TypeError, IndexError) as exc:
            self.rt.warn('bad_info' + cam.name, f'camera_info on {cam.info_topic} unusable '
                         f'({exc}); publishing depth without points for this frame.')

    def handle_batch(self, taken: List[Tuple[Camera, Taken]]) -> None:
        """Decode, run frames of one network input as one forward, publish per camera."""
        rt = self.rt
        cfg = rt.cfg  # one snapshot for the whole batch
        batch = [f for f in (self.frame(cam, t, cfg) for cam, t in taken) if f is not None]
        # The model runs under the same snapshot: a live change meanwhile waits for the next.
        for done in frames.run(rt.pipeline, batch, cfg):
            rt.diagnostics.count_batch(len(done))
            for f, result in done:
                self._note_fit(f, result, cfg)
                f.origin[0].notes = self._notes(f, result, cfg)  # the newest frame's
            # Fill and publish on the publishing thread while this one runs the next forward
            # (waits here while the previous batch is still being published).
            self.handoff.submit(lambda done=done: self.publish_batch(done, cfg),
                                cfg.output.overlap)

    def _notes(self, f: FrameIn, result: Result, cfg: Config) -> Dict[str, str]:
        """Return a frame's facts for /diagnostics: the result's, and what was left out, why.

        An output someone subscribes to and gets nothing of is named once in the log and in
        the `unpublished` value while it lasts (points without calibration: `points`).
        """
        cam = f.origin[0]
        notes = dict(result.notes)
        if cam.points_left_out:  # set by frame(), one frame per camera a batch
            notes['points'] = cam.points_left_out
        info = f.camera_info is not None
        normals_from = self.rt.pipeline.normals_source(cfg)
        why = []
        for name in outputs.unpublished(result, f.want, info):
            reason, by_setting = outputs.why_unpublished(name, result, cfg, info, normals_from)
            pub = cam.pubs.get(name)
            topic = pub.topic_name if pub is not None else name
            why.append(f'{topic} ({reason})')
            if by_setting:  # lasts until the setting changes: the log says it once
                self.rt.once(('unpublished', cam.name, name, reason),
                             f'{cam.label}: {topic} has a subscriber but is not published: '
                             f'{reason}.')
        if why:
            notes['unpublished'] = '; '.join(why)
        return notes

    def _note_fit(self, f: FrameIn, result: Result, cfg: Config) -> None:
        """Log when a camera's metres come back (the stop was warned); count drop-outs.

        A drop-out: metres stop after a fit while anchor messages kept arriving (one stamped
        more than anchors.max_age after the last accepted fit is in): the anchors did not stop.
        """
        cam = f.origin[0]
        anchors, rep = cam.anchors, result.fit
        if anchors is None or result.mode != 'fitted' or rep is None:
            return
        if cam.suspended and rep.metric:
            self.rt.node.get_logger().info(
                f'{cam.label}: anchors are back; publishing metres again.')
        elif not cam.suspended and not rep.metric and math.isfinite(rep.age):
            last_fit = f.stamp_ns - rep.age * 1e9
            if anchors.newest > last_fit + cfg.anchors.max_age * 1e9:
                cam.metre_dropouts += 1
        cam.suspended = not rep.metric

    # ------------------------------------------------------------------ publishing

    def publish_batch(self, done: Done, cfg: Config) -> None:
        """Publish every camera's outputs of one forward (publishing thread, or the worker)."""
        for f, result in done:
            try:
                self._publish(f, result, cfg)
            except Exception:  # noqa: B902 - one camera's failure must not lose the others'
                if not self.rt.node.context.ok():
                    return  # Ctrl-C: rclpy shut the context down while publishing
                f.origin[0].stats.add_error()
                self.publish_failed()

    def publish_failed(self, _exc: Optional[BaseException] = None) -> None:
        """Warn about a failed publication (inside its except block)."""
        self.rt.warn('publish', f'publishing failed:\n{traceback.format_exc()}')

    def _publish(self, f: FrameIn, result: Result, cfg: Config) -> None:
        cam, taken = f.origin
        for w in result.warnings:
            self.rt.warn('result:' + cam.name + kind_of(w), f'{cam.name}: {w}' if cam.name else w)
        t1 = time.perf_counter()
        # Serialized CDR straight from the arrays, copied once into each publisher's own
        # buffer, which rcl publishes in place (ros/serialized.py).
        senders = []
        for o, out in frames.serialized(f, result, cfg.depth.encoding,
                                        {n for n in f.want if cam.subscribed(n)}):
            senders.append(cam.senders[o.name])
            senders[-1].write(out)
        t2 = time.perf_counter()
        for sender in senders:
            sender.send()
        t3 = time.perf_counter()
        timings = dict(result.timings, fill=(t2 - t1) * 1e3, publish=(t3 - t2) * 1e3)
        total_ms = (time.monotonic() - taken.arrived) * 1e3
        now_ns = self.rt.node.get_clock().now().nanoseconds
        age_ms: Optional[float] = (now_ns - f.stamp_ns) / 1e6
        if not now_ns:  # use_sim_time with no /clock yet: ROS time is 0, an age would be junk
            age_ms = None
            self.rt.once('sim-time-no-clock',
                         'use_sim_time is true but no /clock has arrived: frames are processed '
                         'and stamped as they come, frame ages are not measured '
                         '(ros2 bag play --clock publishes /clock).')
        cam.stats.add_timings(timings, total_ms, age_ms)
        self.rt.diagnostics.stages.add_timings(timings, total_ms, age_ms)
