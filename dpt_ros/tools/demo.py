# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""`dpt_demo`: the built-in synthetic scene through the real node, results written to a folder.

With rclpy available the frames go through a `dpt_node` process over DDS, exactly as on a
robot; without it (no ROS installed) the same pipeline runs in-process and says so.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from dpt_ros.core import outputs
from dpt_ros.core.config import Config, DEFAULT_DEPTH_MODEL
from dpt_ros.core.conversions import INFO_TYPE, LABEL_FIELD
from dpt_ros.core.normals import NORMAL_FIELDS
from dpt_ros.tools.sample import make_random_checkpoint, SampleFrame, synthetic_sequence
from dpt_ros.tools.toolkit import profile_env, Saved, say

_RANDOM_NOTE = ('The output shows that the pipeline runs end to end; it is NOT meaningful '
                'depth or segmentation.')
# File names of outputs whose name alone would say less (the rest use the output's name).
_FILE_NAMES = {'depth': 'depth_mm', 'relative': 'relative_inverse_depth',
               'seg_colored': 'labels_colored', 'normals_colored': 'normals'}


def _check_model(source: str, task: str) -> Optional[str]:
    """Return None if the checkpoint loads, else the reason (one line)."""
    from dpt_ros.core.models import load_model, ModelLoadError
    cfg = Config().model
    try:
        load_model(source, task, cfg, log=lambda _m: None)
    except ModelLoadError as exc:
        return str(exc)
    return None


def choose_models(args: argparse.Namespace, out: Path) -> Tuple[str, str, bool]:
    """Return (depth, segmentation, random): the requested checkpoints or random stand-ins."""
    depth = args.model or DEFAULT_DEPTH_MODEL
    why = _check_model(depth, 'depth')
    if why is None:
        seg = args.segmentation
        if seg:
            why_seg = _check_model(seg, 'segmentation')
            if why_seg is not None:
                raise SystemExit(f'dpt_demo: error: {why_seg}')
        return depth, seg, False
    if args.model:
        raise SystemExit(f'dpt_demo: error: {why}')
    say(f'No pretrained checkpoint is reachable: {why}')
    say('Using RANDOM-WEIGHT models instead (a Depth Anything-style metric depth model and a '
        f'DPT segmentation model). {_RANDOM_NOTE}')
    say('Give real weights with --model DIR_OR_ID (and --segmentation DIR_OR_ID).')
    models = out / 'random_models'
    depth_dir = make_random_checkpoint(models / 'depth', 'tiny-depth-anything', seed=0)
    seg_dir = make_random_checkpoint(models / 'segmentation', 'tiny-seg', seed=0)
    return str(depth_dir), str(seg_dir), True


# ------------------------------------------------------------------ writers

def write_png(path: Path, arr: np.ndarray) -> None:
    """Write uint8 rgb / mono or uint16 mono as PNG."""
    import cv2
    img = arr[:, :, ::-1] if arr.ndim == 3 else arr
    if not cv2.imwrite(str(path), np.ascontiguousarray(img)):
        raise OSError(f'cannot write {path}')


# Cloud fields -> PLY properties: normals as nx ny nz (what MeshLab, CloudCompare and Open3D
# read), the class id as a uint 'label'.
_PLY_FIELDS = dict({f: (p, '<f4') for f, p in zip(NORMAL_FIELDS, ('nx', 'ny', 'nz'))},
                   **{LABEL_FIELD: ('label', '<u4')})
_PLY_TYPES = {'<f4': 'float', 'u1': 'uchar', '<u4': 'uint'}


