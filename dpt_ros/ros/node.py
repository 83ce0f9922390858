# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The ROS 2 nodes: DptNode (active from the start) and DptLifecycleNode (managed).

Both hold a Runtime, whose steps the transitions run: configure reads and validates the
parameters (parameters.py), starts the worker (worker.py) and loads the weights into host
memory; activate moves them to the device, advertises and subscribes (cameras.py) and
reports (diagnostics.py); deactivate undoes activate and frees device memory; cleanup
releases everything configure made. Everything the node computes comes from the core
(dpt_ros.core), which has no rclpy.
"""

from __future__ import annotations

import gc
import os
import re
import signal
import sys
import traceback
from typing import Any, Callable, Dict, List, Optional

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node

from dpt_ros.core.config import Config, ConfigError, DEFAULT_DEPTH_MODEL, parse_sizes
from dpt_ros.core.models import load_models, ModelLoadError, move_model, resolve_device
from dpt_ros.core.outputs import DEPTH_TASK, SEGMENTATION_TASK
from dpt_ros.core.pipeline import check_models, Pipeline
from dpt_ros.core.reports import Throttle
from dpt_ros.ros import fastdds
from dpt_ros.ros.cameras import Camera, CameraIO
from dpt_ros.ros.diagnostics import Diagnostics
from dpt_ros.ros.parameters import given, Parameters
from dpt_ros.ros.serialized import zero_copy_reason
from dpt_ros.ros.worker import Worker

RCLError = _rclpy.RCLError


class Runtime:
    """What a dpt node runs, held by DptNode and DptLifecycleNode: the steps of its transitions.

    configure: read and validate the parameters, start the worker, load the weights into host
    memory; activate: move them to the device, advertise, subscribe; deactivate: unsubscribe,
    unadvertise, free device memory; cleanup: free everything. All torch work runs on the
    worker thread (worker.py).
    """

    def __init__(self, node: Node, pipeline: Optional[Pipeline]) -> None:
        """Declare the parameters (ConfigError for a wrongly typed or unknown one)."""
        self.node = node
        warning = (lambda text: node.get_logger().warning(text))
        self.warn = Throttle(warning)            # a kind of problem at most once per period
        self.once = Throttle(warning, None)      # a kind of problem once for good
        self.given_pipeline = pipeline
        self.pipeline: Optional[Pipeline] = None
        self.host_models: Dict[str, Any] = {}   # task -> LoadedModel kept between activations
        self.cfg: Optional[Config] = None
        self.cameras: List[Camera] = []
        self.worker: Optional[Worker] = None
        self.diagnostics = Diagnostics(node)
        self.io = CameraIO(node, self.once)
        managed = not getattr(node, 'starts_active', True)
        self.parameters = Parameters(node, self.apply, self.state if managed else None)

    def state(self) -> str:
        """Return 'unconfigured', 'inactive' or 'active' (what the transitions made)."""
        if self.cfg is None:
            return 'unconfigured'
        return 'inactive' if self.pipeline is None else 'active'

    def apply(self, cfg: Config) -> None:
        """Take a live parameter change (ConfigError if it does not fit the loaded models)."""
        if self.pipeline is not None:
            self.pipeline.update(cfg)  # checked against the model; applies next frame
        elif self.given_pipeline is not None and self.cfg is not None:
            self.given_pipeline.check(cfg)
        elif self.cfg is not None:
            # Inactive: the weights wait in host memory; refuse now what activate would.
            check_models(cfg, self.host_models.get(DEPTH_TASK),
                         self.host_models.get(SEGMENTATION_TASK))
        if self.cfg is not None:
            self.cfg = cfg

    # ------------------------------------------------------------------ transitions

    def configure(self) -> None:
        """Validate the parameters, start the worker and load the weights into host memory."""
        self.cfg = self.parameters.read()
        self.cameras = [Camera(n) for n in (self.cfg.cameras or ('',))]
        self.worker = Worker(self)
        if self.given_pipeline is None:
            try:
                self.worker.run(self._load_host_models)
            except ModelLoadError as exc:
                raise ModelLoadError(f'{exc}{self._default_model_hint()}') from exc

    def _default_model_hint(self) -> str:
        """Why the default checkpoint was loaded, when no parameter named one."""
        m = self.cfg.model if self.cfg is not None else None
        if m is None or m.depth != DEFAULT_DEPTH_MODEL or m.segmentation or \
                'model.depth' in given(self.node):
            return ''
        return (f' (No model.depth was given, so the default {DEFAULT_DEPTH_MODEL} was tried: '
                'if a params file sets it, check that its top-level key is this node '
                f"({self.node.get_fully_qualified_name()}, or its name '{self.node.get_name()}') "
                "or '/**'.)")

    def activate(self) -> None:
        """Put the models on the device, then advertise, subscribe and report."""
        self.pipeline = self.worker.run(self._make_pipeline)
        labels = self.pipeline.labels
        self.parameters.declare_class_names(labels)
        self.io.open(self.cameras, self.cfg, lambda task: self.pipeline.model_for(task)
                     is not None, self.worker.scheduler, labels)
        self.diagnostics.open(self.cfg.diagnostics.period, self.diagnostics_status)
        self.worker.handoff.open()
        info = self.pipeline.describe()
        inputs = '; '.join(' + '.join(t for _, t in c.inputs) for c in self.cameras)
        self.node.get_logger().info(
            f"dpt_ros ready: {', '.join(f'{k}={v}' for k, v in info.items())}; input {inputs}")
        if 'fastrtps' in rclpy.get_rmw_implementation_identifier():
            # Which transport settings large frames get (config/fastdds_large_frames.xml or
            # the user's): otherwise only the process environment tells.
            major = fastdds.fastdds_major()
            profile = fastdds.profile_in_effect(os.environ, major)
            if profile:
                self.node.get_logger().info(f'Fast DDS profile: {profile}')
            ignored = fastdds.ignored_profile(os.environ, major)
            if ignored:
                self.node.get_logger().warning(ignored)
        reason = zero_copy_reason()
        if reason:
            self.node.get_logger().info(
                f'publishing outputs through rclpy (one more copy per message): {reason}')
        if labels:
            self.node.get_logger().info(f'segmentation classes: {labels}')

    def deactivate(self) -> None:
        """Stop subscribing and publishing, drop waiting frames, free device memory."""
        self._close_topics()
        if self.worker is not None:
            self.worker.run(self._free_device)

    def cleanup(self) -> None:
        """Release everything configure made: the worker, the weights, the cameras."""
        self._close_topics()
        self._stop_worker()
        if self.pipeline is not None:
            self.pipeline.close()
        self.pipeline = None
        self.host_models = {}
        self.cameras = []
        self.cfg = None
        gc.collect()

    def close(self) -> None:
        """Stop the worker and the publishing, free the models (idempotent)."""
        for pipe in (self.worker and self.worker.building, self.pipeline):
            if pipe is not None:
                pipe.cancel()  # an engine build stops at its next step
        self._stop_worker()  # no batch is published after this: the publishers can go
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None
        self.host_models = {}

    def _close_topics(self) -> None:
        """Unsubscribe, finish (or drop) the batch being published, then unadvertise."""
        self.diagnostics.close()
        self.io.unsubscribe()  # no frame or anchor message comes in after this
        worker = self.worker
        if worker is not None:
            worker.scheduler.clear()
            # From here on no batch is published; one in its forward now is dropped at its
            # hand-off.
            worker.handoff.close()
        if worker is not None and worker.alive:
            # A job runs between batches: no frame is being decoded or paired while the
            # cameras' anchors and publishers go.
            pubs = worker.run(self.io.detach)
        else:
            pubs = self.io.detach()
        self.io.unadvertise(pubs)

    def _stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.worker = None

    # ------------------------------------------------------------------ worker jobs

    def _load_host_models(self) -> None:
        """Load every configured checkpoint into host memory (worker thread).

        One checkpoint named in model.depth and model.segmentation loads once: both tasks
        hold the same model, whose one forward gives both.
        """
        cfg = self.cfg
        depth, seg = load_models(cfg.model, self.node.get_logger().info, on_host=True,
                                 normals=cfg.normals.source != 'depth',
                                 prompts=cfg.anchors.source != 'none')
        self.host_models = {task: m for task, m in ((DEPTH_TASK, depth),
                                                    (SEGMENTATION_TASK, seg)) if m is not None}

    def _make_pipeline(self) -> Pipeline:
        """Move the host models to the device and build the pipeline (worker thread)."""
        if self.given_pipeline is not None:
            self.given_pipeline.update(self.cfg)
            return self.given_pipeline
        device = resolve_device(self.cfg.model.device)
        for model in {id(m): m for m in self.host_models.values()}.values():
            move_model(model, device)
        pipe = Pipeline(self.cfg, log=self.node.get_logger().info,
                        depth_model=self.host_models.get(DEPTH_TASK),
                        seg_model=self.host_models.get(SEGMENTATION_TASK))
        # First-frame work (engine build or load, graph capture) now, not on a robot's first
        # frame; Ctrl-C meanwhile cancels it (Worker.run).
        self.worker.building = pipe
        try:
            # Checkpoints whose input follows the frame size: the sizes the robot's cameras send
            pipe.prepare_all(parse_sizes(self.cfg.model.warmup_sizes))
        finally:
            self.worker.building = None
        return pipe

    def _free_device(self) -> None:
        """Back to host memory: release the pipeline, the weights go home (worker thread)."""
        pipe, self.pipeline = self.pipeline, None
        if pipe is not None and pipe is not self.given_pipeline:
            pipe.release()

    # ------------------------------------------------------------------ reporting

    def diagnostics_status(self) -> List[Any]:
        """Build the /diagnostics statuses: the node, then one per named camera."""
        return self.diagnostics.statuses(self.cameras, bool(self.cfg.cameras), self.pipeline,
                                         self.io.heard)


class DptNode(Node):
    """Depth, point clouds and segmentation from one or more cameras with DPT models."""

    starts_active = True  # configured and active from the start

    def __init__(self, node_name: str = 'dpt', *, pipeline: Optional[Pipeline] = None,
                 **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.runtime = Runtime(self, pipeline)
        if not self.starts_active:
            return
        try:
            self.runtime.configure()
            self.runtime.activate()
        except BaseException:
            self.runtime.close()
            raise

    @property
    def config(self) -> Optional[Config]:
        """The settings in force (None before configuration)."""
        return self.runtime.cfg

    @property
    def pipeline(self) -> Optional[Pipeline]:
        """The pipeline this node runs (None unless active)."""
        return self.runtime.pipeline

    @property
    def cameras(self) -> List[Camera]:
        """The cameras this node serves (one unnamed camera without `cameras`)."""
        return list(self.runtime.cameras)

    @property
    def dropped(self) -> int:
        """Frames replaced by a newer one before the worker took them (all cameras)."""
        return sum(c.stats.dropped for c in self.runtime.cameras)

    @property
    def processed(self) -> int:
        """Frames fully processed and published (all cameras)."""
        return sum(c.stats.processed for c in self.runtime.cameras)

    def diagnostics_status(self) -> List[Any]:
        """Build the /diagnostics statuses: the node, then one per named camera."""
        return self.runtime.diagnostics_status()

    def close(self) -> None:
        """Stop the worker and the publishing, free the models (idempotent)."""
        self.runtime.close()

    def destroy_node(self) -> None:
        """Stop the worker before the node's handles go away."""
        if hasattr(self, 'runtime'):
            self.runtime.close()
        super().destroy_node()


