# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""One camera frame in -> all requested outputs out, with per-stage timings (no rclpy)."""

from __future__ import annotations

import contextlib
import functools
from functools import cached_property
import gc
import logging
import threading
import time
from typing import (AbstractSet, Any, Callable, ContextManager, Dict, Iterable, Iterator, List,
                    Optional, Sequence, Set, Tuple)

import numpy as np
import torch

from dpt_ros.core import memory
from dpt_ros.core import normals as nm
from dpt_ros.core import outputs
from dpt_ros.core import postprocess as post
from dpt_ros.core import prompt as pr
from dpt_ros.core.backends import EAGER
from dpt_ros.core.backends.runner import BackendRunner
from dpt_ros.core.config import Config, ConfigError, DEFAULT_DEPTH_MAX
from dpt_ros.core.conversions import Frame, FrameError
from dpt_ros.core.geometry import Backprojector, Intrinsics
from dpt_ros.core.metric import Anchors, FitReport, FrameFit, MetricTracker
from dpt_ros.core.models import (HEAD_DEPTH, HEAD_FOV, HEAD_NORMALS, HEAD_SEGMENTATION,
                                 load_model, load_models, LoadedModel, move_model)
from dpt_ros.core.outputs import (DEPTH_TASK, DOWNLOAD, FIT, FORWARD, GEOMETRY, POSTPROCESS,
                                  PREPROCESS, Result, SEGMENTATION_TASK, UPLOAD)
from dpt_ros.core.preprocess import (LAYOUTS, Preprocessor, prompt_as, prompt_depth, to_rgb,
                                     to_rgb8)

LOG = logging.getLogger('dpt_ros')


class _Clock:
    """Stage timings: CUDA events on the pipeline's stream (no syncs), perf_counter on the CPU."""

    def __init__(self, device: torch.device, stream: Optional[torch.cuda.Stream] = None) -> None:
        self.cuda = device.type == 'cuda'
        self.stream = stream
        self.marks: List[Tuple[str, object]] = [('start', self._now())]

    def _now(self) -> object:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            # On the stream that does the work: the current stream of the current device is
            # another GPU's under cuda:N, or the legacy default stream.
            ev.record(self.stream)
            return ev
        return time.perf_counter()

    def mark(self, stage: str) -> None:
        self.marks.append((stage, self._now()))

    def result(self) -> Dict[str, float]:
        if self.cuda:
            # elapsed_time refuses unless both events have completed, and the last one was
            # recorded after the download's sync: wait for it (every earlier one precedes it).
            self.marks[-1][1].synchronize()  # type: ignore[union-attr]
        out: Dict[str, float] = {}
        for (_, a), (name, b) in zip(self.marks, self.marks[1:]):
            ms = a.elapsed_time(b) if self.cuda else (b - a) * 1e3  # type: ignore[union-attr]
            out[name] = out.get(name, 0.0) + ms
        return out


def cuda_setup(device: torch.device) -> torch.cuda.Stream:
    """Per-process CUDA settings for fixed-shape inference; the pipeline's own stream."""
    # Input shapes are fixed per camera: let cuDNN time its algorithms once per shape.
    torch.backends.cudnn.benchmark = True
    with torch.cuda.device(device):
        torch.cuda.synchronize()  # weights were copied on the default stream
        return torch.cuda.Stream(device)


class _Batch:
    """One batch on its way through the stages: what each stage leaves for the next."""

    def __init__(self, pipe: 'Pipeline', frames: Sequence[Frame],
                 intrs: Sequence[Optional[Intrinsics]], wanted: AbstractSet[str],
                 anchors: Sequence[Optional[Anchors]], sources: Sequence[str],
                 stamps: Sequence[float], cfg: Optional[Config] = None) -> None:
        # One consistent snapshot per batch (the parts of one forward share the caller's).
        self.cfg = cfg if cfg is not None else pipe.config
        self.frames, self.intrs = frames, intrs
        self.anchors, self.sources, self.stamps = anchors, sources, stamps
        self.rows = outputs.computed(wanted)
        self.height, self.width = frames[0].height, frames[0].width
        self.results = [Result(self.height, self.width) for _ in frames]
        self.mode = pipe.depth_mode(self.cfg)
        self.dmax = pipe.depth_max(self.cfg)
        dm = pipe.depth_model
        self.model_type = dm.model_type if dm is not None else ''
        self.placement = dm.spec.placement(self.height, self.width) if dm is not None else None
        self.excluded = pipe.excluded_ids(self.cfg)
        self.metric = pipe.depth_model is not None and pipe.depth_model.gives_metres
        self.normals_from = pipe.normals_source(self.cfg)  # 'head', 'depth' or ''
        self.tasks: Set[str] = set()  # the tasks whose model output is at camera resolution
        self.pixels: Optional[torch.Tensor] = None  # (B, H, W, C) as the frames came
        self.rgb: Optional[torch.Tensor] = None     # (B, 3, H, W) float 0..255
        self.pixel_values: Dict[int, torch.Tensor] = {}  # model id -> its network input
        self.heads: Dict[int, Tuple[str, ...]] = {}  # model id -> the heads its forward gives
        self.prompt: Optional[torch.Tensor] = None  # (B, 1, h, w) metres: a prompted model's
        self.has_depth = [True] * len(frames)  # False: no depth this frame (no prompt, focal)
        self.flip = False
        self.raw: Optional[torch.Tensor] = None     # depth model output (2B with the flip)
        self.fov: Optional[torch.Tensor] = None     # Depth Pro's field of view (degrees)
        self.normals_raw: Optional[torch.Tensor] = None  # a normals head's (B, 3, h, w)
        self.logits: Optional[torch.Tensor] = None
        self.depth: Optional[torch.Tensor] = None   # (B, H, W) as the checkpoint gives it
        self.flipped: Optional[torch.Tensor] = None
        self.labels: Optional[torch.Tensor] = None
        self.fitted: Optional[torch.Tensor] = None  # inverse depth the fit ran on
        self.fits: List[FrameFit] = []
        self.confidence: Optional[torch.Tensor] = None
        self.out: List[Dict[str, torch.Tensor]] = [{} for _ in frames]
        self.host: List[Dict[str, np.ndarray]] = []

    @cached_property
    def metres(self) -> List[Optional[torch.Tensor]]:
        """Depth in metres per frame (None: not metric, or not fitted)."""
        d, n = self.cfg.depth, len(self.frames)
        if self.depth is None:
            return [None] * n
        if self.mode == 'fitted':
            return [None if f.scale is None or not ok else post.to_metres(
                self.fitted[i], 'affine_inverse', f.scale, f.shift, d.min, self.dmax)
                for i, (f, ok) in enumerate(zip(self.fits, self.has_depth))]
        m = post.to_metres(self.depth, self.mode, d.scale, d.shift, d.min, self.dmax)
        return [None] * n if m is None else [z if ok else None
                                             for z, ok in zip(m, self.has_depth)]

    @cached_property
    def relative(self) -> torch.Tensor:
        """Inverse depth (larger is nearer): as fitted, or over time under depth.temporal."""
        if self.fitted is None:
            return post.relative_inverse(self.depth, self.metric)
        if self.mode == 'relative_inverse' and self.cfg.depth.temporal:
            return torch.stack([self.fitted[i] * f.scale + f.shift
                                for i, f in enumerate(self.fits)])
        return self.fitted

    @cached_property
    def rgb8(self) -> torch.Tensor:
        """The camera images as (B, H, W, 3) uint8 (8-bit frames as they came, no float pass)."""
        rgb8 = to_rgb8(self.pixels, self.frames[0].layout)
        if rgb8 is not None:
            return rgb8
        return self.rgb.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8)

    @cached_property
    def head_normals(self) -> torch.Tensor:
        """(B, H, W, 3) unit normals of the normals head in the optical frame."""
        return nm.head_normals(self.normals_raw, (self.height, self.width), self.model_type,
                               self.placement)


