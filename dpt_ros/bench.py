# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""`dpt_bench`: where each frame's time goes, against the bare forward and a naive wrapper.

Sections, all measured in one run on one device:
  stages   per-stage p50/p95 in-process: decode, host-to-device, preprocess, forward,
           postprocess, point cloud, download, message fill, publish;
  forward  the same network on the same pixel_values, timed alone (the floor);
  naive    the way typical wrappers are written: DPTImageProcessor + model +
           post_process_depth_estimation + a point cloud built with Python lists;
  dds      publisher process -> dpt_node process -> this process over real DDS: end-to-end
           latency (receive - stamp) and sustained throughput.
Writes results.json, results.md and latency.png to --out.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import platform
import struct
import sys
import time
from typing import AbstractSet, Any, Dict, List, Optional

import numpy as np
import torch

from dpt_ros import conversions as conv
from dpt_ros import outputs
from dpt_ros.config import Config
from dpt_ros.outputs import EncodeOptions, FRAME_STAGES
from dpt_ros.pipeline import Pipeline
from dpt_ros.sample import make_random_checkpoint, synthetic_scene
from dpt_ros.toolkit import have_rclpy, pct, profile_env, summary

STAGE_NAMES = {'upload': 'host-to-device', 'geometry': 'point cloud', 'fill': 'message fill'}


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def checkpoint(preset: str, work: Path) -> Path:
    """Return a random-weight checkpoint of a preset's shape, cached in the work folder."""
    path = work / preset
    if not (path / 'config.json').exists():
        make_random_checkpoint(path, preset, seed=0)
    return path


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


def bench_stages(pipe: Pipeline, rgb: np.ndarray, intr: Any, want: AbstractSet[str],
                 iters: int, warmup: int, pub: Any) -> Dict[str, Any]:
    """Per-stage latency of our path, message fill and publish included."""
    msg = _image_msg(rgb)
    info = conv.camera_info_from_intrinsics(intr) if pub.ok else None
    header = getattr(msg, 'header', None)
    stages: Dict[str, List[float]] = {s: [] for s in FRAME_STAGES}
    totals: List[float] = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        frame = conv.decode_image(msg)
        t1 = time.perf_counter()
        r = pipe.process(frame, intr, want)
        t2 = time.perf_counter()
        msgs = {}
        if pub.ok:
            encoded = outputs.encode(r, EncodeOptions('32FC1', camera_info=True))
            msgs = {o.name: conv.fields_to_msg(o.msg_type, f, header, info)
                    for o, f in encoded}
        t3 = time.perf_counter()
        if pub.ok:
            pub.publish(msgs)
        t4 = time.perf_counter()
        if i < warmup:
            continue
        stages['decode'].append((t1 - t0) * 1e3)
        for k, v in r.timings.items():
            stages[k].append(v)
        stages['fill'].append((t3 - t2) * 1e3)
        stages['publish'].append((t4 - t3) * 1e3)
        totals.append((t4 - t0) * 1e3)
    out = {k: summary(v) for k, v in stages.items() if v}
    out['total'] = summary(totals)
    out['raw_total'] = totals
    out['raw_forward'] = stages['forward']
    return out


def bench_forward(pipe: Pipeline, rgb: np.ndarray, iters: int, warmup: int) -> Dict[str, Any]:
    """Time the network alone on already-preprocessed pixel_values on the device."""
    from dpt_ros.preprocess import to_rgb
    m = pipe.depth_model
    with torch.inference_mode():
        x = torch.from_numpy(rgb)[None].to(m.device)
        pv = pipe._preprocessor(m)(to_rgb(x, 'rgb8'))
        times = []
        for i in range(warmup + iters):
            _sync(m.device)
            t = time.perf_counter()
            m(pv)
            _sync(m.device)
            if i >= warmup:
                times.append((time.perf_counter() - t) * 1e3)
    res = summary(times)
    res['raw'] = times
    res['input'] = list(pv.shape)
    return res


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


# ------------------------------------------------------------------ driver and report

def _in_process_publisher() -> Any:
    """Return rclpy publishers to time message fill and publish, or a stand-in (ok False)."""
    if have_rclpy():
        from dpt_ros.dds_clients import InProcessPublisher
        return InProcessPublisher()
    return argparse.Namespace(ok=False, close=lambda: None)


