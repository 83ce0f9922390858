# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""`dpt_bench`: where each frame's time goes, against the bare forward and a naive wrapper.

Sections, all measured in one run on one device:
  stages   per-stage p50/p95 in-process: decode, host-to-device, preprocess, forward,
           postprocess, point cloud, download, then fill + publish of the outputs both as
           messages and as serialized CDR bytes, side by side (a subscriber is attached);
  forward  the same network on the same pixel_values, timed alone (the floor);
  backends the bare forward and the in-process pipeline for each model.backend (--backend),
           each runtime timed alone in its own process (runtimes' spinning thread pools slow
           each other), with the backend that really ran named (a fallback is shown as such);
  naive    the way typical wrappers are written: DPTImageProcessor + model +
           post_process_depth_estimation + a point cloud built with Python lists;
  dds      publisher process -> dpt_node process (fastest backend) -> this process over
           real DDS, the node as deployed (CDR bytes, output.overlap on): end-to-end latency
           (receive - stamp) and sustained throughput, then throughput again with
           output.overlap off, with the node process's minor page faults, CPU time and
           context switches per frame; the same again in a node with memory.keep_freed off;
           then a relay process in the node's place (prebuilt depth + cloud of the same
           sizes, no model) gives this run's transport floor; last, the bare forward in a
           process set up as the node's (its OpenMP setting), back to back and paced as the
           node's frames were, splits the node's forward from what idling and that setting
           cost.
With --multitask instead: a checkpoint with depth and segmentation heads (TIPSv2-DPT) run
once per frame for both, against the two separate forwards it replaces (a depth and a
segmentation checkpoint of the same backbone size), bare forwards and the whole pipeline.
Prompted checkpoints (Prompt Depth Anything) get anchors from the scene's true depth; the
naive section runs for checkpoints transformers' DPT processor serves, the DDS section for
those a node runs without anchors.
Start-up work (engine build or load, compile and CUDA-graph capture, cuDNN autotuning) is
done by Pipeline.prepare before any timing, in every process.
Writes results.json, results.md and latency.png to --out.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import platform
import struct
import subprocess
import sys
import time
from typing import AbstractSet, Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from dpt_ros.core import cdr
from dpt_ros.core import conversions as conv
from dpt_ros.core import outputs
from dpt_ros.core.backends import BACKENDS, BY_NAME as BACKENDS_BY_NAME, NAMES as BACKEND_NAMES
from dpt_ros.core.config import cache_dir, Config
from dpt_ros.core.metric import Anchors
from dpt_ros.core.models import PROMPTED_MODEL_TYPES
from dpt_ros.core.outputs import DECODE, EncodeOptions, FILL, FORWARD, FRAME_STAGES, PUBLISH
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.core.preprocess import prompt_depth
from dpt_ros.core.prompt import dense_prompt
from dpt_ros.core.reports import percentile
from dpt_ros.ros.entry import openmp_env, OPENMP_VARS
from dpt_ros.tools.evaluation import make_anchors
from dpt_ros.tools.sample import make_random_checkpoint, random_checkpoint, synthetic_scene
from dpt_ros.tools.toolkit import jsonable, profile_env, pyplot, summary, write_report

# Fill + publish measured both ways on every frame: as messages (FRAME_STAGES' fill, publish)
# and as serialized CDR the way the node publishes it (dpt_ros.core.cdr into each publisher's
# buffer, published in place: dpt_ros.ros.serialized); the in-process total counts the bytes
# path.
BYTES_STAGES = ('fill_bytes', 'publish_bytes')
STAGE_NAMES = {'upload': 'host-to-device', 'geometry': 'point cloud',
               'fill': 'fill, message path', 'publish': 'publish, message path',
               'fill_bytes': 'fill, bytes path (CDR)', 'publish_bytes': 'publish, bytes path'}
BENCH_OUTPUTS = frozenset({'depth', 'depth_info', 'points'})
BACKEND_ROLE = 'backend'
# A backend's process may build a TensorRT engine of a large model (minutes), never hang.
BACKEND_TIMEOUT_S = 900.0
CPU_BACKENDS = [b for b in BACKENDS if b.bench_on_cpu and not b.cuda_only]  # compared by default


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------ in-process sections

def _image_msg(rgb: np.ndarray) -> Any:
    try:
        from sensor_msgs.msg import Image  # noqa: F401
        from std_msgs.msg import Header
        return conv.image_msg(Header(frame_id='camera'), rgb, 'rgb8')
    except ImportError:
        fields = conv.image_fields(rgb, 'rgb8')
        return argparse.Namespace(**{k: v for k, v in fields.items() if k != 'data'},
                                  data=fields['data'].tobytes())


def _fill_publish(pub: Any, encoded: List[Any], header: Any, info: Any,
                  as_bytes: bool) -> Tuple[float, float]:
    """Fill then publish one frame's outputs as messages or as CDR; return the two ms.

    The bytes path as the node takes it: CDR copied into each publisher's buffer (fill), which
    rcl publishes in place (publish; dpt_ros.ros.serialized).
    """
    t0 = time.perf_counter()
    if as_bytes:
        for o, f in encoded:
            pub.senders[o.name].write(cdr.fields_to_serialized(o.msg_type, f, header, info))
        t1 = time.perf_counter()
        for o, _ in encoded:
            pub.senders[o.name].send()
    else:
        out = {o.name: conv.fields_to_msg(o.msg_type, f, header, info) for o, f in encoded}
        t1 = time.perf_counter()
        pub.publish(out)
    return (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3


def scene_anchors(depth: np.ndarray, count: int = 1000, seed: int = 0) -> Anchors:
    """Return anchors at count random valid pixels of a true depth map (a prompted model's)."""
    return make_anchors(depth, count, 0.0, 0.0, np.random.default_rng(seed))


def bench_stages(pipe: Pipeline, rgb: np.ndarray, intr: Any, want: AbstractSet[str],
                 iters: int, warmup: int, pub: Any,
                 anchors: Optional[Anchors] = None) -> Dict[str, Any]:
    """Per-stage latency of our path, fill + publish as messages and as bytes included.

    anchors: every frame's (a prompted model needs them).
    """
    msg = _image_msg(rgb)
    info = conv.camera_info_from_intrinsics(intr) if pub.ok else None
    header = getattr(msg, 'header', None)
    stages: Dict[str, List[float]] = {s: [] for s in FRAME_STAGES + BYTES_STAGES}
    totals: List[float] = []
    pipeline: List[float] = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        frame = conv.decode_image(msg)
        t1 = time.perf_counter()
        r = pipe.process(frame, intr, want, anchors)
        t2 = time.perf_counter()
        times = {}
        if pub.ok:
            encoded = outputs.encode(r, EncodeOptions('32FC1', camera_info=True))
            # Alternate which path goes first: neither always finds the caches warm.
            for as_bytes in ((False, True) if i % 2 else (True, False)):
                keys = BYTES_STAGES if as_bytes else (FILL, PUBLISH)
                times.update(zip(keys, _fill_publish(pub, encoded, header, info, as_bytes)))
        if i < warmup:
            continue
        stages[DECODE].append((t1 - t0) * 1e3)
        for k, v in list(r.timings.items()) + list(times.items()):
            stages[k].append(v)
        pipeline.append((t2 - t0) * 1e3)
        totals.append(pipeline[-1] + sum(times.get(k, 0.0) for k in BYTES_STAGES))
    out = {k: summary(v) for k, v in stages.items() if v}
    out['total'] = summary(totals)
    out['pipeline'] = summary(pipeline)
    out['raw_total'] = totals
    out['raw_pipeline'] = pipeline
    out['raw_forward'] = stages[FORWARD]
    if pub.ok:
        msg_path = [a + b for a, b in zip(stages[FILL], stages[PUBLISH])]
        byte_path = [a + b for a, b in zip(*(stages[k] for k in BYTES_STAGES))]
        out['fill_publish'] = {'message': summary(msg_path), 'bytes': summary(byte_path)}
    return out


def timed_ms(pipe: Pipeline, fn: Callable[[], Any], iters: int, warmup: int,
             period_s: float = 0.0) -> List[float]:
    """Milliseconds of each timed call of fn (after warmup calls), the pipeline's GPU work in.

    period_s: start one call every period_s seconds (idle in between, as a node between paced
    frames), instead of back to back.
    """
    times = []
    tick = time.perf_counter()
    for i in range(warmup + iters):
        if period_s > 0:
            tick += period_s
            time.sleep(max(0.0, tick - time.perf_counter()))
        pipe.synchronize()
        t = time.perf_counter()
        fn()
        pipe.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - t) * 1e3)
    return times


