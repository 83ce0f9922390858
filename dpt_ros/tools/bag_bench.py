# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Bag throughput, serial vs Ray: `python -m dpt_ros.tools.bag_bench --out DIR`.

Writes N synthetic bags and a tiny random checkpoint, runs `dpt_bag` over all of them once
serially and once with `--ray --workers W` (each in its own process, as a user would), checks
the outputs are byte-identical, and writes results.json / results.md to --out: total time,
frames/s, the ratio, and the Ray path's own costs (local cluster start, worker start, model
load per worker, per-bag overhead = time seen by the driver - time inside the task).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
from pathlib import Path
import platform
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from dpt_ros.core.config import cache_dir
from dpt_ros.offline.runs import SUMMARY


def make_inputs(work: Path, bags: int, frames: int, width: int, height: int) -> Path:
    """Write the checkpoint and the bags once (cached in the work folder)."""
    from dpt_ros.tools.bag_sample import synthetic_frames, write_bag
    from dpt_ros.tools.sample import make_random_checkpoint
    if not (work / 'checkpoint').is_dir():
        make_random_checkpoint(work / 'checkpoint', 'tiny-depth-anything', seed=0)
    folder = work / f'bags_{bags}x{frames}_{width}x{height}'
    if not folder.is_dir():
        tmp = folder.with_name(folder.name + '.tmp')
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for i in range(bags):
            write_bag(tmp / f'bag{i:02d}', synthetic_frames(
                frames, width, height, t0=1_700_000_000_000_000_000 + i * 10**12),
                compressed=True)
        tmp.rename(folder)
    return folder