class DptLifecycleNode(DptNode, LifecycleNode):
    """The same node, managed: `ros2 lifecycle set`, nav2's lifecycle manager.

    unconfigured: parameters declared, nothing loaded; configure: parameters validated,
    weights loaded into host memory; activate: weights on the device, topics advertised and
    subscribed; deactivate: topics gone, device memory freed (weights stay in host memory);
    cleanup / shutdown: everything released. A failed transition logs why and leaves the
    node in the state it came from.
    """

    starts_active = False  # unconfigured until told

    def __init__(self, node_name: str = 'dpt', *, pipeline: Optional[Pipeline] = None,
                 **kwargs: Any) -> None:
        super().__init__(node_name, pipeline=pipeline, **kwargs)
        # rclpy (Humble to Kilted) raises out of the change_state service for a transition
        # the current state does not have (`ros2 lifecycle set` activate while unconfigured),
        # which stops the executor: answer success false instead, as later rclpy does. There
        # is no public hook for that: LifecycleNode.__on_change_state is name-mangled and
        # the service is LifecycleNode._service_change_state (rclpy/lifecycle/node.py).
        # test_lifecycle.py's test_configure_failure_leaves_it_unconfigured pins it.
        service = getattr(self, '_service_change_state', None)
        if service is not None:
            service.callback = self._refuse_unknown_transitions(service.callback)

    def _refuse_unknown_transitions(self, handle: Callable[[Any, Any], Any]
                                    ) -> Callable[[Any, Any], Any]:
        def change_state(request: Any, response: Any) -> Any:
            try:
                return handle(request, response)
            except RCLError as exc:
                t = request.transition
                self.get_logger().error(
                    f"transition '{t.label or t.id}' is not possible from this state: {exc}")
                response.success = False
                return response
        return change_state

    def _transition(self, name: str, step: Callable[[], None],
                    undo: Callable[[], None]) -> TransitionCallbackReturn:
        try:
            step()
        except (ConfigError, ModelLoadError) as exc:
            self.get_logger().error(f'{name} failed: {exc}')
            undo()
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # noqa: B902 - any other failure: log it, then ERROR
            self.get_logger().error(f'{name} failed: {exc!r}\n{traceback.format_exc()}')
            undo()
            return TransitionCallbackReturn.ERROR
        self.get_logger().info(f'{name}: done')
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate the parameters and load the weights into host memory."""
        return self._transition('configure', self.runtime.configure, self.runtime.cleanup)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Move the weights to the device, advertise and subscribe."""
        return self._transition('activate', self.runtime.activate, self.runtime.deactivate)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop subscribing and publishing; free device memory."""
        return self._transition('deactivate', self.runtime.deactivate, self.runtime.deactivate)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the weights, the worker and the cameras."""
        return self._transition('cleanup', self.runtime.cleanup, self.runtime.cleanup)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything, from whichever state."""
        return self._transition('shutdown', self.runtime.cleanup, self.runtime.cleanup)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything after a failed transition; back to unconfigured."""
        self.runtime.cleanup()
        return TransitionCallbackReturn.SUCCESS