def run(args: argparse.Namespace) -> Dict[str, Any]:
    """Run every section for every configured model; return the results dict."""
    work = Path(args.work_dir).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    dev = torch.device('cuda' if (args.device == 'auto' and torch.cuda.is_available())
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
    sizes = [(640, 480)] if args.smoke else [(640, 480), (1280, 720)]
    iters, warmup = (3, 1) if args.smoke else (args.iters, 2)
    results: Dict[str, Any] = {
        'device': torch.cuda.get_device_name(dev) if dev.type == 'cuda' else
        f'CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, '
        f'{torch.get_num_threads()} torch threads)',
        'torch': torch.__version__, 'precision': precision, 'smoke': bool(args.smoke),
        'models': {}}
    log = print
    pub = _in_process_publisher()
    seg_ckpt = checkpoint('tiny-seg', work)
    try:
        for preset in presets:
            ckpt = checkpoint(preset, work)
            log(f'{preset}: {ckpt}')
            cfg = Config().replace({'model.depth': str(ckpt), 'model.device': str(dev),
                                    'model.precision': precision})
            pipe = Pipeline(cfg, log=lambda m: None)
            # Depth + points for every model: relative checkpoints through affine_inverse (as
            # a robot would run DPT-style models), and the whole cloud valid (worst case).
            depth_cfg = {'depth.min': 0.0, 'depth.max': 10000.0, 'depth.mode':
                         'metric' if pipe.depth_model.metric else 'affine_inverse'}
            pipe.update(pipe.config.replace(depth_cfg))
            entry: Dict[str, Any] = {'params_M': pipe.depth_model.num_parameters / 1e6,
                                     'sizes': {}}
            for w, h in sizes:
                s = synthetic_scene(w, h)
                want = {'depth', 'depth_info', 'points'}
                log(f'  {w}x{h}: stages ...')
                st = bench_stages(pipe, s.rgb, s.intrinsics, want, iters, warmup, pub)
                fw = bench_forward(pipe, s.rgb, iters, warmup)
                naive_iters = max(2, iters // 2) if w * h > 640 * 480 else iters
                log(f'  {w}x{h}: naive wrapper ...')
                nv = bench_naive(ckpt, s.rgb, s.intrinsics, naive_iters, 1, dev,
                                 pipe.depth_model.dtype)
                ours_over = [t - f for t, f in zip(st['raw_total'], st['raw_forward'])]
                size = {'stages': {k: v for k, v in st.items() if not k.startswith('raw')},
                        'forward_bare': {k: v for k, v in fw.items() if k != 'raw'},
                        'naive': {k: v for k, v in nv.items() if k != 'raw_total'},
                        'our_overhead': summary(ours_over),
                        'raw': {'ours': st['raw_total'], 'forward': fw['raw'],
                                'naive': nv['raw_total']}}
                size['ratio_naive_overhead_vs_ours'] = (
                    nv['overhead']['p50'] / max(size['our_overhead']['p50'], 1e-6))
                if not args.no_dds and have_rclpy() and \
                        (not args.smoke or (w, h) == sizes[0]):
                    est = st['total']['p50']
                    frames = 8 if args.smoke else args.dds_frames
                    from dpt_ros.dds_clients import bench_dds
                    d = bench_dds(ckpt, None, str(dev), precision, w, h, frames, est, log,
                                  depth_cfg)
                    # This machine's speed drifts by 10-15 % over minutes (a shared VM): time
                    # the bare forward again right after the DDS run and compare with both.
                    fw_after = bench_forward(pipe, s.rgb, iters, warmup)
                    bare = pct(fw['raw'] + fw_after['raw'], 50)
                    d['forward_bare_after'] = {k: v for k, v in fw_after.items() if k != 'raw'}
                    d['forward_bare_pooled_p50'] = bare
                    d['ratio_e2e_vs_forward'] = d['latency']['latency']['p50'] / bare
                    d['ratio_fps_vs_forward'] = d['throughput']['fps'] * bare / 1e3
                    size['dds'] = d
                    if (w, h) == sizes[0] and (args.smoke or preset.startswith('tiny')
                                               or dev.type == 'cuda'):
                        ds = bench_dds(ckpt, seg_ckpt, str(dev), precision, w, h, frames,
                                       est * 1.5, log, depth_cfg)
                        size['dds_segmentation'] = ds
                entry['sizes'][f'{w}x{h}'] = size
                log(f"  {w}x{h}: forward {fw['p50']:.1f} ms, ours total "
                    f"{st['total']['p50']:.1f} ms (overhead {size['our_overhead']['p50']:.1f})"
                    f", naive total {nv['total']['p50']:.1f} ms (overhead "
                    f"{nv['overhead']['p50']:.1f}), ratio "
                    f"{size['ratio_naive_overhead_vs_ours']:.1f}x")
            pipe.close()
            results['models'][preset] = entry
    finally:
        pub.close()
    return results


def markdown(res: Dict[str, Any]) -> str:
    """Render the results as markdown tables (README Performance section format)."""
    lines = [f"Device: {res['device']}; torch {res['torch']}; precision {res['precision']}"
             f"{' (smoke run)' if res['smoke'] else ''}.", '']
    for preset, entry in res['models'].items():
        for size, r in entry['sizes'].items():
            lines += [f"**{preset}** ({entry['params_M']:.1f} M params), {size} camera frames, "
                      f"network input {'x'.join(map(str, r['forward_bare']['input'][2:]))}:",
                      '', '| stage | p50 ms | p95 ms |', '|---|---|---|']
            for k in FRAME_STAGES:
                if k in r['stages']:
                    v = r['stages'][k]
                    lines.append(f"| {STAGE_NAMES.get(k, k)} | {v['p50']:.2f} | "
                                 f"{v['p95']:.2f} |")
            t, f = r['stages']['total'], r['forward_bare']
            lines += [f"| **total (ours, in-process)** | {t['p50']:.2f} | {t['p95']:.2f} |",
                      f"| bare forward | {f['p50']:.2f} | {f['p95']:.2f} |",
                      f"| naive wrapper total | {r['naive']['total']['p50']:.2f} | "
                      f"{r['naive']['total']['p95']:.2f} |", '']
            lines.append(f"- overhead outside the forward: ours {r['our_overhead']['p50']:.1f} "
                         f"ms, naive {r['naive']['overhead']['p50']:.1f} ms -> "
                         f"**{r['ratio_naive_overhead_vs_ours']:.1f}x lower**")
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
                    if 'forward_bare_pooled_p50' in d:
                        line += (f"; bare forward p50 {r['forward_bare']['p50']:.1f} ms before "
                                 f"and {d['forward_bare_after']['p50']:.1f} ms after this run "
                                 f"(pooled {d['forward_bare_pooled_p50']:.1f} ms)")
                    if 'ratio_e2e_vs_forward' in d:
                        line += (f"; e2e / bare forward **{d['ratio_e2e_vs_forward']:.2f}x**, "
                                 f"throughput / (1 / bare forward) "
                                 f"**{d['ratio_fps_vs_forward']:.2f}x**")
                    node_fw = d['latency'].get('node_p50_ms', {}).get('forward')
                    if node_fw:
                        line += (f"; forward as timed inside the node {node_fw:.1f} ms, e2e / "
                                 f"that {lat['p50'] / node_fw:.2f}x")
                    lines.append(line)
            lines.append('')
    return '\n'.join(lines)


def plot(res: Dict[str, Any], path: Path) -> bool:
    """Draw box plots of per-frame latency: ours, bare forward, naive, DDS e2e."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [(p, s, r) for p, e in res['models'].items() for s, r in e['sizes'].items()]
    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 4), squeeze=False)
    for ax, (preset, size, r) in zip(axes[0], rows):
        data = [r['raw']['forward'], r['raw']['ours'], r['raw']['naive']]
        labels = ['bare forward', 'ours', 'naive']
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


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of `dpt_bench`."""
    ap = argparse.ArgumentParser(prog='dpt_bench', description=__doc__.split('\n')[0])
    ap.add_argument('--smoke', action='store_true', help='short run (CI): tiny model, 640x480')
    ap.add_argument('--out', default='bench_out', help='folder for results.json/.md/latency.png')
    ap.add_argument('--models', nargs='*', help='presets (default: tiny-depth-anything and '
                    'base-depth on CPU; hybrid-depth and large-depth on CUDA)')
    ap.add_argument('--device', default='auto')
    ap.add_argument('--precision', default='auto', choices=('auto', 'fp32', 'fp16', 'bf16'))
    ap.add_argument('--iters', type=int, default=10, help='timed frames per section')
    ap.add_argument('--dds-frames', type=int, default=10, help='frames for DDS latency')
    ap.add_argument('--no-dds', action='store_true', help='skip the DDS end-to-end section')
    ap.add_argument('--work-dir', default='~/.cache/dpt_ros/bench',
                    help='where random-weight checkpoints are cached')
    ap.add_argument('--role', default='', help=argparse.SUPPRESS)
    ap.add_argument('--ns', default='/dpt_bench', help=argparse.SUPPRESS)
    ap.add_argument('--width', type=int, default=640, help=argparse.SUPPRESS)
    ap.add_argument('--height', type=int, default=480, help=argparse.SUPPRESS)
    ap.add_argument('--rate', type=float, default=10.0, help=argparse.SUPPRESS)
    ap.add_argument('--count', type=int, default=10, help=argparse.SUPPRESS)
    ap.add_argument('--report', help='re-render results.md / latency.png from a results.json')
    args = ap.parse_args(argv)
    if args.role:
        from dpt_ros.dds_clients import PUBLISHER_ROLE, run_publisher
        if args.role == PUBLISHER_ROLE:
            return run_publisher(args)
        ap.error(f'unknown --role {args.role}')
    if args.report:
        res = json.loads(Path(args.report).read_text())
        out = Path(args.report).parent
        (out / 'results.md').write_text(markdown(res) + '\n')
        plot(res, out / 'latency.png')
        print(markdown(res))
        return 0
    os.environ.update(profile_env())  # before this process creates a DDS participant
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    res = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'results.json').write_text(json.dumps(_jsonable(res), indent=1))
    md = markdown(res)
    (out / 'results.md').write_text(md + '\n')
    made_plot = plot(res, out / 'latency.png')
    print('\n' + md)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}"
          + (f", {out / 'latency.png'}" if made_plot else ' (no matplotlib: no plot)'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