def run_dpt_bag(bags: Path, out: Path, checkpoint: Path, extra: List[str]) -> Dict[str, Any]:
    """Run dpt_bag in a fresh process; return its summary plus the process wall time."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, '-m', 'dpt_ros.offline.cli', str(bags), str(out), '--model',
           str(checkpoint), '--device', 'cpu', '--quiet', *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                         f'{proc.stdout[-2000:]}{proc.stderr[-3000:]}')
    doc = json.loads((out / SUMMARY).read_text())
    doc['process_seconds'] = round(wall, 3)
    return doc


def identical(a: Path, b: Path) -> bool:
    """Return whether two output roots hold the same files with the same bytes."""
    files_a = sorted(p.relative_to(a) for p in a.rglob('*') if p.is_file() and p.name != SUMMARY)
    files_b = sorted(p.relative_to(b) for p in b.rglob('*') if p.is_file() and p.name != SUMMARY)
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


def _rate(frames: int, seconds: float) -> float:
    return round(frames / seconds, 3) if seconds > 0 else float('nan')


def measure(args: argparse.Namespace) -> Dict[str, Any]:
    """Run both ways and collect the figures."""
    out, work = Path(args.out), Path(args.work_dir).expanduser()
    width, height = (int(v) for v in args.size.lower().split('x'))
    bags = make_inputs(work, args.bags, args.frames, width, height)
    checkpoint = work / 'checkpoint'
    serial = run_dpt_bag(bags, out / 'serial', checkpoint, ['--threads', str(args.threads)])
    ray = run_dpt_bag(bags, out / 'ray', checkpoint, [
        '--threads', str(args.threads), '--ray', *([args.ray] if args.ray else []),
        '--workers', str(args.workers)])
    s, r = serial['totals'], ray['totals']
    stats = ray.get('ray', {})
    # Throughput once the fixed start-up costs are paid (cluster, workers, model loads).
    serial_start = serial.get('serial', {}).get('model_load_seconds') or 0.0
    ray_start = (stats.get('init_seconds') or 0.0) + max(
        [a + b for a, b in zip(stats.get('worker_start_seconds', []),
                               stats.get('model_load_seconds', []))] or [0.0])
    return {
        'machine': f'{os.cpu_count()} cores {platform.machine()}, {platform.system()}',
        'python': platform.python_version(),
        'bags': args.bags, 'frames_per_bag': args.frames, 'size': args.size,
        'threads_per_bag': args.threads, 'ray_workers': stats.get('workers'),
        'serial': {'seconds': s['wall_seconds'], 'fps': s['fps'],
                   'fps_after_startup': _rate(s['frames'], s['wall_seconds'] - serial_start),
                   'process_seconds': serial['process_seconds'],
                   'model_load_seconds': serial_start},
        'ray': {'seconds': r['wall_seconds'], 'fps': r['fps'],
                'fps_after_startup': _rate(r['frames'], r['wall_seconds'] - ray_start),
                'process_seconds': ray['process_seconds'], **stats},
        'speedup': round(s['wall_seconds'] / r['wall_seconds'], 3) if r['wall_seconds'] else None,
        'byte_identical': identical(out / 'serial', out / 'ray'),
        'frames': s['frames'],
    }


def markdown(res: Dict[str, Any]) -> str:
    """Return the README table rows for one run."""
    ray = res['ray']
    per_worker = ', '.join(f'{a:.1f} + {b:.1f}' for a, b in zip(
        ray.get('worker_start_seconds', []), ray.get('model_load_seconds', [])))
    return '\n'.join([
        f"{res['bags']} bags x {res['frames_per_bag']} frames ({res['size']}, tiny model, "
        f"{res['threads_per_bag']} CPU thread(s) per bag), {res['machine']}",
        '',
        '| run | total s | frames/s | vs serial | frames/s after start-up |',
        '|---|---|---|---|---|',
        f"| serial | {res['serial']['seconds']:.1f} | {res['serial']['fps']:.1f} | 1.00 | "
        f"{res['serial']['fps_after_startup']:.1f} |",
        f"| Ray, {res['ray_workers']} workers | {ray['seconds']:.1f} | {ray['fps']:.1f} | "
        f"{res['speedup']:.2f} | {ray['fps_after_startup']:.1f} |",
        '',
        f"Outputs byte-identical: {'yes' if res['byte_identical'] else 'NO'}. Ray overhead: "
        f"local cluster start {ray.get('init_seconds', float('nan')):.1f} s; per worker "
        f'(start + model load) {per_worker} s; per bag (driver - task) '
        f"{ray.get('per_bag_overhead_seconds_p50') or float('nan'):.3f} s p50. Serial model "
        f"load {res['serial']['model_load_seconds']:.1f} s.",
    ])


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: python -m dpt_ros.tools.bag_bench."""
    ap = argparse.ArgumentParser(prog='python -m dpt_ros.tools.bag_bench', description=__doc__)
    ap.add_argument('--out', default='bag_bench_out', help='results.json / results.md here')
    ap.add_argument('--bags', type=int, default=8)
    ap.add_argument('--frames', type=int, default=40, help='frames per bag')
    ap.add_argument('--size', default='320x240', help='frame WIDTHxHEIGHT')
    ap.add_argument('--workers', type=int, default=2, help='Ray workers')
    ap.add_argument('--threads', type=int, default=1, help='CPU threads per bag (both runs)')
    ap.add_argument('--ray', default='', help="Ray address (default: a local Ray for the run)")
    ap.add_argument('--work-dir', default=str(cache_dir('tools', 'bag_bench')),
                    help='cache for the checkpoint and the input bags')
    ap.add_argument('--smoke', action='store_true', help='2 bags x 2 frames at 64x48 (CI)')
    args = ap.parse_args(argv)
    if args.smoke:
        args.bags, args.frames, args.size = 2, 2, '64x48'
    res = measure(args)
    out = Path(args.out)
    (out / 'results.json').write_text(json.dumps(res, indent=1) + '\n')
    text = markdown(res)
    (out / 'results.md').write_text(text + '\n')
    print(text)
    return 0 if res['byte_identical'] else 1


if __name__ == '__main__':
    sys.exit(main())