class FrameTensors:
    """One frame's tensors on the device, as an output row's compute reads them (outputs.py).

    What no wanted row reads is never computed: metres, relative depth, the 8-bit image and
    the class colours are made on first use.
    """

    def __init__(self, batch: _Batch, index: int, project: Backprojector,
                 num_labels: int) -> None:
        self._batch = batch
        self._i = index
        self.cfg: Config = batch.cfg
        self.result: Result = batch.results[index]  # for warnings and the cloud's shape
        self.intrinsics: Optional[Intrinsics] = batch.intrs[index]
        self.metric = batch.metric  # the checkpoint outputs metres
        self.project = project
        self.num_labels = num_labels
        self.has_depth = batch.has_depth[index]  # False: the model gave no depth this frame
        self.excluded = batch.excluded  # class ids points.exclude_classes drops, or None

    @property
    def metres(self) -> Optional[torch.Tensor]:
        """(H, W) metres, NaN where invalid; None without metric depth."""
        return self._batch.metres[self._i]

    @property
    def relative(self) -> torch.Tensor:
        """(H, W) inverse depth, larger is nearer."""
        return self._batch.relative[self._i]

    @property
    def confidence(self) -> Optional[torch.Tensor]:
        """(H, W) flip confidence in [0, 1]; None unless it was computed."""
        conf = self._batch.confidence
        return None if conf is None else conf[self._i]

    @property
    def labels(self) -> Optional[torch.Tensor]:
        """(H, W) class ids; None unless segmentation ran."""
        labels = self._batch.labels
        return None if labels is None else labels[self._i]

    @cached_property
    def normals(self) -> Optional[torch.Tensor]:
        """(H, W, 3) unit normals in the optical frame (normals.source), NaN unknown; or None.

        From the normals head, or from the metric depth and the camera's rays (None without
        metres or intrinsics).
        """
        b = self._batch
        if b.normals_from == 'head':
            return b.head_normals[self._i] if b.normals_raw is not None else None
        z, intr = self.metres, self.intrinsics
        if z is None or intr is None or (intr.width, intr.height) != tuple(z.shape[::-1]):
            return None
        rays = self.project.rays(intr, 1, z.device)
        return nm.depth_normals(z[None], rays, self.cfg.normals.max_jump)[0]

    @property
    def rgb8(self) -> torch.Tensor:
        """(H, W, 3) uint8 camera image."""
        return self._batch.rgb8[self._i]

    @cached_property
    def seg_colored(self) -> torch.Tensor:
        """(H, W, 3) uint8 class colours (shared by the colours and the overlay)."""
        return post.colorize_labels(self.labels, self.num_labels)


