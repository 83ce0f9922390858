# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""One camera frame in -> all requested outputs out, with per-stage timings (no rclpy)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import AbstractSet, Callable, ContextManager, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from dpt_ros.core import outputs
from dpt_ros.core import postprocess as post
from dpt_ros.core.backends import EAGER
from dpt_ros.core.backends.runner import BackendRunner
from dpt_ros.core.config import Config, ConfigError, DEFAULT_DEPTH_MAX
from dpt_ros.core.conversions import Frame
from dpt_ros.core.geometry import Backprojector, Intrinsics, IntrinsicsError
from dpt_ros.core.metric import Anchors, FitReport, MetricTracker
from dpt_ros.core.models import load_model, LoadedModel
from dpt_ros.core.outputs import DEPTH_TASK, Result, SEGMENTATION_TASK
from dpt_ros.core.preprocess import LAYOUTS, Preprocessor, to_rgb

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


class Pipeline:
    """Load the configured models once; then turn frames into depth, labels and points."""

    def __init__(self, cfg: Config, log: Callable[[str], None] = LOG.info,
                 depth_model: Optional[LoadedModel] = None,
                 seg_model: Optional[LoadedModel] = None) -> None:
        cfg.validate()
        self._cfg = cfg
        self.log = log
        self.depth_model = depth_model
        self.seg_model = seg_model
        if self.depth_model is None and cfg.model.depth:
            self.depth_model = load_model(cfg.model.depth, 'depth', cfg.model, log)
        if self.seg_model is None and cfg.model.segmentation:
            self.seg_model = load_model(cfg.model.segmentation, 'segmentation', cfg.model, log)
        self.check(cfg)
        first = self.depth_model or self.seg_model
        assert first is not None
        self.device = first.device
        self._pre: Dict[int, Preprocessor] = {}
        self._project = Backprojector()
        self._tracker = MetricTracker(self.device)
        self._staging: Dict[Tuple, torch.Tensor] = {}
        self._copied: Dict[Tuple, torch.cuda.Event] = {}  # staging key -> its last H2D copy
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._frames = 0  # most camera frames per batch, when prepare was told
        # model.backend is read-only: one runner for the pipeline's life.
        self.backends = BackendRunner(cfg.model.backend, cfg.model.engine_dir,
                                      lambda msg: self.log(msg), self._cancel.is_set)
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
        """Return cfg, or raise ConfigError where it does not fit the loaded models."""
        if self.depth_model is not None and cfg.depth.min >= self.depth_max(cfg):
            whose = "the checkpoint's" if self.depth_model.max_depth else 'the default'
            raise ConfigError(
                f'depth.min ({cfg.depth.min}) must be smaller than depth.max (0: {whose} '
                f'{self.depth_max(cfg):g} m); lower depth.min or set depth.max.')
        return cfg

    @property
    def labels(self) -> List[str]:
        """Segmentation class names (empty without a segmentation model)."""
        return list(self.seg_model.labels) if self.seg_model else []

    def depth_mode(self, cfg: Optional[Config] = None) -> str:
        """Return the depth mode in force, or under cfg ('' without a depth model)."""
        if self.depth_model is None:
            return ''
        return post.effective_mode((cfg or self._cfg).depth.mode, self.depth_model.metric)

    def depth_max(self, cfg: Optional[Config] = None) -> float:
        """Farthest valid depth in metres: depth.max, or 0 = the checkpoint's, else 20 m."""
        set_max = (cfg or self._cfg).depth.max
        if set_max:
            return set_max
        declared = self.depth_model.max_depth if self.depth_model is not None else None
        return declared or DEFAULT_DEPTH_MAX

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
        out['depth_mode'] = self.depth_mode() or 'off'
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

    def _run(self, m: LoadedModel, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.backends.run(m, pixel_values, max(self.batch_sizes(m)))

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

    def forward(self, m: LoadedModel, pixel_values: torch.Tensor) -> torch.Tensor:
        """Run one model on pixel values already on the device, as a frame would (backend too)."""
        with self._lock, self._on_device(), torch.inference_mode():
            return self._run(m, pixel_values)

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

    @torch.inference_mode()
    def process_batch(self, frames: Sequence[Frame], intrs: Sequence[Optional[Intrinsics]],
                      want: AbstractSet[str] = outputs.ALL,
                      anchors: Optional[Sequence[Optional[Anchors]]] = None,
                      sources: Optional[Sequence[str]] = None,
                      stamps: Optional[Sequence[float]] = None) -> List[Result]:
        """Run frames of one size and layout as one batch; one Result per frame.

        want names the outputs to compute (rows of dpt_ros.core.outputs.OUTPUTS); Result.arrays
        holds exactly the arrays they are encoded from. For depth.mode fitted and
        depth.temporal: the anchors (metric depths at pixels) of each frame, the source
        (camera) each frame comes from and image stamps in seconds (wall time when omitted);
        the frames of one source must come in time order.
        """
        if not frames:
            return []
        n = len(frames)
        anchors = list(anchors) if anchors is not None else [None] * n
        sources = list(sources) if sources is not None else [''] * n
        stamps = list(stamps) if stamps is not None else [time.time()] * n
        first = frames[0]
        if first.layout not in LAYOUTS:
            raise ValueError(f"unsupported layout '{first.layout}'")
        if any(f.pixels.shape != first.pixels.shape or f.layout != first.layout for f in frames):
            return [r for k in range(n) for r in self.process_batch(
                [frames[k]], [intrs[k]], want, [anchors[k]], [sources[k]], [stamps[k]])]
        with self._lock, self._on_device():
            return self._process(frames, intrs, want, anchors, sources, stamps)

    def _process(self, frames: Sequence[Frame], intrs: Sequence[Optional[Intrinsics]],
                 wanted: AbstractSet[str], anchors: Sequence[Optional[Anchors]],
                 sources: Sequence[str], stamps: Sequence[float]) -> List[Result]:
        cfg = self._cfg  # one consistent snapshot per batch
        want = outputs.arrays_needed(wanted)
        b, h, w = len(frames), frames[0].height, frames[0].width
        results = [Result(h, w) for _ in frames]
        clock = _Clock(self.device, self._stream)
        dev_frames = self._upload(frames)
        clock.mark('upload')
        rgb = to_rgb(dev_frames, frames[0].layout)
        pixel = {}
        for m in (self.depth_model, self.seg_model):
            if m is not None and self._wants(m, want):
                pre = self._preprocessor(m)
                same = next((k for k, p in self._pre.items() if k in pixel and p is not pre
                             and p.spec == pre.spec and p.dtype == pre.dtype), None)
                pixel[id(m)] = pixel[same] if same is not None else pre(rgb)
        clock.mark('preprocess')
        raw = logits = None
        mode = self.depth_mode(cfg)
        flip = (cfg.depth.confidence == 'flip' and self.depth_model is not None and
                ('confidence' in want or ('points' in want and cfg.points.min_confidence > 0)))
        if self.depth_model is not None and id(self.depth_model) in pixel:
            pv = pixel[id(self.depth_model)]
            if flip:  # the mirrored frame rides in the same batch
                pv = torch.cat([pv, pv.flip(-1)])
            raw = self._run(self.depth_model, pv)
        if self.seg_model is not None and id(self.seg_model) in pixel:
            logits = self._run(self.seg_model, pixel[id(self.seg_model)])
        clock.mark('forward')

        out: List[Dict[str, torch.Tensor]] = [{} for _ in frames]
        need_rgb8 = ('points' in want and cfg.points.rgb) or \
            ('overlay' in want and logits is not None)
        rgb8 = rgb.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8) if need_rgb8 \
            else None
        metres: List[Optional[torch.Tensor]] = [None] * b
        conf = None
        if raw is not None:
            dm = self.depth_model
            depth = post.resize_depth(raw, (h, w), dm.spec.placement(h, w))
            depth, flipped = (depth[:b], depth[b:].flip(-1)) if flip else (depth, None)
            clock.mark('postprocess')
            relative, metres, conf = self._metres(depth, flipped, mode, cfg, results, anchors,
                                                  sources, stamps, clock, want)
            for i in range(b):
                results[i].mode = mode
                # depth/relative is inverse depth (larger is nearer) whatever the checkpoint;
                # without metres depth/colored shows it too
                if 'relative' in want and relative is not None and (
                        metres[i] is None or not dm.metric):
                    out[i]['relative'] = relative[i]
                if 'depth' in want and metres[i] is not None:
                    out[i]['depth'] = metres[i]
                if 'depth_colored' in want:
                    src = metres[i] if metres[i] is not None else relative[i]
                    out[i]['depth_colored'] = post.colorize_depth(
                        src, cfg.depth.colormap, inverse=metres[i] is None)
                if 'confidence' in want and conf is not None:
                    out[i]['confidence'] = conf[i]
        else:
            clock.mark('fit')
        if logits is not None:
            labels = post.segment(logits, (h, w), self.seg_model.spec.placement(h, w))
            n = len(self.seg_model.labels)
            for i in range(b):
                if 'labels' in want:
                    out[i]['labels'] = labels[i].to(post.labels_dtype(n))
                if 'seg_colored' in want or 'overlay' in want:
                    colored = post.colorize_labels(labels[i], n)
                    if 'seg_colored' in want:
                        out[i]['seg_colored'] = colored
                    if 'overlay' in want:
                        out[i]['overlay'] = post.overlay(rgb8[i], colored,
                                                         cfg.segmentation.overlay_alpha)
        clock.mark('postprocess')
        if 'points' in want:
            for i, intr in enumerate(intrs):
                if intr is None or metres[i] is None:
                    continue
                try:
                    intr.check(w, h)
                except IntrinsicsError as exc:
                    results[i].warnings.append(str(exc))
                    continue
                z = metres[i]
                if conf is not None and cfg.points.min_confidence > 0:
                    z = z.masked_fill(conf[i] < cfg.points.min_confidence, float('nan'))
                pts, ph, pw = self._project(z, intr, cfg.points.stride,
                                            cfg.points.organized,
                                            rgb8[i] if cfg.points.rgb else None)
                if self._project.note:
                    results[i].warnings.append(self._project.note)
                out[i]['points'] = pts
                results[i].points_shape = (ph, pw)
                results[i].points_rgb = cfg.points.rgb
        clock.mark('geometry')
        host = self._download(out)
        clock.mark('download')
        timings = clock.result()
        for i, r in enumerate(results):
            r.arrays.update(host[i])
            r.timings = {k: v / b for k, v in timings.items()}
        return results

    def _metres(self, depth: torch.Tensor, flipped: Optional[torch.Tensor], mode: str,
                cfg: Config, results: List[Result], anchors: Sequence[Optional[Anchors]],
                sources: Sequence[str], stamps: Sequence[float], clock: _Clock,
                want: AbstractSet[str]) -> Tuple[Optional[torch.Tensor],
                                                 List[Optional[torch.Tensor]],
                                                 Optional[torch.Tensor]]:
        """Fit (its own 'fit' stage) and convert: relative output, metres per frame, confidence."""
        dm = self.depth_model
        b = depth.shape[0]
        dmax = self.depth_max(cfg)
        temporal_relative = mode == 'relative_inverse' and cfg.depth.temporal
        if mode != 'fitted' and flipped is None and not temporal_relative:
            clock.mark('fit')
            m = post.to_metres(depth, mode, cfg.depth.scale, cfg.depth.shift, cfg.depth.min,
                               dmax)
            need = ('relative' in want and (m is None or not dm.metric)) or (
                'depth_colored' in want and m is None)
            relative = post.relative_inverse(depth, dm.metric) if need else None
            return relative, [None] * b if m is None else list(m), None
        # Fitted in inverse depth: what a relative checkpoint gives, a metric one's 1/metres.
        d = post.relative_inverse(depth, dm.metric)
        fits, conf = self._tracker.run(
            d, anchors, sources, stamps, cfg, mode == 'fitted',
            None if flipped is None else post.relative_inverse(flipped, dm.metric))
        clock.mark('fit')
        for r, f in zip(results, fits):
            r.fit = f.report
            r.warnings.extend(f.warnings)
        if mode == 'fitted':
            return d, [None if f.scale is None else post.to_metres(
                d[i], 'affine_inverse', f.scale, f.shift, cfg.depth.min, dmax)
                for i, f in enumerate(fits)], conf
        if temporal_relative:
            d = torch.stack([d[i] * f.scale + f.shift for i, f in enumerate(fits)])
        m = post.to_metres(depth, mode, cfg.depth.scale, cfg.depth.shift, cfg.depth.min, dmax)
        return d, [None] * b if m is None else list(m), conf

    def _wants(self, m: LoadedModel, want: AbstractSet[str]) -> bool:
        # depth/confidence alone needs the depth model only when it is switched on.
        return any(o.task == m.task for o in outputs.OUTPUTS if o.name in want
                   and (o.name != 'confidence' or self._cfg.depth.confidence == 'flip'))

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

    def prepare(self, height: int = 0, width: int = 0, frames: int = 0) -> Dict[str, float]:
        """Do first-frame work now: engine build or load, compile and graph capture, autotune.

        For the network input of height x width camera frames; with 0 x 0, for the models
        whose network input does not depend on the frame size (ViT DPT: a fixed square), the
        others then warm up on their first frame. Every batch size of batch_sizes is warmed;
        frames: the most camera frames a batch will hold (0: as the scheduler forms them).
        Returns milliseconds per model warmed. cancel() from another thread abandons it (an
        engine build stops at its next step).
        """
        if frames:
            self._frames = frames
        done: Dict[str, float] = {}
        if self.device.type != 'cuda' and self._cfg.model.backend == EAGER:
            return done  # nothing to build, capture or autotune
        for m in (self.depth_model, self.seg_model):
            if m is None or self._cancel.is_set():
                continue
            if height and width:
                h, w = height, width
            elif m.spec.input_fixed:
                h, w = m.spec.height, m.spec.width
            else:
                continue
            t = time.perf_counter()
            sizes = self.batch_sizes(m)
            with self._lock, self._on_device(), torch.inference_mode():
                for n in sizes:
                    # Random frames (never zeros) through the real preprocessing, so the warmed
                    # input has the frames' exact shape, dtype and memory layout.
                    batch = torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8,
                                          device=self.device)
                    pv = self._preprocessor(m)(to_rgb(batch, 'rgb8'))
                    self._run(m, pv)
                    if self._cancel.is_set():
                        break
                self.synchronize()
            ms = (time.perf_counter() - t) * 1e3
            done[m.task] = ms
            self.log(f'warm-up {m.task}: backend {m.backend}, network input '
                     f"{pv.shape[-1]}x{pv.shape[-2]}, batch {', '.join(map(str, sizes))}, "
                     f'{ms / 1e3:.1f} s')
        return done

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


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.int16:
        return t.numpy().view(np.uint16)
    return t.numpy()
