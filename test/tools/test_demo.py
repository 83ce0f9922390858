# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""README command 1 (dpt_demo): frames through the real node, files written, timings printed."""

import os
from pathlib import Path
import subprocess
import sys

import cv2
import numpy as np
import pytest


def run_demo(args, tmp_path):
    exe = Path(sys.executable).parent / 'dpt_demo'
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-m', 'dpt_ros.tools.demo']
    out = tmp_path / 'out'
    proc = subprocess.run(cmd + ['--out', str(out), '--frames', '2', '--width', '160',
                                 '--height', '120'] + args,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc.stdout


PLY_TYPES = {'float': '<f4', 'uchar': 'u1', 'uint': '<u4'}


def read_ply(path):
    """Read a binary little-endian PLY by the properties its header names."""
    data = path.read_bytes()
    head, _, body = data.partition(b'end_header\n')
    lines = head.decode().splitlines()
    n = int([ln for ln in lines if ln.startswith('element vertex')][0].split()[-1])
    props = [ln.split()[1:] for ln in lines if ln.startswith('property ')]
    pts = np.frombuffer(body, dtype=[(name, PLY_TYPES[kind]) for kind, name in props])
    assert len(pts) == n
    return pts


def check_outputs(out, stdout):
    for i in range(2):
        depth = cv2.imread(str(out / f'depth_mm_{i:04d}.png'), cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16 and depth.shape == (120, 160)
        assert (depth > 0).mean() > 0.5
        for name in ('depth_colored', 'labels', 'overlay'):
            img = cv2.imread(str(out / f'{name}_{i:04d}.png'), cv2.IMREAD_UNCHANGED)
            assert img is not None and img.shape[:2] == (120, 160), name
        normals = cv2.imread(str(out / f'normals_{i:04d}.png'), cv2.IMREAD_UNCHANGED)
        assert normals.dtype == np.uint8 and normals.shape == (120, 160, 3)
        pts = read_ply(out / f'points_{i:04d}.ply')
        assert pts.dtype.names == ('x', 'y', 'z', 'red', 'green', 'blue', 'nx', 'ny', 'nz',
                                   'label')
        assert len(pts) == (depth > 0).sum()
        # Normals from depth: unit length where known; class ids of the 5-class model.
        n = np.stack([pts['nx'], pts['ny'], pts['nz']], -1)
        known = np.isfinite(n).all(-1)
        assert known.mean() > 0.5 and np.allclose(np.linalg.norm(n[known], axis=-1), 1, atol=1e-4)
        assert pts['label'].max() < 5
        # The cloud is the depth image back-projected: same z as the PNG, to the millimetre.
        assert np.allclose(np.sort(pts['z']), np.sort(depth[depth > 0] / 1000.0), atol=6e-4)
    for stage in ('preprocess', 'forward', 'postprocess'):
        assert stage in stdout


def test_demo_through_the_node_offline_uses_random_weights(tmp_path):
    pytest.importorskip('rclpy', reason='rclpy (ROS 2) is not installed')
    out, stdout = run_demo([], tmp_path)
    assert 'No pretrained checkpoint is reachable' in stdout
    assert 'RANDOM-WEIGHT' in stdout and 'NOT meaningful' in stdout
    assert 'through the real node' in stdout and 'end-to-end' in stdout
    check_outputs(out, stdout)


def test_demo_with_model_folder_in_process(tmp_path, tiny_metric, tiny_seg):
    out, stdout = run_demo(['--model', str(tiny_metric), '--segmentation', str(tiny_seg),
                            '--in-process'], tmp_path)
    assert 'RANDOM-WEIGHT' not in stdout
    check_outputs(out, stdout)


def test_demo_missing_model_is_an_error(tmp_path):
    exe = [sys.executable, '-m', 'dpt_ros.tools.demo']
    proc = subprocess.run(exe + ['--model', str(tmp_path / 'nope'), '--out', str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and str(tmp_path / 'nope') in proc.stderr


@pytest.mark.real_model
def test_demo_with_real_weights_through_the_node(tmp_path, real_model):
    pytest.importorskip('rclpy', reason='rclpy (ROS 2) is not installed')
    out, stdout = run_demo(['--model', real_model], tmp_path)
    assert 'RANDOM-WEIGHT' not in stdout and 'through the real node' in stdout
    for i in range(2):
        names = {p.name for p in out.glob(f'*_{i:04d}.*')}
        assert f'depth_colored_{i:04d}.png' in names, sorted(names)
        assert names & {f'depth_mm_{i:04d}.png', f'relative_inverse_depth_{i:04d}.png'}