def rcl_reason(exc: BaseException) -> str:
    """rclpy.init's error without rcl's source locations, with what to check."""
    text = re.sub(r', at [^,]*:\d+', '', str(exc)).strip()
    if 'params file' in text:
        text += (' (check that the file exists and is YAML that ROS reads: node name, then '
                 'ros__parameters; every item of a list of one type, e.g. quote numbers in a '
                 "list of names: ['sky', '2'])")
    return text


def _run(make_node: Callable[[], Node], program: str, args: Optional[List[str]]) -> int:
    """Spin a node until Ctrl-C; exit 2 with one message on a bad parameter or model."""
    try:
        rclpy.init(args=args)
    except RCLError as exc:  # the command line or a params file ROS cannot read
        print(f'{program}: error: {rcl_reason(exc)}', file=sys.stderr, flush=True)
        return 2
    node = None
    try:
        node = make_node()
        rclpy.spin(node)
    except (ConfigError, ModelLoadError) as exc:
        print(f'{program}: error: {exc}', file=sys.stderr, flush=True)
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


def main(args: Optional[List[str]] = None) -> int:
    """Entry point of `dpt_node`: configured and active from the start."""
    return _run(DptNode, 'dpt_node', args)


def lifecycle_main(args: Optional[List[str]] = None) -> int:
    """Entry point of `dpt_lifecycle_node`: starts unconfigured, driven by lifecycle services."""
    return _run(DptLifecycleNode, 'dpt_lifecycle_node', args)


if __name__ == '__main__':
    sys.exit(main())