class Pipeline:
    """Load the configured models once; then turn frames into depth, labels and points."""

    def __init__(self, cfg: Config, log: Callable[[str], None] = LOG.info,
                 depth_model: Optional[LoadedModel] = None,
                 seg_model: Optional[LoadedModel] = None) -> None:
        cfg.validate()
        self._cfg = cfg
        self.log = log
        if cfg.memory.keep_freed:
            memory.keep_freed(log)  # process-wide, before any frame
        self.depth_model = depth_model
        self.seg_model = seg_model
        if depth_model is None and seg_model is None:
            # One checkpoint named in both loads once; its one forward gives both.
            self.depth_model, self.seg_model = load_models(
                cfg.model, log, normals=cfg.normals.source != 'depth',
                prompts=cfg.anchors.source != 'none')
        if self.depth_model is None and cfg.model.depth:
            self.depth_model = load_model(cfg.model.depth, 'depth', cfg.model, log)
        if self.seg_model is None and cfg.model.segmentation:
            self.seg_model = load_model(cfg.model.segmentation, 'segmentation', cfg.model, log)
        self.forwards = 0  # network forwards run (one per model and batch)
        self._previous: Dict[str, Tuple[float, torch.Tensor]] = {}  # source -> prompted output
        self._excluded: Tuple[Tuple[str, ...], Optional[torch.Tensor]] = ((), None)
        first = self.depth_model or self.seg_model
        assert first is not None
        self.device = first.device
        self.check(cfg)
        self._pre: Dict[int, Preprocessor] = {}
        self._project = Backprojector()
        self._tracker = MetricTracker(self.device)
        self._staging: Dict[Tuple, torch.Tensor] = {}
        self._copied: Dict[Tuple, torch.cuda.Event] = {}  # staging key -> its last H2D copy
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._frames = 0  # most camera frames per batch, when prepare was told
        # batch_key -> most frames per forward after one ran out of memory (see process_batch)
        self.batch_limits: Dict[Tuple, int] = {}
        self._prepared_builds: Optional[int] = None  # backend builds when prepare returned
        # model.backend is read-only: one runner for the pipeline's life.
        self.backends = BackendRunner(cfg.model.backend, cfg.model.engine_dir, log,
                                      self._cancel.is_set)
        # All GPU work of this pipeline runs on its own stream, on its own device (cuda:N),
        # from whichever thread calls it: never on the legacy default stream.
        self._stream = cuda_setup(self.device) if self.device.type == 'cuda' else None

    # ------------------------------------------------------------------ settings

    @property
    def config(self) -> Config:
        """The settings in force."""
        return self._cfg

    def update(self, cfg: Config) -> None:
        """Swap in new live settings (validated); applies from the next frame."""
        self._cfg = self.check(cfg.validate())

    def check(self, cfg: Config) -> Config:
        """Return cfg, or raise ConfigError where it does not fit the loaded models.

        Called from the node's executor thread: it checks the classes (check_models) and
        leaves excluded_ids' cache to the frames, whose lookup it would otherwise race.
        """
        return check_models(cfg, self.depth_model, self.seg_model)

    def excluded_ids(self, cfg: Config) -> Optional[torch.Tensor]:
        """Class ids of points.exclude_classes on the device (None when empty); ConfigError.

        Each entry is a class name (case-insensitive) or an id written as digits.
        """
        names = cfg.points.exclude_classes
        if names == self._excluded[0]:
            return self._excluded[1]
        ids = class_ids(names, self.labels)
        ids_t = torch.tensor(ids, dtype=torch.long, device=self.device) if ids else None
        self._excluded = (names, ids_t)
        return ids_t

    @property
    def labels(self) -> List[str]:
        """Segmentation class names (empty without a segmentation model)."""
        return list(self.seg_model.labels) if self.seg_model else []

    def depth_mode(self, cfg: Optional[Config] = None) -> str:
        """Return the depth mode in force, or under cfg ('' without a depth model)."""
        if self.depth_model is None:
            return ''
        return post.effective_mode((cfg or self._cfg).depth.mode, self.depth_model.gives_metres)

    @property
    def prompted(self) -> bool:
        """Whether the depth model takes the anchors as its prompt (Prompt Depth Anything)."""
        return self.depth_model is not None and self.depth_model.needs_prompt

    def uses_anchors(self, cfg: Optional[Config] = None) -> bool:
        """Whether frames need their anchors: depth.mode fitted, or a prompted model."""
        return self.prompted or self.depth_mode(cfg) == 'fitted'

    def normals_source(self, cfg: Optional[Config] = None) -> str:
        """Where normals come from under cfg: 'head', 'depth', or '' without a depth model."""
        dm = self.depth_model
        if dm is None:
            return ''
        src = (cfg or self._cfg).normals.source
        if src == 'auto':
            return 'head' if HEAD_NORMALS in dm.heads else 'depth'
        return src

    def needs_intrinsics(self, want: AbstractSet[str], cfg: Optional[Config] = None) -> bool:
        """Whether frames wanting these outputs need their camera's intrinsics.

        Points, depth/image and depth/camera_info, normals from depth, and every depth output
        of Depth Pro (its metres take camera_info's focal length).
        """
        cfg = cfg or self._cfg
        if want & {'points', 'depth', 'depth_info'}:
            return True
        dm = self.depth_model
        if dm is not None and dm.depth_units == 'canonical_inverse' and \
                any(outputs.BY_NAME[n].task == DEPTH_TASK for n in want):
            return True
        return self.normals_source(cfg) == 'depth' and \
            any(outputs.BY_NAME[n].reads_normals(cfg) for n in want)

    def anchor_fit(self, cfg: Optional[Config] = None) -> str:
        """Return what anchors fit under cfg: 'scale' or 'affine' (anchors.fit 'auto' resolved).

        A metric checkpoint's error is a factor: a shift fitted from nearby anchors would bend
        its far range; a relative one's output has an unknown shift as well.
        """
        fit = (cfg or self._cfg).anchors.fit
        if fit != 'auto':
            return fit
        dm = self.depth_model
        return 'scale' if dm is not None and dm.gives_metres else 'affine'

    def depth_max(self, cfg: Optional[Config] = None) -> float:
        """Farthest valid depth in metres: depth.max, or 0 = the checkpoint's, else 20 m."""
        return depth_max(cfg or self._cfg, self.depth_model)

    def reset_state(self) -> None:
        """Forget what earlier frames left: fits, held fits, temporal alignment, the fit's RNG.

        For a new recording (dpt_bag calls it per bag): its outputs then depend on it alone,
        whichever bags this pipeline ran before.
        """
        with self._lock:
            self._tracker = MetricTracker(self.device)
            self._previous = {}

    def fit_report(self, source: str = '') -> FitReport:
        """Return the last scale/shift fit of a frame source (depth.mode fitted, temporal)."""
        return self._tracker.report(source)

    def describe(self) -> Dict[str, str]:
        """Device, models, precision and backend, for logs and diagnostics."""
        out = {'device': str(self.device)}
        if self.device.type == 'cuda':
            out['gpu'] = torch.cuda.get_device_name(self.device)
        for key, m in (('depth_model', self.depth_model), ('segmentation_model', self.seg_model)):
            if m is not None:
                out[key] = f'{m.source} ({m.model_type}, {m.num_parameters / 1e6:.1f} M params)'
                out['precision'] = str(m.dtype).replace('torch.', '')
                out['backend'] = m.backend
        if self.depth_model is not None and self.depth_model is self.seg_model:
            out['shared_forward'] = 'depth and segmentation from one forward'
        out['depth_mode'] = self.depth_mode() or 'off'
        if self.depth_model is not None:
            out['normals_source'] = self.normals_source()
        if out['depth_mode'] == 'fitted':
            out['anchors_fit'] = self.anchor_fit()
        if self.depth_model is not None:
            src = 'depth.max' if self._cfg.depth.max else (
                'checkpoint' if self.depth_model.max_depth else 'default')
            out['depth_max_m'] = f'{self.depth_max():g} ({src})'
        return out

    # ------------------------------------------------------------------ helpers

    def _preprocessor(self, m: LoadedModel) -> Preprocessor:
        key = id(m)
        if key not in self._pre:
            self._pre[key] = Preprocessor(m.spec, m.dtype, channels_last=m.device.type == 'cuda')
        return self._pre[key]

    def _on_device(self) -> ContextManager:
        """Make this pipeline's device and stream current (nothing on the CPU)."""
        if self._stream is None:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.cuda.device(self.device))
        stack.enter_context(torch.cuda.stream(self._stream))
        return stack

    def _upload(self, frames: Sequence[Frame]) -> torch.Tensor:
        """Stack frames into one (B, H, W, C) tensor on the device: one host-to-device copy."""
        arrs = [f.pixels.view(np.int16) if f.pixels.dtype == np.uint16 else f.pixels
                for f in frames]
        if self.device.type != 'cuda':
            if len(arrs) == 1:
                a = np.ascontiguousarray(arrs[0])
                # Message buffers are read-only; torch wants writable memory (never written).
                return torch.from_numpy(a if a.flags.writeable else a.copy())[None]
            return torch.from_numpy(np.stack(arrs))
        shape = (len(arrs),) + arrs[0].shape
        key = (shape, arrs[0].dtype.str)
        buf = self._staging.get(key)
        if buf is None:
            if len(self._staging) > 4:
                self._stream.synchronize()  # no copy may still read a buffer dropped here
                self._staging.clear()
                self._copied.clear()
            buf = torch.from_numpy(np.empty(shape, arrs[0].dtype)).pin_memory()
            self._staging[key] = buf
        elif key in self._copied:
            # The previous async copy out of this pinned buffer may still be reading it.
            self._copied[key].synchronize()
        host = buf.numpy()
        for i, a in enumerate(arrs):
            host[i] = a
        dev = buf.to(self.device, non_blocking=True)
        done = torch.cuda.Event()
        done.record(self._stream)
        self._copied[key] = done
        return dev

    def _run(self, m: LoadedModel, pixel_values: torch.Tensor,
             prompt: Optional[torch.Tensor] = None,
             heads: Optional[Tuple[str, ...]] = None) -> torch.Tensor:
        if prompt is not None:  # metres are made in float32; the network runs in its dtype
            prompt = prompt_as(prompt, m.dtype)
        return self.backends.run(m, pixel_values, max(self.batch_sizes(m)), prompt, heads)

    def batch_sizes(self, m: LoadedModel) -> List[int]:
        """Network batch sizes a model meets under the settings (what prepare warms).

        Batches of 1 to n camera frames, n as many as the scheduler forms (batch.max_size, at
        most one frame per camera) or as prepare(frames=) said; twice each for the depth
        model under depth.confidence flip (the mirrored frames ride in the same batch).
        """
        cfg = self._cfg
        n = self._frames or min(cfg.batch.max_size, max(1, len(cfg.cameras)))
        sizes = set(range(1, n + 1))
        if m.task == DEPTH_TASK and cfg.depth.confidence == 'flip':
            sizes |= {2 * k for k in sizes}
        return sorted(sizes)

    @property
    def backend_builds(self) -> Dict[str, int]:
        """Backend modules built or loaded so far, by backend (sessions, engines, compiles)."""
        return dict(self.backends.builds)

    @property
    def builds_after_prepare(self) -> Optional[int]:
        """Backend modules built or loaded since prepare() returned (None: not prepared).

        0 on a running node means no frame ever waited for a build: every batch size the
        scheduler formed was warmed at activation.
        """
        if self._prepared_builds is None:
            return None
        return sum(self.backends.builds.values()) - self._prepared_builds

    def forward(self, m: LoadedModel, pixel_values: torch.Tensor,
                prompt: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Run one model on pixel values already on the device, as a frame would (backend too).

        prompt: a prompted model's (B, 1, h, w) metric prompt (preprocess.prompt_depth).
        """
        with self._lock, self._on_device(), torch.inference_mode():
            return self._run(m, pixel_values, prompt)

    def pixel_values(self, m: LoadedModel, frame: Frame) -> torch.Tensor:
        """Preprocess one frame for a model, on the device, as a frame would be."""
        with self._lock, self._on_device(), torch.inference_mode():
            return self._preprocessor(m)(to_rgb(self._upload([frame]), frame.layout))

    def synchronize(self) -> None:
        """Wait for this pipeline's GPU work (for timing from the host)."""
        if self._stream is not None:
            self._stream.synchronize()

    # ------------------------------------------------------------------ processing

    def process(self, frame: Frame, intr: Optional[Intrinsics] = None,
                want: AbstractSet[str] = outputs.ALL, anchors: Optional[Anchors] = None,
                source: str = '', stamp: Optional[float] = None) -> Result:
        """Run one frame; see process_batch."""
        return self.process_batch([frame], [intr], want, [anchors], [source],
                                  None if stamp is None else [stamp])[0]

    def batch_key(self, frame: Frame) -> Tuple[Tuple[int, ...], ...]:
        """Frames with equal keys share one forward: each model's network input for their size.

        A 640x480 and a 1280x720 frame share it under a fixed-input model (DPT at 384 x 384),
        not under one that keeps the aspect ratio. Each frame is preprocessed at its own size
        and post-processed back to it; network inputs are stacked, never padded to one
        another, so no output depends on which frames shared the forward. A prompted model's
        prompt follows the frame size: its frames share a forward only at one size.
        """
        size = (frame.height, frame.width)
        return tuple(m.spec.output_size(*size) + (size if m.needs_prompt else ())
                     for m in self.models())

    def check_frame(self, frame: Frame) -> None:
        """Raise FrameError when a model cannot take a frame of this size.

        A frame far from the network's aspect ratio (1 x 4000) is resized to no rows at all,
        and one smaller than ZoeDepth's reflect padding cannot be padded: torch would fail
        the whole forward, losing the frames that share it. Callers check each frame before
        batching it and skip the ones that fail, as they skip undecodable ones.
        """
        h, w = frame.height, frame.width
        for m in self.models():
            ph, pw = m.spec.zoe_pad(h, w)
            rh, rw = m.spec.resized_size(h + 2 * ph, w + 2 * pw)
            if min(rh, rw) < 1:
                raise FrameError(f'image {w}x{h} is too small for the {m.task} model: resized '
                                 f'to its input it would be {rw}x{rh} pixels.')
            if ph >= h or pw >= w:
                raise FrameError(f'image {w}x{h} is too small for the {m.task} model: its '
                                 f'reflect padding is {pw}x{ph} pixels.')

    @torch.inference_mode()
    def process_batch(self, frames: Sequence[Frame], intrs: Sequence[Optional[Intrinsics]],
                      want: AbstractSet[str] = outputs.ALL,
                      anchors: Optional[Sequence[Optional[Anchors]]] = None,
                      sources: Optional[Sequence[str]] = None,
                      stamps: Optional[Sequence[float]] = None,
                      cfg: Optional[Config] = None) -> List[Result]:
        """Run frames as one forward per network input (batch_key); one Result per frame.

        want names the outputs to compute (rows of dpt_ros.core.outputs.OUTPUTS); Result.arrays
        holds exactly the arrays they are encoded from. For depth.mode fitted and
        depth.temporal: the anchors (metric depths at pixels) of each frame, the source
        (camera) each frame comes from and image stamps in seconds (wall time when omitted);
        the frames of one source must come in time order. FrameError (before any work) when
        a frame is too small for a model (check_frame). cfg: the settings every frame runs
        under (default: those in force now), checked by update; the node gives the ones it
        took the frames under, so a live change never splits a frame's outputs.
        """
        if not frames:
            return []
        cfg = cfg if cfg is not None else self.config
        n = len(frames)
        anchors = list(anchors) if anchors is not None else [None] * n
        sources = list(sources) if sources is not None else [''] * n
        stamps = list(stamps) if stamps is not None else [time.time()] * n
        bad = next((f.layout for f in frames if f.layout not in LAYOUTS), None)
        if bad is not None:
            raise ValueError(f"unsupported layout '{bad}'")
        for f in frames:  # before any work: one clear error instead of torch's, mid-batch
            self.check_frame(f)
        keys: Dict[Tuple, List[int]] = {}
        for i, f in enumerate(frames):
            keys.setdefault(self.batch_key(f), []).append(i)
        if len(keys) > 1:
            out: List[Optional[Result]] = [None] * n
            for idx in keys.values():
                for i, r in zip(idx, self.process_batch(
                        [frames[i] for i in idx], [intrs[i] for i in idx], want,
                        [anchors[i] for i in idx], [sources[i] for i in idx],
                        [stamps[i] for i in idx], cfg)):
                    out[i] = r
            return out  # type: ignore[return-value]
        key = next(iter(keys))
        limit = self.batch_limits.get(key, n)
        if n > limit:  # this input ran out of memory at a larger batch before
            return self._in_chunks(limit, frames, intrs, want, anchors, sources, stamps, cfg)
        try:
            with self._lock, self._on_device():
                return self._process(frames, intrs, want, anchors, sources, stamps, cfg)
        except _OutOfMemory as exc:
            if n == 1:
                raise exc.__cause__ from None  # as it came: nothing smaller to try
            # Nothing was kept of the failed batch (it failed before the fit): run it in
            # halves, and never again above that at this input (more cameras than fit).
            self.batch_limits[key] = limit = n // 2
            self._free()
            results = self._in_chunks(limit, frames, intrs, want, anchors, sources, stamps,
                                      cfg)
            size = 'x'.join(str(v) for v in key[0][:2])
            cause = str(exc.__cause__).strip().splitlines()[0][:200]
            for r in results:
                r.warnings.append(
                    f'a forward of {n} frames (network input {size}) ran out of memory '
                    f'({cause}); they ran {limit} at a time, as every forward at this input will '
                    f'from now on. Lower batch.max_size (now {cfg.batch.max_size}) to '
                    'skip the failed try, or use a smaller model or precision.')
            return results

    def _in_chunks(self, limit: int, frames: Sequence[Frame],
                   intrs: Sequence[Optional[Intrinsics]], want: AbstractSet[str],
                   anchors: Sequence[Optional[Anchors]], sources: Sequence[str],
                   stamps: Sequence[float], cfg: Config) -> List[Result]:
        """process_batch on consecutive runs of at most limit frames (each source in order)."""
        out: List[Result] = []
        for i in range(0, len(frames), limit):
            j = slice(i, i + limit)
            out += self.process_batch(frames[j], intrs[j], want, anchors[j], sources[j],
                                      stamps[j], cfg)
        return out

    def _free(self) -> None:
        """Give the device's cached blocks back (after running out of memory, on release)."""
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _process(self, frames: Sequence[Frame], intrs: Sequence[Optional[Intrinsics]],
                 wanted: AbstractSet[str], anchors: Sequence[Optional[Anchors]],
                 sources: Sequence[str], stamps: Sequence[float], cfg: Config) -> List[Result]:
        # One part per frame size and layout: uploaded, preprocessed and post-processed
        # together; the forward takes every part at once.
        split: Dict[Tuple, List[int]] = {}
        for i, f in enumerate(frames):
            split.setdefault((f.pixels.shape, f.layout), []).append(i)
        # every part under the same settings (cfg): one set of heads, one flip
        parts = [(idx, _Batch(self, [frames[i] for i in idx], [intrs[i] for i in idx], wanted,
                              [anchors[i] for i in idx], [sources[i] for i in idx],
                              [stamps[i] for i in idx], cfg)) for idx in split.values()]
        clock = _Clock(self.device, self._stream)
        for stage, step in _STEPS:
            try:
                if stage == FORWARD:
                    self._forward_stage([b for _, b in parts])
                else:
                    for _, b in parts:
                        step(self, b)
            except Exception as exc:  # noqa: B902 - only running out of memory is caught
                if stage in _RETRY_STAGES and out_of_memory(exc):
                    raise _OutOfMemory(stage) from exc
                raise
            clock.mark(stage)
        timings = clock.result()
        results: List[Result] = [None] * len(frames)  # type: ignore[list-item]
        for idx, b in parts:
            for i, r, host in zip(idx, b.results, b.host):
                r.arrays.update(host)
                r.timings = {k: v / len(frames) for k, v in timings.items()}
                results[i] = r
        return results

    # ------------------------------------------------------------------ stages

    def _upload_stage(self, b: _Batch) -> None:
        b.pixels = self._upload(b.frames)

    def models(self) -> List[LoadedModel]:
        """Return the loaded models, each once (one checkpoint may serve both tasks)."""
        out: List[LoadedModel] = []
        for m in (self.depth_model, self.seg_model):
            if m is not None and all(m is not k for k in out):
                out.append(m)
        return out

    def _heads(self, m: LoadedModel, b: _Batch) -> Tuple[str, ...]:
        """Return the heads of m the wanted rows need under the batch's settings (none: skip m).

        A row of a task needs its model when it runs it under the settings; points read the
        labels (points.labels, exclude_classes, colour); normals from the head need only
        the normals head, normals from depth the depth.
        """
        cfg = b.cfg
        rows = [o for o in b.rows if o.runs_model(cfg)]
        need: List[str] = []
        if m is self.depth_model and any(
                o.task == DEPTH_TASK and (not o.from_normals or b.normals_from == 'depth')
                for o in rows):
            need.append(HEAD_DEPTH)
            if HEAD_FOV in m.heads:
                need.append(HEAD_FOV)
        if m is self.depth_model and b.normals_from == 'head' and \
                any(o.reads_normals(cfg) for o in rows):
            need.append(HEAD_NORMALS)
        if m is self.seg_model and any(o.task == SEGMENTATION_TASK or o.reads_labels(cfg)
                                       for o in rows):
            need.append(HEAD_SEGMENTATION)
        return tuple(h for h in m.heads if h in need)

    def _preprocess_stage(self, b: _Batch) -> None:
        b.rgb = to_rgb(b.pixels, b.frames[0].layout)
        for m in self.models():
            heads = self._heads(m, b)
            if not heads:
                continue
            if m.needs_prompt:
                b.prompt = self._prompt(b)
                if b.prompt is None:
                    continue  # no frame has anchors: nothing this model could give
            b.heads[id(m)] = heads
            pre = self._preprocessor(m)
            # Two models that preprocess alike share one pixel_values tensor.
            same = next((k for k, p in self._pre.items() if k in b.pixel_values and p is not pre
                         and p.spec == pre.spec and p.dtype == pre.dtype), None)
            b.pixel_values[id(m)] = b.pixel_values[same] if same is not None else pre(b.rgb)

    def _prompt(self, b: _Batch) -> Optional[torch.Tensor]:
        """Each frame's anchors as a prompted model's dense metric prompt; None if no frame has.

        The anchors are clamped to [depth.min, depth.max] (the model min-max normalises its
        prompt: one stray far return would flatten the rest), averaged into a prompt grid and
        filled between them guided by the camera's previous output (prompt.dense_prompt);
        push-pull alone for a camera's first frame, or after anchors.hold seconds without.
        A frame without anchors gets no depth (has_depth False) and a placeholder prompt.
        """
        size = (b.height, b.width)
        d = b.cfg.depth
        anchors = [None if a is None or a.z.size == 0 else
                   Anchors(a.u, a.v, np.clip(a.z, d.min, b.dmax)) for a in b.anchors]
        guide = torch.full((len(b.frames),) + size, float('nan'), device=self.device)
        for i, (src, t) in enumerate(zip(b.sources, b.stamps)):
            prev = self._previous.get(src)
            if prev is not None and 0.0 <= t - prev[0] <= b.cfg.anchors.hold and \
                    tuple(prev[1].shape) == size:
                guide[i] = prev[1]
        dense, has = pr.dense_prompt(anchors, size, self.device, guide=guide)
        b.has_depth = has
        for r, ok, a in zip(b.results, has, anchors):
            r.notes['prompt'] = f'{a.z.size} anchors' if ok else 'none: no anchors, no depth'
            if not ok:
                r.warnings.append('no anchors for this frame: Prompt Depth Anything gives no '
                                  'depth without its prompt (see anchors.max_age)')
        if not any(has):
            return None
        # Frames without anchors ride along on a flat placeholder; nothing of them is kept.
        dense = torch.where(torch.isfinite(dense), dense, torch.ones_like(dense))
        return prompt_depth(dense)

    def _forward_stage(self, parts: Sequence[_Batch]) -> None:
        """One forward per model for every part of a batch (same network input, any size)."""
        for m in self.models():
            run = [b for b in parts if id(m) in b.pixel_values]
            if not run:
                continue
            heads = run[0].heads[id(m)]  # the same rows and settings in every part
            pvs: List[torch.Tensor] = []
            prompts: List[Optional[torch.Tensor]] = []
            for b in run:
                pv = b.pixel_values[id(m)]
                prompt = b.prompt if m.needs_prompt else None
                if m is self.depth_model and HEAD_DEPTH in heads:
                    b.flip = b.cfg.depth.confidence == 'flip' and \
                        any(o.reads_confidence(b.cfg) for o in b.rows)
                if b.flip and m is self.depth_model:
                    # The mirrored frames ride in the same forward, after their part's frames.
                    pv = torch.cat([pv, pv.flip(-1)])
                    prompt = None if prompt is None else torch.cat([prompt, prompt.flip(-1)])
                pvs.append(pv)
                prompts.append(prompt)
            for b, out in zip(run, self._run_parts(m, pvs, prompts, heads)):
                n = len(b.frames)
                got = dict(zip(m.heads, out)) if len(m.heads) > 1 else {m.heads[0]: out}
                b.raw = got.get(HEAD_DEPTH) if HEAD_DEPTH in heads else b.raw
                b.fov = got.get(HEAD_FOV) if HEAD_FOV in heads else b.fov
                if HEAD_NORMALS in heads:
                    b.normals_raw = got[HEAD_NORMALS][:n]
                if HEAD_SEGMENTATION in heads:
                    b.logits = got[HEAD_SEGMENTATION][:n]

    def _run_parts(self, m: LoadedModel, pvs: List[torch.Tensor],
                   prompts: List[Optional[torch.Tensor]], heads: Tuple[str, ...]) -> List[Any]:
        """Run the parts' network inputs as one forward; return each part's outputs.

        A prompted model's parts (batch_key: one frame size) run one forward each: a part
        without anchors has no prompt and no forward.
        """
        if len(pvs) == 1 or m.needs_prompt:
            out = []
            for pv, prompt in zip(pvs, prompts):
                out.append(self._run(m, pv, prompt, heads))
                self.forwards += 1
            return out
        pv = torch.cat(pvs)
        if self._preprocessor(m).channels_last:  # the memory format a part's input has
            pv = pv.contiguous(memory_format=torch.channels_last)
        out = self._run(m, pv, None, heads)
        self.forwards += 1
        sizes = [len(p) for p in pvs]
        if isinstance(out, torch.Tensor):
            return list(out.split(sizes))
        # One tensor per head (None for a head skipped), each split back into the parts.
        per_head = [[None] * len(sizes) if o is None else o.split(sizes) for o in out]
        return [tuple(h[k] for h in per_head) for k in range(len(sizes))]

    def _resize_stage(self, b: _Batch) -> None:
        """Model outputs at camera resolution, padding cut away; the mirrored depth unflipped."""
        size = (b.height, b.width)
        n = len(b.frames)
        dm = self.depth_model
        if b.raw is not None:
            if dm.depth_units == 'canonical_inverse':
                depth = self._depth_pro_metres(b, size)
            elif b.flip:  # the mirrored input has the padding mirrored too
                mode, place = dm.spec.output_resample, b.placement
                depth = torch.cat([post.resize_depth(b.raw[:n], size, place, mode),
                                   post.resize_depth(b.raw[n:], size, place.mirrored(), mode)])
            else:
                depth = post.resize_depth(b.raw, size, b.placement, dm.spec.output_resample)
            b.depth, b.flipped = (depth[:n], depth[n:].flip(-1)) if b.flip else (depth, None)
            for r in b.results:
                r.mode = b.mode
            b.tasks.add(DEPTH_TASK)
            if dm.needs_prompt:
                self._keep_previous(b)
        if b.normals_raw is not None:
            b.tasks.add(DEPTH_TASK)
        if b.logits is not None:
            b.labels = post.segment(b.logits, size, self.seg_model.spec.placement(*size))
            b.tasks.add(SEGMENTATION_TASK)

    def _depth_pro_metres(self, b: _Batch, size: Tuple[int, int]) -> torch.Tensor:
        """Depth Pro's canonical inverse depth -> metres with each frame's focal length.

        camera_info's fx where the frame has intrinsics, else the predicted field of view;
        a frame with neither gets no depth. The source is noted per frame (focal_source).
        """
        fx = [None if i is None else i.fx for i in b.intrs]
        metres, focal, sources = post.depth_pro_metres(
            b.raw, size, fx + fx if b.flip else fx, b.fov)
        for k, (r, src) in enumerate(zip(b.results, sources)):
            r.notes['focal_source'] = src
            r.notes['focal_px'] = f'{float(focal[k]):.4f}'
            if src == 'none':
                b.has_depth[k] = False
                r.warnings.append('Depth Pro without camera_info and without a field-of-view '
                                  'head: no focal length, no depth for this frame')
        return metres

    def _keep_previous(self, b: _Batch) -> None:
        """Keep each camera's newest prompted depth: the next prompt's guide between anchors."""
        for i, (src, t) in enumerate(zip(b.sources, b.stamps)):
            if b.has_depth[i]:
                self._previous[src] = (t, b.depth[i].clone())

    def _fit_stage(self, b: _Batch) -> None:
        """Scale and shift from anchors or over time, and the flip confidence, when asked for."""
        temporal_relative = b.mode == 'relative_inverse' and b.cfg.depth.temporal
        if b.depth is None or (b.mode != 'fitted' and b.flipped is None and
                               not temporal_relative):
            return
        # Fitted in inverse depth: what a relative checkpoint gives, a metric one's 1/metres.
        b.fitted = post.relative_inverse(b.depth, b.metric)
        b.fits, b.confidence = self._tracker.run(
            b.fitted, b.anchors, b.sources, b.stamps, b.cfg, b.mode == 'fitted',
            None if b.flipped is None else post.relative_inverse(b.flipped, b.metric),
            scale_only=self.anchor_fit(b.cfg) == 'scale',
            # Only the fitted and relative outputs follow the frames before; the confidence
            # of metric or affine_inverse depth is the frame's own.
            temporal=b.cfg.depth.temporal and b.mode in ('fitted', 'relative_inverse'))
        far = b.dmax
        for r, f, a in zip(b.results, b.fits, b.anchors or [None] * len(b.results)):
            r.fit = f.report
            r.warnings.extend(f.warnings)
            median = float(np.median(a.z)) if b.mode == 'fitted' and a is not None and \
                a.z.size else 0.0
            if median > far:
                # Nothing it fits is published beyond depth.max: say why rather than go dark.
                r.warnings.append(
                    f'the anchors lie beyond depth.max ({far:g} m; their median {median:g} m): '
                    'millimetres in a 32FC1 image, or a depth.max too small for this scene?')

    def _rows_stage(self, b: _Batch, stage: str) -> None:
        """Run the compute of every wanted output row of this stage, frame by frame."""
        rows = [o for o in b.rows if o.stage == stage and o.task in b.tasks]
        if not rows:
            return
        n_labels = len(self.seg_model.labels) if self.seg_model is not None else 0
        views = [FrameTensors(b, i, self._project, n_labels) for i in range(len(b.frames))]
        for o in rows:
            for f, out in zip(views, b.out):
                if o.task == DEPTH_TASK and not f.has_depth:
                    continue  # the model gave no depth for it (no prompt, no focal length)
                t = o.compute(f)
                if t is not None:
                    out[o.name] = t

    def _download_stage(self, b: _Batch) -> None:
        b.host = self._download(b.out)

    def model_for(self, task: str) -> Optional[LoadedModel]:
        """Return the loaded model of a task (DEPTH_TASK, SEGMENTATION_TASK), or None."""
        return {DEPTH_TASK: self.depth_model, SEGMENTATION_TASK: self.seg_model}.get(task)

    def _download(self, out: List[Dict[str, torch.Tensor]]) -> List[Dict[str, np.ndarray]]:
        """Copy requested outputs to the host: async into pinned memory, then one sync."""
        if self.device.type != 'cuda':
            return [{k: _as_numpy(v) for k, v in d.items()} for d in out]
        pinned = []
        for d in out:
            pd = {}
            for k, v in d.items():
                dst = torch.empty(v.shape, dtype=v.dtype, pin_memory=True)
                dst.copy_(v, non_blocking=True)
                pd[k] = dst
            pinned.append(pd)
        self._stream.synchronize()  # the copies above ran on it
        return [{k: _as_numpy(v) for k, v in d.items()} for d in pinned]

    # ------------------------------------------------------------------ lifecycle

    def prepare(self, height: int = 0, width: int = 0, frames: int = 0,
                frame_sized_only: bool = False) -> Dict[str, float]:
        """Do first-frame work now: engine build or load, compile and graph capture, autotune.

        For the network input of height x width camera frames; with 0 x 0, for the models
        whose network input does not depend on the frame size (ViT DPT: a fixed square), the
        others then warm up on their first frame. frame_sized_only: only the models whose
        input follows the frame size (a fixed-input model warmed once is not run again).
        Every batch size of batch_sizes is warmed;
        frames: the most camera frames a batch will hold (0: as the scheduler forms them).
        Returns milliseconds per model warmed. cancel() from another thread abandons it (an
        engine build stops at its next step).
        """
        if frames:
            self._frames = frames
        done: Dict[str, float] = {}
        if self.device.type != 'cuda' and self._cfg.model.backend == EAGER:
            self._prepared_builds = 0
            return done  # nothing to build, capture or autotune
        for m in self.models():
            if self._cancel.is_set():
                continue
            if frame_sized_only and m.spec.input_fixed:
                continue
            if height and width:
                h, w = height, width
            elif m.spec.input_fixed:
                h, w = m.spec.height, m.spec.width
            else:
                continue
            t = time.perf_counter()
            sizes = self.batch_sizes(m)
            with self._lock, self._on_device(), torch.inference_mode(), self._warming():
                for n in sizes:
                    # Random frames (never zeros) through the real preprocessing, so the warmed
                    # input has the frames' exact shape, dtype and memory layout.
                    batch = torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8,
                                          device=self.device)
                    pv = self._preprocessor(m)(to_rgb(batch, 'rgb8'))
                    prompt = None
                    if m.needs_prompt:  # a metric prompt of the grid h x w frames get
                        prompt = prompt_depth(torch.rand((n,) + pr.prompt_size((h, w)),
                                                         device=self.device) + 1.0)
                    self._run(m, pv, prompt)
                    if self._cancel.is_set():
                        break
                self.synchronize()
            ms = (time.perf_counter() - t) * 1e3
            done[m.task] = ms
            self.log(f'warm-up {m.task}: backend {m.backend}, network input '
                     f"{pv.shape[-1]}x{pv.shape[-2]}, batch {', '.join(map(str, sizes))}, "
                     f'{ms / 1e3:.1f} s')
        self._prepared_builds = sum(self.backends.builds.values())
        return done

    @contextlib.contextmanager
    def _warming(self) -> Iterator[None]:
        """Build every network input at once (not on its second frame, as frames do)."""
        self.backends.warming = True
        try:
            yield
        finally:
            self.backends.warming = False

    def prepare_all(self, sizes: Iterable[Tuple[int, int]] = (), frames: int = 0) -> None:
        """Run prepare() for every model before the first frame.

        The fixed-input ones, then for each (width, height) of sizes (model.warmup_sizes: the
        frames the cameras send) those whose input follows the frame size. frames: as prepare.
        """
        self.prepare(frames=frames)
        for width, height in sizes:
            self.prepare(height, width, frame_sized_only=True)

    def cancel(self) -> None:
        """Abandon start-up work in progress or to come (shutdown); frames still run."""
        self._cancel.set()

    def close(self) -> None:
        """Free the models and cached device memory."""
        self._cancel.set()
        self.synchronize()
        self.depth_model = self.seg_model = None
        self.backends.release()
        self._pre.clear()
        self._staging.clear()
        self._copied.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def release(self) -> None:
        """close(), the models moving back to host memory for a later pipeline (deactivate)."""
        models = self.models()
        self.close()
        for m in models:
            move_model(m, torch.device('cpu'))
        self._free()