def write_ply(path: Path, xyz: np.ndarray, rgb: Optional[np.ndarray],
              extra: Optional[Dict[str, np.ndarray]] = None) -> int:
    """Write finite points as binary little-endian PLY (x y z float, optional uchar rgb).

    extra: the cloud's normal_x / normal_y / normal_z (written nx, ny, nz) and label fields.
    """
    ok = np.isfinite(xyz).all(axis=1)
    xyz = xyz[ok].astype('<f4')
    fields = [('x', '<f4'), ('y', '<f4'), ('z', '<f4')]
    if rgb is not None:
        fields += [('red', 'u1'), ('green', 'u1'), ('blue', 'u1')]
    extra = {k: v for k, v in (extra or {}).items() if k in _PLY_FIELDS}
    fields += [_PLY_FIELDS[k] for k in extra]
    data = np.empty(len(xyz), dtype=fields)
    data['x'], data['y'], data['z'] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if rgb is not None:
        rgb = rgb[ok]
        data['red'], data['green'], data['blue'] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    for k, v in extra.items():
        data[_PLY_FIELDS[k][0]] = v.reshape(-1)[ok]
    props = ''.join(f'property {_PLY_TYPES[t]} {n}\n' for n, t in fields)
    head = (f'ply\nformat binary_little_endian 1.0\ncomment dpt_ros demo, optical frame '
            f'(x right, y down, z forward), metres\nelement vertex {len(data)}\n{props}'
            'end_header\n')
    with open(path, 'wb') as f:
        f.write(head.encode('ascii'))
        f.write(data.tobytes())
    return len(data)


def _scaled_u16(arr: np.ndarray) -> np.ndarray:
    """Float image (NaN invalid) stretched over 16 bits for viewing."""
    finite = np.isfinite(arr)
    lo, hi = (np.nanmin(arr), np.nanmax(arr)) if finite.any() else (0.0, 1.0)
    return np.where(finite, (arr - lo) / max(hi - lo, 1e-12) * 65535, 0).astype(np.uint16)


def save_frame(out: Path, i: int, frame: SampleFrame, saved: Saved) -> List[str]:
    """Write one frame's results (every output of the table it holds); return the names."""
    written = []

    def put(name: str, arr: np.ndarray) -> None:
        write_png(out / name, arr)
        written.append(name)
    put(f'input_{i:04d}.png', frame.rgb)
    gt_mm = np.where(np.isfinite(frame.depth), np.rint(frame.depth * 1000), 0)
    put(f'ground_truth_depth_mm_{i:04d}.png', np.clip(gt_mm, 0, 65535).astype(np.uint16))
    for o in outputs.OUTPUTS:
        arr = saved.arrays.get(o.name)
        if arr is None or o.msg_type == INFO_TYPE:
            continue
        if arr.ndim == 3 and arr.dtype.kind == 'f':
            continue  # normals/image: its PNG is normals/colored
        name = f'{_FILE_NAMES.get(o.name, o.name)}_{i:04d}.png'
        if o.name == 'depth':
            mm = np.where(np.isfinite(arr), np.rint(arr * 1000), 0)
            put(name, np.clip(mm, 0, 65535).astype(np.uint16))
        elif arr.dtype.kind == 'f':
            put(name, _scaled_u16(arr))
        else:
            put(name, arr)
    if saved.cloud is not None:
        n = write_ply(out / f'points_{i:04d}.ply', *saved.cloud, saved.cloud_fields)
        written.append(f'points_{i:04d}.ply ({n} points)')
    return written


# ------------------------------------------------------------------ through the node