def bench_forward(pipe: Pipeline, rgb: np.ndarray, iters: int, warmup: int,
                  anchors: Optional[Anchors] = None, period_s: float = 0.0) -> Dict[str, Any]:
    """Time the network alone (its backend too) on already-preprocessed pixel_values.

    anchors: a prompted model's, made into its prompt once (not timed). period_s: one
    forward every period_s seconds instead of back to back (timed_ms).
    """
    m = pipe.depth_model
    pv = pipe.pixel_values(m, conv.Frame(rgb, 'rgb8'))
    prompt = None
    if m.needs_prompt:
        dense, _ = dense_prompt([anchors], rgb.shape[:2], pipe.device)
        prompt = prompt_depth(dense)
    times = timed_ms(pipe, lambda: pipe.forward(m, pv, prompt), iters, warmup, period_s)
    res = summary(times)
    res['raw'] = times
    res['input'] = list(pv.shape)
    return res


def bench_cuda_flags(pipe: Pipeline, rgb: np.ndarray, iters: int,
                     warmup: int) -> Dict[str, float]:
    """Bare forward p50 with cuDNN autotuning off / on and, at fp32, TF32 off / on."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32)
    fp32 = pipe.depth_model.dtype == torch.float32
    out = {}
    try:
        for autotune in (False, True):
            for tf32 in ((False, True) if fp32 else (None,)):
                cudnn.benchmark = autotune
                if tf32 is not None:
                    cudnn.allow_tf32 = matmul.allow_tf32 = tf32
                name = f'cudnn.benchmark {autotune}' + ('' if tf32 is None else f', TF32 {tf32}')
                out[name] = bench_forward(pipe, rgb, iters, warmup)['p50']
    finally:
        cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved
    return out


def naive_pointcloud(depth: np.ndarray, fx: float, fy: float, cx: float, cy: float,
                     rgb: np.ndarray) -> bytes:
    """Build a point cloud the way many wrappers do: Python lists, struct.pack per point."""
    points = []
    h, w = depth.shape
    for v in range(h):
        for u in range(w):
            z = float(depth[v, u])
            if z > 0:
                r, g, b = (int(c) for c in rgb[v, u])
                points.append([(u - cx) * z / fx, (v - cy) * z / fy, z,
                               struct.unpack('f', struct.pack('I', r << 16 | g << 8 | b))[0]])
    return b''.join(struct.pack('ffff', *p) for p in points)


def bench_naive(ckpt: Path, rgb: np.ndarray, intr: Any, iters: int, warmup: int,
                device: torch.device, dtype: torch.dtype) -> Dict[str, Any]:
    """Time DPTImageProcessor + model + post_process_depth_estimation + Python-list cloud."""
    from transformers import AutoModelForDepthEstimation
    try:
        from transformers import DPTImageProcessor as Processor
        proc = Processor.from_pretrained(str(ckpt))
    except (ImportError, OSError, ValueError):
        from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil
        proc = DPTImageProcessorPil.from_pretrained(str(ckpt))
    model = AutoModelForDepthEstimation.from_pretrained(str(ckpt), use_safetensors=True)
    model = model.to(device, dtype).eval()
    totals, forwards = [], []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        inputs = proc(images=rgb, return_tensors='pt')
        pv = inputs['pixel_values'].to(device, dtype)
        _sync(device)
        tf = time.perf_counter()
        with torch.no_grad():
            out = model(pixel_values=pv)
        _sync(device)
        tf2 = time.perf_counter()
        out.predicted_depth = out.predicted_depth.float()
        depth = proc.post_process_depth_estimation(
            out, target_sizes=[rgb.shape[:2]])[0]['predicted_depth'].cpu().numpy()
        naive_pointcloud(depth, intr.fx, intr.fy, intr.cx, intr.cy, rgb)
        t1 = time.perf_counter()
        if i >= warmup:
            totals.append((t1 - t0) * 1e3)
            forwards.append((tf2 - tf) * 1e3)
    over = [t - f for t, f in zip(totals, forwards)]
    return {'total': summary(totals), 'forward': summary(forwards), 'overhead': summary(over),
            'raw_total': totals}


# ------------------------------------------------------------------ backends, each alone

def default_backends(dev: torch.device) -> List[str]:
    """Return the backends worth comparing on this device: on a CPU, those installed."""
    if dev.type == 'cuda':
        return list(BACKEND_NAMES)
    return [b.name for b in CPU_BACKENDS if b.installed()]


def parse_backends(text: str) -> List[str]:
    """'torch,compile,...' -> a list of model.backend values (argparse type); each checked."""
    names = [b.strip() for b in text.split(',') if b.strip()]
    bad = [b for b in names if b not in BACKENDS_BY_NAME]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown backend(s) {', '.join(bad) or repr(text)}: choose from "
            f"{', '.join(BACKEND_NAMES)} (comma-separated)")
    return list(dict.fromkeys(names))


def use_device(device: str) -> torch.device:
    """Make cuda:N this process's current device (helpers, engine builder); return it."""
    dev = torch.device(device)
    if dev.type == 'cuda' and dev.index is not None:
        torch.cuda.set_device(dev)
    return dev


def depth_points_config(metric: bool) -> Dict[str, Any]:
    """Return depth settings that publish depth + points for every model, all valid.

    Relative checkpoints run through affine_inverse (as a robot would run DPT-style models),
    with the whole cloud valid (worst case).
    """
    return {'depth.min': 0.0, 'depth.max': 10000.0,
            'depth.mode': 'metric' if metric else 'affine_inverse'}


def make_pipeline(ckpt: Path, device: str, precision: str, backend: str = 'torch',
                  engine_dir: str = '', log: Callable[[str], None] = lambda m: None
                  ) -> Tuple[Pipeline, Dict[str, Any]]:
    """Return the benchmark's pipeline and the node settings that match it (depth + points)."""
    cfg = Config().replace({'model.depth': str(ckpt), 'model.device': device,
                            'model.precision': precision, 'model.backend': backend,
                            'model.engine_dir': engine_dir,
                            'anchors.source': 'depth_image' if prompted(ckpt) else 'none'})
    pipe = Pipeline(cfg, log=log)
    depth_cfg = depth_points_config(pipe.depth_model.gives_metres)
    pipe.update(pipe.config.replace(depth_cfg))
    # The DDS node shares the engine / export cache, so it loads what was built here.
    return pipe, dict(depth_cfg, **{'model.engine_dir': engine_dir})


def prompted(ckpt: Path) -> bool:
    """Whether a checkpoint folder holds a prompted model (its anchors are its prompt)."""
    return json.loads((ckpt / 'config.json').read_text()).get('model_type') in \
        PROMPTED_MODEL_TYPES


def naive_serves(pipe: Pipeline) -> bool:
    """Whether the naive wrapper (transformers' DPT processor, no prompt) runs this model."""
    m = pipe.depth_model
    return m.spec.kind == 'dpt' and not m.needs_prompt