# Running out of memory in these stages leaves nothing of the batch behind (the fit and the
# previous-frame prompt guide are kept after them): process_batch retries it in halves.
_RETRY_STAGES = (UPLOAD, PREPROCESS, FORWARD)


class _OutOfMemory(Exception):
    """A batch ran out of memory in a stage of _RETRY_STAGES (the error is its __cause__)."""


def out_of_memory(exc: BaseException) -> bool:
    """Whether exc is a device (or host) allocation failing, which a smaller batch may avoid."""
    if isinstance(exc, (MemoryError, getattr(torch, 'OutOfMemoryError', MemoryError),
                        torch.cuda.OutOfMemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(s in text for s in (
        'out of memory', "can't allocate memory", 'Failed to allocate memory',
        'CUBLAS_STATUS_ALLOC_FAILED'))


# The timed stages a batch goes through, in order; postprocess comes back after the fit for
# the output rows (its times add up).
_STEPS: Tuple[Tuple[str, Callable[[Pipeline, _Batch], None]], ...] = (
    (UPLOAD, Pipeline._upload_stage), (PREPROCESS, Pipeline._preprocess_stage),
    (FORWARD, Pipeline._forward_stage), (POSTPROCESS, Pipeline._resize_stage),
    (FIT, Pipeline._fit_stage),
    (POSTPROCESS, functools.partial(Pipeline._rows_stage, stage=POSTPROCESS)),
    (GEOMETRY, functools.partial(Pipeline._rows_stage, stage=GEOMETRY)),
    (DOWNLOAD, Pipeline._download_stage))


def depth_max(cfg: Config, depth_model: Optional[LoadedModel]) -> float:
    """Farthest valid depth in metres: depth.max, or 0 = the checkpoint's, else 20 m."""
    if cfg.depth.max:
        return cfg.depth.max
    declared = depth_model.max_depth if depth_model is not None else None
    return declared or DEFAULT_DEPTH_MAX


def check_models(cfg: Config, depth_model: Optional[LoadedModel],
                 seg_model: Optional[LoadedModel]) -> Config:
    """Return cfg, or raise ConfigError where it does not fit these models (on any device).

    What Pipeline.check refuses, asked of the models alone: a lifecycle node that is inactive
    holds its weights in host memory and no pipeline, and refuses then what activate would.
    """
    dm = depth_model
    if dm is not None and cfg.depth.min >= depth_max(cfg, dm):
        whose = "the checkpoint's" if dm.max_depth else 'the default'
        raise ConfigError(
            f'depth.min ({cfg.depth.min}) must be smaller than depth.max (0: {whose} '
            f'{depth_max(cfg, dm):g} m); lower depth.min or set depth.max.')
    if cfg.normals.source == 'head' and dm is not None and HEAD_NORMALS not in dm.heads:
        raise ConfigError(
            f"normals.source is 'head' but '{dm.source}' ({dm.model_type}) has no normals "
            "head; set normals.source to 'depth' (or 'auto').")
    if dm is not None and dm.needs_prompt and cfg.anchors.source == 'none':
        raise ConfigError(
            f"'{dm.source}' ({dm.model_type}) turns anchors into dense metres: set "
            "anchors.source to 'depth_image' or 'points'.")
    p = cfg.points
    if seg_model is None and (p.exclude_classes or p.colour == 'label'):
        what = 'points.exclude_classes' if p.exclude_classes else "points.colour 'label'"
        raise ConfigError(f'{what} needs a segmentation model: set model.segmentation.')
    class_ids(p.exclude_classes, list(seg_model.labels) if seg_model else [])
    return cfg


def class_ids(names: Sequence[str], labels: List[str]) -> List[int]:
    """Return the sorted class ids of names (class names, any case, or ids as digits).

    ConfigError for a name the labels do not have.
    """
    lower = {n.lower(): i for i, n in enumerate(labels)}
    ids = []
    for name in names:
        key = name.strip().lower()
        if key.isdigit() and int(key) < len(labels):
            ids.append(int(key))
        elif key in lower:
            ids.append(lower[key])
        else:
            raise ConfigError(
                f"points.exclude_classes: '{name}' is not a class of the segmentation model "
                f"(ids 0 to {len(labels) - 1}; names: {', '.join(labels[:40])}"
                f"{' ...' if len(labels) > 40 else ''}).")
    return sorted(set(ids))


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.int16:
        return t.numpy().view(np.uint16)
    return t.numpy()