def run_in_process(frames: List[SampleFrame], depth: str, seg: str,
                   device: str) -> Tuple[List[Saved], Dict[str, float]]:
    """Fallback without ROS: the same pipeline, called directly."""
    from dpt_ros.core.conversions import Frame, unpack_rgb
    from dpt_ros.core.pipeline import Pipeline
    from dpt_ros.tools.dds_clients import DEMO_SETTINGS
    cfg = Config().replace(dict(DEMO_SETTINGS, **{'model.depth': depth,
                                                  'model.segmentation': seg,
                                                  'model.device': device}))
    pipe = Pipeline(cfg, log=lambda m: say(f'  {m}'))
    results, timings = [], []
    for frame in frames:
        t = time.perf_counter()
        r = pipe.process(Frame(frame.rgb, 'rgb8'), frame.intrinsics)
        saved = Saved(latency_ms=(time.perf_counter() - t) * 1e3)
        saved.arrays = {k: v for k, v in r.arrays.items() if k != 'points'}
        pts = r.arrays.get('points')
        if pts is not None:
            saved.cloud = (pts[:, :3], unpack_rgb(pts[:, 3]) if r.points_rgb else None)
            saved.cloud_fields = {n: pts[:, 4 + k] for k, n in enumerate(r.points_extra) if n}
            if LABEL_FIELD in saved.cloud_fields:
                saved.cloud_fields[LABEL_FIELD] = saved.cloud_fields[LABEL_FIELD].view(np.uint32)
        results.append(saved)
        timings.append(r.timings)
    pipe.close()
    stages = {k: float(np.median([t[k] for t in timings[1:] or timings]))
              for k in timings[0]} if timings else {}
    return results, stages


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of `dpt_demo`."""
    ap = argparse.ArgumentParser(
        prog='dpt_demo', description='Run dpt_ros on the built-in synthetic scene and write '
        'depth PNGs, colored depth, labels, overlays and .ply point clouds.')
    ap.add_argument('--model', default='', help='depth checkpoint folder or hub id (default: '
                    f'{DEFAULT_DEPTH_MODEL}, else random weights when it cannot be loaded)')
    ap.add_argument('--segmentation', default='', help='segmentation checkpoint folder or id')
    ap.add_argument('--out', default='demo_out', help='output folder (default demo_out)')
    ap.add_argument('--frames', type=int, default=3, help='number of frames (default 3)')
    ap.add_argument('--width', type=int, default=640)
    ap.add_argument('--height', type=int, default=480)
    ap.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    ap.add_argument('--in-process', action='store_true',
                    help='skip ROS: run the pipeline in this process')
    ap.add_argument('--timeout', type=float, default=120.0, help='seconds to wait per step')
    args = ap.parse_args(argv)
    if args.frames < 1 or args.width < 16 or args.height < 16:
        ap.error('--frames must be >= 1 and the frame at least 16 x 16')
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    # 640x480 frames and 5 MB clouds between two processes: the large-frame profile the
    # README recommends (set before this process creates its first DDS participant).
    os.environ.update(profile_env())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    depth, seg, random_weights = choose_models(args, out)
    frames = synthetic_sequence(args.frames, args.width, args.height)
    say(f'{args.frames} synthetic frames {args.width}x{args.height} (ray-cast room with exact '
        'depth, made by dpt_ros.tools.sample)')
    # its rclpy imports wait until it talks DDS
    from dpt_ros.tools import dds_clients as dds_client_node
    if not args.in_process and dds_client_node.have_rclpy():
        say('running the frames through the real node (dpt_node over DDS)')
        results, stages = dds_client_node.run_through_node(frames, depth, seg, args.device,
                                                           args.timeout)
        where = 'dpt_node /diagnostics, p50'
    else:
        if not args.in_process:
            say('rclpy is not importable here (no ROS 2 sourced): running the pipeline '
                'in-process instead of through the node.')
        results, stages = run_in_process(frames, depth, seg, args.device)
        where = 'in-process pipeline, median'
    written: List[str] = []
    for i, (frame, saved) in enumerate(zip(frames, results)):
        written += save_frame(out, i, frame, saved)
    say(f'\nper-stage latency ({where}), ms:')
    for name, ms in stages.items():
        say(f'  {name:<12} {ms:8.2f}')
    lat = [s.latency_ms for s in results[1:] or results]
    say(f"  {'end-to-end':<12} {float(np.median(lat)):8.2f}   (publish -> last output "
        'received)' if where.startswith('dpt_node') else
        f"  {'total':<12} {float(np.median(lat)):8.2f}")
    for s, frame in zip(results, frames):
        if 'depth' in s.arrays:
            d, gt = s.arrays['depth'], frame.depth
            ok = np.isfinite(d) & np.isfinite(gt)
            if ok.any():
                absrel = float(np.median(np.abs(d[ok] - gt[ok]) / gt[ok]))
                say(f'depth vs ground truth (median abs rel): {absrel:.3f}'
                    + (' (random weights: expect nonsense)' if random_weights else ''))
            break
    say(f'\nwrote {len(written)} files to {out.resolve()}:')
    for name in written:
        say(f'  {name}')
    if random_weights:
        say(f'\nNOTE: random-weight models were used. {_RANDOM_NOTE}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