def run_backend(args: argparse.Namespace) -> int:
    """Child process of bench_backend: time one backend, print its raw figures as JSON."""
    work = Path(args.work_dir).expanduser()
    ckpt = random_checkpoint(args.models[0], work)
    notes: List[str] = []
    use_device(args.device)
    pipe, _ = make_pipeline(ckpt, args.device, args.precision, args.backend[0],
                            str(work / 'engines'), notes.append)
    warm = pipe.prepare(args.height, args.width)  # engine build/load, compile: not timed
    s = synthetic_scene(args.width, args.height)
    no_pub = argparse.Namespace(ok=False)
    anchors = scene_anchors(s.depth) if pipe.prompted else None
    if args.period > 0:  # bench_node_forward: the forward alone, back to back and paced
        fw = bench_forward(pipe, s.rgb, args.iters, 2, anchors)
        paced = bench_forward(pipe, s.rgb, args.iters, 1, anchors, args.period)
        said = {k: os.environ[k] for k in OPENMP_VARS if k in os.environ}
        print(json.dumps({'ran': pipe.depth_model.backend, 'forward': fw['raw'],
                          'paced': paced['raw'], 'openmp': said, 'log': notes}))
        pipe.close()
        return 0
    st = bench_stages(pipe, s.rgb, s.intrinsics, BENCH_OUTPUTS, args.iters, 2, no_pub, anchors)
    fw = bench_forward(pipe, s.rgb, args.iters, 2, anchors)
    # Read after the timings: a backend may fall back on any call, not only the first.
    print(json.dumps({'ran': pipe.depth_model.backend, 'forward': fw['raw'],
                      'pipeline': st['raw_pipeline'], 'in_pipeline': st['raw_forward'],
                      'warmup_s': warm.get('depth', 0.0) / 1e3, 'log': notes}))
    pipe.close()
    return 0


def _backend_process(what: List[Any], timeout: float, extra: Sequence[str] = (),
                     env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Run run_backend in a child process; return its JSON, or ran 'failed' with the error.

    what: preset, backend, work folder, device, precision, width, height, iters.
    """
    preset, backend, work, device, precision, width, height, iters = what
    cmd = [sys.executable, '-m', 'dpt_ros.tools.bench', '--role', BACKEND_ROLE,
           '--backend', backend, '--models', preset, '--device', device, '--precision',
           precision, '--width', str(width), '--height', str(height), '--iters', str(iters),
           '--work-dir', str(work), *extra]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {'ran': 'failed', 'error': f'its process took over {timeout:g} s: stopped'}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        why = (proc.stderr.strip().splitlines() or [f'exit {proc.returncode}'])[-1]
        return {'ran': 'failed', 'error': why[:300]}
    return json.loads(lines[-1])


def bench_backend(preset: str, backend: str, work: Path, device: str, precision: str,
                  width: int, height: int, iters: int,
                  timeout: float = BACKEND_TIMEOUT_S) -> Dict[str, Any]:
    """Time one backend alone in a process of its own: bare forward and in-process pipeline."""
    raw = _backend_process([preset, backend, work, device, precision, width, height, iters],
                           timeout)
    if 'error' in raw:
        return raw
    row = _backend_row(raw['ran'], raw['forward'], raw['pipeline'], raw['in_pipeline'],
                       raw['warmup_s'])
    row['log'] = raw['log']
    if raw['ran'] != backend:  # the fallback's one log line says why
        row['error'] = next((ln for ln in raw['log'] if 'running' in ln),
                            f"fell back to {raw['ran']}")[:300]
    return row


def bench_node_forward(preset: str, backend: str, work: Path, device: str, precision: str,
                       width: int, height: int, iters: int, period_s: float,
                       timeout: float = BACKEND_TIMEOUT_S) -> Dict[str, Any]:
    """Time the bare forward in a process of its own set up as dpt_node sets up its own.

    dpt_node runs with OpenMP threads that sleep when out of work (ros.entry.openmp_env), the
    bare forward of this process with libgomp's default spin; and the node's latency phase
    paces frames, so its worker idles between them. This child runs with the node's OpenMP
    setting and times the forward back to back and one every period_s seconds: what the
    setting costs, what idling costs, and what is left for the node itself.
    """
    raw = _backend_process([preset, backend, work, device, precision, width, height, iters],
                           timeout, ['--period', f'{period_s:.6f}'],
                           dict(os.environ, **openmp_env(os.environ)))
    if 'error' in raw:
        return raw
    setting = ', '.join(f'{k}={v}' for k, v in raw['openmp'].items())
    return {'ran': raw['ran'], 'openmp': setting or "libgomp's default", 'period_s': period_s,
            'back_to_back': summary(raw['forward']), 'paced': summary(raw['paced'])}


def forward_as_node(d: Dict[str, Any]) -> Dict[str, float]:
    """Split the node's forward against the bare one into the OpenMP setting, idling, the rest.

    d: one DDS section with forward_bare_pooled_p50 (this process, back to back), the node's
    forward from /diagnostics (latency phase) and node_forward (bench_node_forward).
    """
    nf = d.get('node_forward', {})
    node = d['latency'].get('node_p50_ms', {}).get(FORWARD)
    if nf.get('ran') != d.get('backend') or not node or 'forward_bare_pooled_p50' not in d:
        return {}
    b2b, paced = nf['back_to_back']['p50'], nf['paced']['p50']
    return {'ratio_setting_vs_bare': b2b / d['forward_bare_pooled_p50'],
            'ratio_paced_vs_back_to_back': paced / b2b,
            'ratio_node_forward_vs_paced': node / paced,
            'ratio_fps_vs_setting_forward': d['throughput']['fps'] * b2b / 1e3}


def fastest(rows: Dict[str, Dict[str, Any]]) -> str:
    """Return the backend with the lowest bare forward p50 among those that really ran."""
    # A fallback is eager torch under another name: it never competes.
    ran = {b: r for b, r in rows.items() if r['ran'] == b}
    return min(ran, key=lambda b: ran[b]['forward']['p50'])


def _backend_row(ran: str, forward: List[float], pipeline: List[float],
                 in_pipeline: List[float], warmup_s: float) -> Dict[str, Any]:
    over = [p - f for p, f in zip(pipeline, in_pipeline)]
    return {'ran': ran, 'forward': summary(forward), 'pipeline': summary(pipeline),
            'overhead': summary(over), 'warmup_s': warmup_s, 'raw_forward': forward}


# ------------------------------------------------------------------ driver and report

def _in_process_publisher() -> Any:
    """Return rclpy publishers to time message fill and publish, or a stand-in (ok False)."""
    from dpt_ros.tools.dds_clients import have_rclpy, InProcessPublisher
    if have_rclpy():
        return InProcessPublisher()
    return argparse.Namespace(ok=False, close=lambda: None)


def _strip_raw(d: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in d.items() if not k.startswith('raw')}


def bench_size(ctx: argparse.Namespace, preset: str, ckpt: Path, pipe: Pipeline,
               depth_cfg: Dict[str, Any], w: int, h: int) -> Dict[str, Any]:
    """Every section for one model at one camera size."""
    log, first = ctx.log, (w, h) == ctx.sizes[0]
    s = synthetic_scene(w, h)
    warm = pipe.prepare(h, w)  # autotune (and any backend's start-up): not in the timings
    log(f'  {w}x{h}: stages ...')
    anchors = scene_anchors(s.depth) if pipe.prompted else None
    st = bench_stages(pipe, s.rgb, s.intrinsics, BENCH_OUTPUTS, ctx.iters, ctx.warmup, ctx.pub,
                      anchors)
    fw = bench_forward(pipe, s.rgb, ctx.iters, ctx.warmup, anchors)
    ours_over = [t - f for t, f in zip(st['raw_total'], st['raw_forward'])]
    size = {'stages': _strip_raw(st), 'forward_bare': _strip_raw(fw),
            'our_overhead': summary(ours_over),
            'raw': {'ours': st['raw_total'], 'forward': fw['raw']}}
    if naive_serves(pipe):
        naive_iters = max(2, ctx.iters // 2) if w * h > 640 * 480 else ctx.iters
        log(f'  {w}x{h}: naive wrapper ...')
        nv = bench_naive(ckpt, s.rgb, s.intrinsics, naive_iters, 1, ctx.dev,
                         pipe.depth_model.dtype)
        size['naive'] = _strip_raw(nv)
        size['raw']['naive'] = nv['raw_total']
        size['ratio_naive_overhead_vs_ours'] = (
            nv['overhead']['p50'] / max(size['our_overhead']['p50'], 1e-6))
    if ctx.cuda_flags and ctx.dev.type == 'cuda':
        size['cuda_flags'] = bench_cuda_flags(pipe, s.rgb, ctx.iters, ctx.warmup)
    backends = {'torch': _backend_row(pipe.depth_model.backend, fw['raw'], st['raw_pipeline'],
                                      st['raw_forward'], warm.get('depth', 0.0) / 1e3)}
    for b in ctx.backends:
        if b != 'torch':
            log(f'  {w}x{h}: backend {b} (own process) ...')
            backends[b] = bench_backend(preset, b, ctx.work, str(ctx.dev), ctx.precision, w, h,
                                        ctx.iters)
    best = fastest(backends)
    size['backends'] = {b: _strip_raw(r) for b, r in backends.items()}
    size['best_backend'] = best
    if not ctx.dds or (ctx.smoke and not first) or pipe.prompted:
        return size  # a prompted model's node needs an anchor stream beside the images
    from dpt_ros.tools.dds_clients import bench_dds
    # The node's frame time with that backend: its pipeline plus this run's fill + publish.
    est = backends[best]['pipeline']['p50'] + st['total']['p50'] - st['pipeline']['p50']
    frames = 8 if ctx.smoke else ctx.dds_frames
    d = bench_dds(ckpt, None, str(ctx.dev), ctx.precision, w, h, frames, est, log, depth_cfg,
                  backend=best, relay=True, keep_freed_off=True)
    # This machine's speed drifts by 10-15 % over minutes (a shared VM): time the bare
    # forward again right after the DDS run and compare with both.
    if best == 'torch':
        after = bench_forward(pipe, s.rgb, ctx.iters, ctx.warmup)['raw']
    else:
        after = bench_backend(preset, best, ctx.work, str(ctx.dev), ctx.precision, w, h,
                              ctx.iters).get('raw_forward', [])
    bare = float(percentile(backends[best]['raw_forward'] + after, 50))
    # The same forward set up as the node runs it, back to back and paced as its frames were.
    d['node_forward'] = bench_node_forward(preset, best, ctx.work, str(ctx.dev), ctx.precision,
                                           w, h, ctx.iters, 1.0 / d['latency']['rate_hz'])
    d['forward_bare_before'] = backends[best]['forward']
    d['forward_bare_after'] = summary(after)
    d['forward_bare_pooled_p50'] = bare
    d['ratio_e2e_vs_forward'] = d['latency']['latency']['p50'] / bare
    d['ratio_fps_vs_forward'] = d['throughput']['fps'] * bare / 1e3
    node = d['latency'].get('node_p50_ms', {})
    if node.get(FORWARD):
        d['ratio_node_forward_vs_bare'] = node[FORWARD] / bare
    d.update(forward_as_node(d))
    if 'fill_publish' in size['stages']:
        inproc_fp = size['stages']['fill_publish']['bytes']['p50']
        for run in (d, d.get('keep_freed_off')):
            stages = (run or {}).get('latency', {}).get('node_p50_ms', {})
            if FILL in stages and PUBLISH in stages:
                run['node_fill_publish'] = stages[FILL] + stages[PUBLISH]
                run['ratio_node_fill_publish_vs_inprocess'] = \
                    run['node_fill_publish'] / max(inproc_fp, 1e-6)
    relay_fp = d.get('relay', {}).get('fill_publish', {}).get('p50')
    if relay_fp and 'node_fill_publish' in d:
        d['ratio_node_fill_publish_vs_relay'] = d['node_fill_publish'] / max(relay_fp, 1e-6)
    if 'relay' in d:
        inproc = backends[best]['overhead']['p50']
        if 'fill_publish' in size['stages']:
            inproc += size['stages']['fill_publish']['bytes']['p50']
        d['inprocess_overhead'] = inproc
        d.update(node_share(d))
    size['dds'] = d
    if first and (ctx.smoke or preset.startswith('tiny') or ctx.dev.type == 'cuda'):
        # Eager torch: a runtime would export the segmentation model on the first frames.
        size['dds_segmentation'] = bench_dds(ckpt, ctx.seg_ckpt, str(ctx.dev), ctx.precision, w,
                                             h, frames, st['total']['p50'] * 1.5, log, depth_cfg)
    return size


def _setup(args: argparse.Namespace) -> Tuple[Path, torch.device, List[str], Dict[str, Any]]:
    """Return the work folder, device, model presets and the results header of a run."""
    work = Path(args.work_dir).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    # cuda:N: the naive wrapper and every helper of this process run there too.
    dev = use_device('cuda' if (args.device == 'auto' and torch.cuda.is_available())
                     else ('cpu' if args.device == 'auto' else args.device))
    if args.models:
        presets = args.models
    elif args.smoke:
        presets = ['tiny-depth-anything']
    else:
        presets = ['hybrid-depth', 'large-depth'] if dev.type == 'cuda' else \
            ['tiny-depth-anything', 'base-depth']
    precision = args.precision
    if precision == 'auto':
        precision = 'fp16' if dev.type == 'cuda' else 'fp32'
    results: Dict[str, Any] = {
        'device': torch.cuda.get_device_name(dev) if dev.type == 'cuda' else
        f'CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, '
        f'{torch.get_num_threads()} torch threads)',
        'torch': torch.__version__, 'precision': precision, 'smoke': bool(args.smoke),
        'models': {}}
    return work, dev, presets, results


def run(args: argparse.Namespace) -> Dict[str, Any]:
    """Run every section for every configured model; return the results dict."""
    from dpt_ros.tools.dds_clients import have_rclpy
    work, dev, presets, results = _setup(args)
    precision = results['precision']
    iters, warmup = (3, 1) if args.smoke else (args.iters, 2)
    ctx = argparse.Namespace(
        log=print, dev=dev, precision=precision, work=work, iters=iters, warmup=warmup,
        sizes=[(640, 480)] if args.smoke else [(640, 480), (1280, 720)], smoke=args.smoke,
        backends=args.backend or default_backends(dev), dds=not args.no_dds and have_rclpy(),
        dds_frames=args.dds_frames, seg_ckpt=random_checkpoint('tiny-seg', work),
        cuda_flags=args.cuda_flags)
    results['backends'] = ctx.backends
    ctx.pub = _in_process_publisher()
    try:
        for preset in presets:
            ckpt = random_checkpoint(preset, work)
            ctx.log(f'{preset}: {ckpt}')
            pipe, depth_cfg = make_pipeline(ckpt, str(dev), precision,
                                            engine_dir=str(work / 'engines'),
                                            log=lambda m: ctx.log(f'  {m}'))
            entry: Dict[str, Any] = {'params_M': pipe.depth_model.num_parameters / 1e6,
                                     'sizes': {}}
            for w, h in ctx.sizes:
                size = bench_size(ctx, preset, ckpt, pipe, depth_cfg, w, h)
                entry['sizes'][f'{w}x{h}'] = size
                naive = size.get('naive', {}).get('overhead', {}).get('p50')
                ctx.log(f"  {w}x{h}: forward {size['forward_bare']['p50']:.1f} ms, ours total "
                        f"{size['stages']['total']['p50']:.1f} ms (overhead "
                        f"{size['our_overhead']['p50']:.1f}), naive overhead "
                        f"{'-' if naive is None else f'{naive:.1f} ms'}, fastest backend "
                        f"{size['best_backend']}")
            pipe.close()
            results['models'][preset] = entry
    finally:
        ctx.pub.close()
    return results


# ------------------------------------------------------------------ one forward, several heads

MULTITASK_PRESET = 'tipsv2-b14'  # google/tipsv2-b14-dpt's shape: ViT-B/14, three heads
MULTITASK_OUTPUTS = frozenset({'depth', 'labels'})


def bench_multitask(preset: str, work: Path, device: str, precision: str, width: int,
                    height: int, iters: int, warmup: int,
                    log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Time one multi-task forward for depth + labels against the two forwards it replaces.

    One: the checkpoint named in model.depth and model.segmentation (one backbone pass, its
    depth and segmentation heads). Two: the same architecture as a depth checkpoint and a
    second segmentation checkpoint (another seed: not the same checkpoint, so loaded apart),
    each with its own backbone pass. Bare forwards on ready pixel_values, and the pipeline for
    depth/image + segmentation/image; the two are timed in alternation, frame by frame.
    """
    one_ckpt = random_checkpoint(preset, work)
    two_ckpt = work / f'{preset}-seed1'
    if not (two_ckpt / 'config.json').exists():
        make_random_checkpoint(two_ckpt, preset, seed=1)
    base = {'model.device': device, 'model.precision': precision, 'normals.source': 'depth'}
    pipes = {
        'one': Pipeline(Config().replace(dict(base, **{
            'model.depth': str(one_ckpt), 'model.segmentation': str(one_ckpt)})), log=log),
        'two': Pipeline(Config().replace(dict(base, **{
            'model.depth': str(one_ckpt), 'model.segmentation': str(two_ckpt)})), log=log)}
    s = synthetic_scene(width, height)
    frame = conv.Frame(s.rgb, 'rgb8')
    ready = {}
    for k, pipe in pipes.items():
        pipe.prepare(height, width)
        ready[k] = [(m, pipe.pixel_values(m, frame)) for m in pipe.models()]
    times = {k: {'forward': [], 'pipeline': []} for k in pipes}
    runs = dict.fromkeys(pipes, 0)
    for i in range(warmup + iters):
        for k in (('one', 'two') if i % 2 == 0 else ('two', 'one')):
            pipe = pipes[k]
            fw = timed_ms(pipe, lambda: [pipe.forward(m, pv) for m, pv in ready[k]], 1, 0)
            before = pipe.forwards
            t = time.perf_counter()
            pipe.process(frame, s.intrinsics, MULTITASK_OUTPUTS)
            pipe.synchronize()
            ms = (time.perf_counter() - t) * 1e3
            runs[k] = pipe.forwards - before
            if i >= warmup:
                times[k]['forward'] += fw
                times[k]['pipeline'].append(ms)
    out: Dict[str, Any] = {'preset': preset, 'camera': f'{width}x{height}'}
    for k, pipe in pipes.items():
        models = pipe.models()
        out[k] = {'forward': summary(times[k]['forward']),
                  'pipeline': summary(times[k]['pipeline']),
                  'forwards_per_frame': runs[k],
                  'models': [f'{type(m.net.model).__name__} ({m.num_parameters / 1e6:.1f} M)'
                             for m in models],
                  'input': list(ready[k][0][1].shape)}
        pipe.close()
    for part in ('forward', 'pipeline'):
        out[f'ratio_{part}'] = out['two'][part]['p50'] / max(out['one'][part]['p50'], 1e-6)
    return out


def markdown_multitask(res: Dict[str, Any]) -> str:
    """Render the multi-task comparison as markdown."""
    net_in = 'x'.join(map(str, res['one']['input'][2:]))
    lines = [f"Device: {res['device']}; torch {res['torch']}; precision {res['precision']}.",
             '', f"**{res['preset']}**, depth + segmentation of {res['camera']} camera frames, "
             f"network input {net_in}:", '',
             '| | models | forwards per frame | bare forward p50 ms | pipeline p50 ms |',
             '|---|---|---|---|---|']
    for k, label in (('one', 'one checkpoint in model.depth and model.segmentation'),
                     ('two', 'a depth and a segmentation checkpoint')):
        r = res[k]
        lines.append(f"| {label} | {', '.join(r['models'])} | {r['forwards_per_frame']} | "
                     f"{r['forward']['p50']:.1f} | {r['pipeline']['p50']:.1f} |")
    lines += ['', f"- two forwards / one: bare forward **{res['ratio_forward']:.2f}x**, "
              f"pipeline **{res['ratio_pipeline']:.2f}x**"]
    return '\n'.join(lines)


def run_multitask(args: argparse.Namespace) -> Dict[str, Any]:
    """Run --multitask: one preset (default MULTITASK_PRESET) at --width x --height."""
    work, dev, _, res = _setup(args)
    preset = (args.models or [MULTITASK_PRESET])[0]
    print(f'{preset}: one multi-task forward vs two forwards, {args.iters} frames ...')
    res.update(bench_multitask(preset, work, str(dev), res['precision'], args.width,
                               args.height, args.iters, 1 if args.smoke else 2,
                               log=lambda m: print(f'  {m}')))
    return res


def other_size(width: int, height: int) -> Tuple[int, int]:
    """Return a second camera resolution of another aspect ratio (mixed-sizes figures)."""
    return (640, 480) if (width, height) == (1280, 720) else (1280, 720)


def bench_batching(ckpt: Path, device: str, precision: str, cameras: int,
                   sizes: List[Tuple[int, int]], iters: int = 3, warmup: int = 1
                   ) -> Dict[str, Any]:
    """Time the network alone: what batching cameras buys, and frames of two sizes.

    same: `cameras` frames of sizes[0] as one batch vs one forward each. mixed: one frame of
    each of sizes[0] and sizes[1]: when their network inputs agree (a fixed-input model),
    one forward of both, as the node runs them, vs one forward each; when they differ (a
    model that keeps the aspect ratio), one forward each, as the node runs them, vs one batch
    padded to the larger network input (the alternative the node does not take: it would
    change what the model sees).
    """
    pipe, _ = make_pipeline(ckpt, device, precision)
    m = pipe.depth_model

    def timed(fn: Callable[[], Any]) -> float:
        return float(np.median(timed_ms(pipe, fn, iters, warmup)))

    try:
        a, b = [pipe.pixel_values(m, conv.Frame(synthetic_scene(w, h).rgb, 'rgb8'))
                for w, h in sizes[:2]]
        batch = a.expand(cameras, *a.shape[1:]).contiguous()
        single_ms = timed(lambda: [pipe.forward(m, a) for _ in range(cameras)])
        batch_ms = timed(lambda: pipe.forward(m, batch))
        separate_ms = timed(lambda: (pipe.forward(m, a), pipe.forward(m, b)))
        hh, ww = max(a.shape[-2], b.shape[-2]), max(a.shape[-1], b.shape[-1])
        if a.shape == b.shape:
            both = torch.cat([a, b])
            mixed = {'shared_ms': timed(lambda: pipe.forward(m, both)),
                     'separate_ms': separate_ms}
            mixed['shared_speedup'] = separate_ms / mixed['shared_ms']
        else:
            padded = a.new_zeros((2, a.shape[1], hh, ww))
            padded_ms = timed(lambda: pipe.forward(m, padded))
            mixed = {'separate_ms': separate_ms, 'padded_ms': padded_ms}
            mixed['padded_vs_separate'] = mixed['padded_ms'] / separate_ms
    finally:
        pipe.close()
    return {'cameras': cameras, 'sizes': [f'{w}x{h}' for w, h in sizes[:2]],
            'inputs': [list(a.shape[-2:]), list(b.shape[-2:])], 'padded_input': [hh, ww],
            'same': {'single_ms': single_ms, 'batch_ms': batch_ms,
                     'speedup': single_ms / batch_ms},
            'mixed': mixed}


def run_cameras(args: argparse.Namespace) -> Dict[str, Any]:
    """Many cameras: one multi-camera node against one node per camera, per model."""
    from dpt_ros.tools.dds_clients import bench_cameras
    work, dev, presets, results = _setup(args)
    backend = (args.backend or ['torch'])[0]
    results['backend'] = backend
    for preset in presets:
        ckpt = random_checkpoint(preset, work)
        config = json.loads((ckpt / 'config.json').read_text())
        metric = config.get('depth_estimation_type') == 'metric'
        print(f'{preset}: {args.cameras} cameras {args.width}x{args.height} at '
              f'{args.camera_rate:g} Hz, {args.seconds:g} s')
        entry: Dict[str, Any] = {'batching': bench_batching(
            ckpt, str(dev), results['precision'], args.cameras,
            [(args.width, args.height), other_size(args.width, args.height)])}
        for one_node in (True, False):
            r = bench_cameras(ckpt, str(dev), results['precision'], args.cameras, args.width,
                              args.height, args.camera_rate, args.seconds, one_node,
                              depth_points_config(metric), print, backend)
            entry['one_node' if one_node else 'separate'] = r
        results['models'][preset] = entry
    return results


def markdown_cameras(res: Dict[str, Any]) -> str:
    """Render the many-cameras results as markdown (README format)."""
    lines = [f"Device: {res['device']}; torch {res['torch']}; precision {res['precision']}"
             f"{' (smoke run)' if res['smoke'] else ''}.", '']
    for preset, entry in res['models'].items():
        one = entry['one_node']
        lines += [f"**{preset}**, {one['cameras']} cameras {one['width']}x{one['height']} at "
                  f"{one['rate_hz']:g} Hz each ({one['sent_per_camera']} frames each in "
                  f"{one['seconds']:g} s), depth + points:", '',
                  '| layout | resident memory MiB | output frames/s (all cameras) | '
                  'per-camera latency p50 / p95 ms | frames per camera | lowest fair share | '
                  'largest batch | backend builds: in all / after activation |',
                  '|---|---|---|---|---|---|---|---|']

        def num(r: Dict[str, Any], key: str) -> str:
            return '-' if r.get(key) is None else str(r[key])
        for r in (entry['one_node'], entry['separate']):
            cams = r['per_camera'].values()
            lat = ', '.join(f"{c['p50']:.0f} / {c['p95']:.0f}" for c in cams)
            got = ', '.join(str(c['received']) for c in cams)
            lines.append(f"| {r['layout']} | {r['rss_mb']:.0f} | {r['fps']:.2f} | {lat} | "
                         f"{got} | {r['min_share']:.2f} | {num(r, 'max_batch_size')} | "
                         f"{r.get('backend', 'torch')}: {num(r, 'backend_builds')} / "
                         f"**{num(r, 'backend_builds_after_activation')}** |")
        lines.append('')
        b = entry.get('batching')
        if b:
            same, mixed = b['same'], b['mixed']
            (ha, wa), (hb, wb) = b['inputs']
            lines.append(f"- network alone, {b['cameras']} frames of {b['sizes'][0]} (input "
                         f"{wa}x{ha}): one batch {same['batch_ms']:.1f} ms vs one forward each "
                         f"{same['single_ms']:.1f} ms -> batching **{same['speedup']:.2f}x**")
            two = f"- two cameras, {b['sizes'][0]} and {b['sizes'][1]}"
            if 'shared_ms' in mixed:
                lines.append(f"{two} (both network input {wa}x{ha}): one forward of both, as "
                             f"the node runs them, {mixed['shared_ms']:.1f} ms vs one forward "
                             f"each {mixed['separate_ms']:.1f} ms -> "
                             f"**{mixed['shared_speedup']:.2f}x**")
            else:
                lines.append(f"{two} (inputs {wa}x{ha} and {wb}x{hb}): one forward each, as "
                             f"the node runs them, {mixed['separate_ms']:.1f} ms vs one batch "
                             f"padded to {b['padded_input'][1]}x{b['padded_input'][0]} "
                             f"{mixed['padded_ms']:.1f} ms -> padding "
                             f"**{mixed['padded_vs_separate']:.2f}x** the time (not done: it "
                             'changes what the model sees)')
            lines.append('')
    return '\n'.join(lines)


def markdown(res: Dict[str, Any]) -> str:
    """Render the results as markdown tables (README Performance section format)."""
    lines = [f"Device: {res['device']}; torch {res['torch']}; precision {res['precision']}"
             f"{' (smoke run)' if res['smoke'] else ''}.", '']
    for preset, entry in res['models'].items():
        for size, r in entry['sizes'].items():
            net_in = 'x'.join(map(str, r['forward_bare']['input'][2:]))
            lines += [f"**{preset}** ({entry['params_M']:.1f} M params, stages with eager "
                      f"torch), {size} camera frames, network input {net_in}:",
                      '', '| stage | p50 ms | p95 ms |', '|---|---|---|']
            for k in FRAME_STAGES + BYTES_STAGES:
                if k in r['stages']:
                    v = r['stages'][k]
                    lines.append(f"| {STAGE_NAMES.get(k, k)} | {v['p50']:.2f} | "
                                 f"{v['p95']:.2f} |")
            t, f = r['stages']['total'], r['forward_bare']
            lines += [f"| **total (ours, in-process, bytes path)** | {t['p50']:.2f} | "
                      f"{t['p95']:.2f} |",
                      f"| bare forward | {f['p50']:.2f} | {f['p95']:.2f} |"]
            if 'naive' in r:
                lines += [f"| naive wrapper total | {r['naive']['total']['p50']:.2f} | "
                          f"{r['naive']['total']['p95']:.2f} |", '']
                lines.append(f"- overhead outside the forward: ours "
                             f"{r['our_overhead']['p50']:.1f} ms, naive "
                             f"{r['naive']['overhead']['p50']:.1f} ms -> "
                             f"**{r['ratio_naive_overhead_vs_ours']:.1f}x lower**")
            else:
                lines += ['', f"- overhead outside the forward: ours "
                          f"{r['our_overhead']['p50']:.1f} ms (no naive wrapper: transformers' "
                          'DPT processor does not serve this checkpoint)']
            if 'cuda_flags' in r:
                lines.append('- bare forward p50 by setting: ' + '; '.join(
                    f'{k}: {v:.2f} ms' for k, v in r['cuda_flags'].items()))
            fp = r['stages'].get('fill_publish')
            if fp:
                m, b = fp['message']['p50'], fp['bytes']['p50']
                lines.append(f"- fill + publish of depth + points (in-process, subscriber "
                             f"attached): message path {m:.2f} ms, bytes path {b:.2f} ms -> "
                             f"**{m / max(b, 1e-6):.2f}x lower**")
            lines += _backend_lines(r)
            for key, label in (('dds', 'depth + points'),
                               ('dds_segmentation', 'depth + points + segmentation')):
                if key in r:
                    d = r[key]
                    lat = d['latency']['latency']
                    line = (f"- DDS end-to-end ({label}, publisher -> dpt_node -> subscriber "
                            f"processes): p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms "
                            f"({d['latency']['received']}/{d['latency']['sent']} at "
                            f"{d['latency']['rate_hz']:.1f} Hz); sustained "
                            f"{d['throughput']['fps']:.2f} frames/s")
                    if 'throughput_no_overlap' in d:
                        line += (f" with `output.overlap` on, "
                                 f"{d['throughput_no_overlap']['fps']:.2f} off")
                    if 'forward_bare_pooled_p50' in d:
                        before = d.get('forward_bare_before', r['forward_bare'])['p50']
                        line += (f"; bare forward p50 {before:.1f} ms before "
                                 f"and {d['forward_bare_after']['p50']:.1f} ms after this run "
                                 f"(pooled {d['forward_bare_pooled_p50']:.1f} ms)")
                    if 'ratio_e2e_vs_forward' in d:
                        line += (f"; e2e / bare forward **{d['ratio_e2e_vs_forward']:.2f}x**, "
                                 f"throughput / (1 / bare forward) "
                                 f"**{d['ratio_fps_vs_forward']:.2f}x**")
                    if 'backend' in d:
                        line += f"; backend {d['backend']}"
                    node_fw = d['latency'].get('node_p50_ms', {}).get('forward')
                    if node_fw:
                        line += (f"; forward as timed inside the node {node_fw:.1f} ms, e2e / "
                                 f"that {lat['p50'] / node_fw:.2f}x")
                    lines.append(line)
                    if 'relay' in d:
                        lines.append(_floor_line(d))
                    lines += _node_lines(d)
            lines.append('')
    return '\n'.join(lines)


def _backend_lines(r: Dict[str, Any]) -> List[str]:
    """Render the backend table: each backend timed alone in its own process."""
    rows = r.get('backends', {})
    torch_fw = rows.get('torch', {}).get('forward', {}).get('p50')
    if len(rows) < 2 or not torch_fw:
        return []
    lines = ['', '| backend (alone in its process) | bare forward p50 ms | in-process pipeline '
             'p50 ms | forward vs eager torch | start-up warm-up s |', '|---|---|---|---|---|']
    for b, row in rows.items():
        if row['ran'] != b:  # never timed under the name it was asked by
            why = row.get('error') or f"fell back to {row['ran']}"
            lines.append(f"| {b} (ran {row['ran']}) | - | - | {why} | - |")
            continue
        fw = row['forward']['p50']
        lines.append(f"| {b}{' (fastest)' if b == r.get('best_backend') else ''} | {fw:.2f} | "
                     f"{row['pipeline']['p50']:.2f} | {torch_fw / max(fw, 1e-6):.2f}x | "
                     f"{row.get('warmup_s', 0.0):.1f} |")
    return lines + ['']


def _node_lines(d: Dict[str, Any]) -> List[str]:
    """Render what the node process spends per frame, memory.keep_freed on (deployed) and off."""
    lines = []
    stages = d['latency'].get('node_p50_ms', {})
    if 'ratio_node_forward_vs_bare' in d:
        line = (f"- inside the node (p50 from /diagnostics, latency phase): forward "
                f"{stages[FORWARD]:.1f} ms = **{d['ratio_node_forward_vs_bare']:.2f}x** the bare "
                'forward')
        if 'node_fill_publish' in d:
            line += (f"; fill + publish {d['node_fill_publish']:.2f} ms = "
                     f"**{d['ratio_node_fill_publish_vs_inprocess']:.2f}x** the in-process "
                     'bytes path (its subscriber in the same process)')
        if 'ratio_node_fill_publish_vs_relay' in d:
            line += (f", **{d['ratio_node_fill_publish_vs_relay']:.2f}x** the relay's own fill + "
                     f"publish of the same topics to the same subscriber process "
                     f"({d['relay']['fill_publish']['p50']:.2f} ms)")
        lines.append(line)
    if 'ratio_setting_vs_bare' in d:
        nf = d['node_forward']
        lines.append(
            f"- the bare forward in a process set up as the node's ({nf['openmp']}): "
            f"{nf['back_to_back']['p50']:.1f} ms back to back = "
            f"**{d['ratio_setting_vs_bare']:.2f}x** the bare forward above; "
            f"{nf['paced']['p50']:.1f} ms one every {nf['period_s']:.2f} s as the latency phase "
            f"paces frames = **{d['ratio_paced_vs_back_to_back']:.2f}x** back to back; the "
            f"node's forward **{d['ratio_node_forward_vs_paced']:.2f}x** that paced figure; "
            f"throughput / (1 / back-to-back figure) **{d['ratio_fps_vs_setting_forward']:.2f}x**")
    elif d.get('node_forward', {}).get('ran') == 'failed':
        lines.append(f"- the bare forward set up as the node's: {d['node_forward']['error']}")
    if 'node_per_frame' not in d['latency']:
        return lines
    runs = [d] + ([d['keep_freed_off']] if 'keep_freed_off' in d else [])

    def per(r: Dict[str, Any], phase: str, key: str, fmt: str) -> str:
        v = r.get(phase, {}).get('node_per_frame', {}).get(key)
        return '-' if v is None else format(v, fmt)

    def fps(r: Dict[str, Any], phase: str) -> str:
        return f"{r[phase]['fps']:.2f}" if phase in r else '-'
    rows = [('e2e p50 ms (latency phase)', lambda r: f"{r['latency']['latency']['p50']:.1f}"),
            ('node fill + publish p50 ms',
             lambda r: f"{r['node_fill_publish']:.2f}" if 'node_fill_publish' in r else '-'),
            ('sustained frames/s, output.overlap on / off',
             lambda r: f"{fps(r, 'throughput')} / {fps(r, 'throughput_no_overlap')}")]
    for label, key, fmt in (('minor page faults', 'minor_faults', '.0f'),
                            ('CPU ms', 'cpu_ms', '.1f'),
                            ('involuntary context switches', 'involuntary_switches', '.1f'),
                            ('voluntary context switches', 'voluntary_switches', '.1f')):
        rows.append((f'{label}, latency / sustained phase',
                     lambda r, k=key, f=fmt: f"{per(r, 'latency', k, f)} / "
                     f"{per(r, 'throughput', k, f)}"))
    head = ['memory.keep_freed on (deployed)'] + (['off'] if len(runs) > 1 else [])
    lines += ['', f"| node process, per frame published | {' | '.join(head)} |",
              '|---' * (len(head) + 1) + '|']
    lines += [f"| {label} | {' | '.join(cell(r) for r in runs)} |" for label, cell in rows]
    if len(runs) > 1:
        said = []
        for phase in ('latency', 'throughput'):
            on, off = (r[phase].get('node_per_frame', {}).get('minor_faults') for r in runs)
            if on is not None and off is not None:
                said.append(f"{'sustained' if phase == 'throughput' else 'latency'} phase "
                            f"**{off / max(on, 1.0):.0f}x** ({off:.0f} -> {on:.0f})")
        if said:
            lines += ['', '- minor page faults per frame with memory.keep_freed on, fewer by: '
                      + ', '.join(said)]
    return lines + ['']


def node_share(d: Dict[str, Any]) -> Dict[str, float]:
    """Return what the node adds to the relay floor, against its in-process overhead.

    ``d`` is one DDS section (its latency phase, the relay's, and ``inprocess_overhead``: the
    in-process frame time outside the forward, fill + publish included). Two ratios: the DDS
    end to end minus the floor, as it stands, and that minus the forward as the node timed it
    (the relay runs no model, and the in-process overhead leaves the forward out too), so the
    second compares time outside the forward on both sides.
    """
    share = d['latency']['latency']['p50'] - d['relay']['latency']['p50']
    inproc = max(d['inprocess_overhead'], 1e-6)
    out = {'e2e_minus_floor': share, 'ratio_node_share_vs_inprocess_overhead': share / inproc}
    forward = d['latency'].get('node_p50_ms', {}).get(FORWARD)
    if forward:
        out['e2e_minus_floor_and_forward'] = share - forward
        out['ratio_node_share_outside_forward_vs_inprocess_overhead'] = \
            (share - forward) / inproc
    return out


def _ratio(ratio: float) -> str:
    return (f'**{ratio:.2f}x**' if ratio > 0 else
            '**at or under the floor** (the floor varies by more than our share)')


def _floor_line(d: Dict[str, Any]) -> str:
    """Render the relay floor and the node's share of the DDS end to end."""
    f = d['relay']['latency']
    share = node_share(d)  # results written before the forward was taken out render too
    outside = ''
    if 'e2e_minus_floor_and_forward' in share:
        outside = (f"; without the node's forward ({d['latency']['node_p50_ms'][FORWARD]:.1f} "
                   f"ms, which the relay does not run) {share['e2e_minus_floor_and_forward']:.1f}"
                   " ms -> " + _ratio(share['ratio_node_share_outside_forward_vs_inprocess_'
                                            'overhead']))
    return (f"- transport floor (a relay process in the node's place republishing a prebuilt "
            f"depth + cloud of this size with each image's header, same publisher and "
            f"subscriber, same run): p50 {f['p50']:.1f} ms ({d['relay']['received']}/"
            f"{d['relay']['sent']}); our e2e - floor {share['e2e_minus_floor']:.1f} ms vs our "
            f"in-process overhead outside the forward {d['inprocess_overhead']:.1f} ms -> "
            + _ratio(share['ratio_node_share_vs_inprocess_overhead']) + outside
            + (f"; offered 60 frames/s, the relay sustains {d['relay']['throughput']:.1f} "
               "with the same processes (what this machine passes through them without a "
               "model)" if 'throughput' in d['relay'] else ''))


def plot(res: Dict[str, Any], path: Path) -> bool:
    """Draw box plots of per-frame latency: ours, bare forward, naive, DDS e2e."""
    plt = pyplot()
    if plt is None:
        return False
    rows = [(p, s, r) for p, e in res['models'].items() for s, r in e['sizes'].items()]
    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 4), squeeze=False)
    for ax, (preset, size, r) in zip(axes[0], rows):
        data = [r['raw']['forward'], r['raw']['ours']] + \
            ([r['raw']['naive']] if 'naive' in r['raw'] else [])
        labels = ['bare forward', 'ours', 'naive'][:len(data)]
        if 'dds' in r:
            data.append(r['dds']['latency']['raw_latency'])
            labels.append('DDS e2e')
        ax.boxplot(data, showfliers=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=20)
        ax.set_yscale('log')
        ax.set_ylabel('ms per frame')
        ax.set_title(f'{preset} {size}')
    fig.suptitle(res['device'])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_section(out: Path, stem: str, res: Dict[str, Any],
                  render: Callable[[Dict[str, Any]], str]) -> None:
    """Write one section's results as out/stem.json and .md; print the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f'{stem}.json').write_text(json.dumps(jsonable(res), indent=1))
    md = render(res)
    (out / f'{stem}.md').write_text(md + '\n')
    print('\n' + md)
    print(f"wrote {out / f'{stem}.json'}, {out / f'{stem}.md'}")


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of `dpt_bench`."""
    ap = argparse.ArgumentParser(prog='dpt_bench', description=__doc__.split('\n')[0])
    ap.add_argument('--smoke', action='store_true', help='short run (CI): tiny model, 640x480')
    ap.add_argument('--out', default='bench_out', help='folder for results.json/.md/latency.png')
    ap.add_argument('--models', nargs='*', help='presets (default: tiny-depth-anything and '
                    'base-depth on CPU; hybrid-depth and large-depth on CUDA)')
    ap.add_argument('--device', default='auto')
    ap.add_argument('--precision', default='auto', choices=('auto', 'fp32', 'fp16', 'bf16'))
    ap.add_argument('--backend', type=parse_backends, default=None,
                    help='model.backend values to compare, comma-separated '
                    f"({', '.join(BACKEND_NAMES)}); eager torch runs in this process, every other "
                    'alone in its own; one that cannot run is shown as the backend it fell '
                    'back to (default: ' + ', '.join(
                        b.name + (' when installed' if b.requires else '') for b in CPU_BACKENDS)
                    + f" on CPU; {','.join(BACKEND_NAMES)} on CUDA)")
    ap.add_argument('--iters', type=int, default=10, help='timed frames per section')
    ap.add_argument('--cuda-flags', action='store_true', help='CUDA: also time the bare torch '
                    'forward with cuDNN autotuning off/on (and TF32 off/on at fp32)')
    ap.add_argument('--dds-frames', type=int, default=10, help='frames for DDS latency')
    ap.add_argument('--no-dds', action='store_true', help='skip the DDS end-to-end section')
    ap.add_argument('--work-dir', default=str(cache_dir('tools', 'bench')),
                    help='where random-weight checkpoints are cached')
    ap.add_argument('--cameras', type=int, default=0,
                    help='instead of the sections above: N cameras through one multi-camera '
                    'node against N single-camera nodes (memory, frames/s, latency, share)')
    ap.add_argument('--camera-rate', type=float, default=15.0,
                    help='with --cameras: frames/s of each camera (default 15)')
    ap.add_argument('--seconds', type=float, default=30.0,
                    help='with --cameras: measured seconds per layout (default 30)')
    ap.add_argument('--multitask', action='store_true',
                    help='instead of the sections above: one forward of a checkpoint with depth '
                    'and segmentation heads against the two separate forwards it replaces '
                    f'(--models: its preset, default {MULTITASK_PRESET}); prints the figures '
                    'and the ratio')
    ap.add_argument('--width', type=int, default=640,
                    help='with --cameras or --multitask: frame width')
    ap.add_argument('--height', type=int, default=480,
                    help='with --cameras or --multitask: frame height')
    ap.add_argument('--role', default='', help=argparse.SUPPRESS)
    ap.add_argument('--ns', nargs='+', default=['/dpt_bench'], help=argparse.SUPPRESS)
    ap.add_argument('--rate', type=float, default=10.0, help=argparse.SUPPRESS)
    ap.add_argument('--count', type=int, default=10, help=argparse.SUPPRESS)
    ap.add_argument('--times', default='', help=argparse.SUPPRESS)
    ap.add_argument('--period', type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument('--report', help='re-render results.md / latency.png from a results.json')
    args = ap.parse_args(argv)
    if args.role == BACKEND_ROLE:
        return run_backend(args)
    if args.role:
        from dpt_ros.tools.dds_clients import PUBLISHER_ROLE, RELAY_ROLE, run_publisher, run_relay
        roles = {PUBLISHER_ROLE: run_publisher, RELAY_ROLE: run_relay}
        if args.role not in roles:
            ap.error(f'unknown --role {args.role}')
        return roles[args.role](args)
    if args.report:
        res = json.loads(Path(args.report).read_text())
        out = Path(args.report).parent
        (out / 'results.md').write_text(markdown(res) + '\n')
        plot(res, out / 'latency.png')
        print(markdown(res))
        return 0
    os.environ.update(profile_env())  # before this process creates a DDS participant
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    if args.cameras:
        if args.cameras < 1 or args.camera_rate <= 0 or args.seconds <= 0:
            ap.error('--cameras, --camera-rate and --seconds must be positive')
        from dpt_ros.tools.dds_clients import have_rclpy
        if not have_rclpy():
            ap.error('--cameras runs dpt_node processes over DDS: it needs rclpy (ROS 2)')
        write_section(Path(args.out), 'cameras', run_cameras(args), markdown_cameras)
        return 0
    if args.multitask:
        write_section(Path(args.out), 'multitask', run_multitask(args), markdown_multitask)
        return 0
    res = run(args)
    write_report(Path(args.out), res, markdown, plot, 'latency.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
