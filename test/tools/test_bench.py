# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""dpt_bench --smoke: every stage measured, ratios computed, JSON / markdown / PNG written."""

import json
import math
import subprocess
import sys

import pytest


def test_bench_smoke(tmp_path, record_figure):
    out = tmp_path / 'bench'
    proc = subprocess.run([sys.executable, '-m', 'dpt_ros.tools.bench', '--smoke',
                           '--out', str(out),
                           '--work-dir', str(tmp_path / 'work')],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / 'results.json').read_text())
    r = res['models']['tiny-depth-anything']['sizes']['640x480']
    stages = r['stages']
    expected = ['decode', 'upload', 'preprocess', 'forward', 'postprocess', 'geometry',
                'download']
    try:
        import rclpy  # noqa: F401
        expected += ['fill', 'publish', 'fill_bytes', 'publish_bytes']
        have_ros = True
    except ImportError:
        have_ros = False
    for stage in expected:
        assert stages[stage]['p50'] > 0 and stages[stage]['p95'] >= stages[stage]['p50'], stage
    assert stages['total']['p50'] >= stages['forward']['p50']
    ratio = r['ratio_naive_overhead_vs_ours']
    assert math.isfinite(ratio) and ratio > 0
    assert r['naive']['overhead']['p50'] > 0 and r['forward_bare']['p50'] > 0
    backends = r['backends']
    assert backends['torch']['ran'] == 'torch' and r['best_backend'] in backends
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        pass
    else:  # timed in its own process, and really run (not fallen back to torch)
        assert backends['onnxruntime']['ran'] == 'onnxruntime', backends['onnxruntime']
        assert backends['onnxruntime']['forward']['p50'] > 0
        # The export and session were made by the warm-up, before any timing.
        assert backends['onnxruntime']['warmup_s'] > 0
    if have_ros:
        d = r['dds']
        # Smoke only: how many frames a loaded machine delivers is a benchmark figure, not a
        # test (the node keeps the newest frame and drops the rest by design).
        assert 1 <= d['latency']['received'] <= d['latency']['sent']
        assert d['latency']['latency']['p50'] > 0 and math.isfinite(d['ratio_e2e_vs_forward'])
        assert d['throughput']['fps'] > 0 and d['backend'] == r['best_backend']
        assert d['throughput_no_overlap']['fps'] > 0  # output.overlap set off, live
        fp = stages['fill_publish']
        assert fp['message']['p50'] > 0 and fp['bytes']['p50'] > 0
        floor = d['relay']
        assert 1 <= floor['received'] <= floor['sent'] and floor['latency']['p50'] > 0
        # The relay timed its own fill + publish (the node's, over the same transport) and
        # its sustained rate; both end up in the report beside the node's.
        assert floor['fill_publish']['p50'] > 0 and floor['throughput'] > 0
        assert d['ratio_node_fill_publish_vs_relay'] > 0
        assert math.isfinite(d['ratio_node_share_vs_inprocess_overhead'])
        assert d['e2e_minus_floor_and_forward'] == pytest.approx(
            d['e2e_minus_floor'] - d['latency']['node_p50_ms']['forward'])
        # The node process's own counters per frame, memory.keep_freed on (deployed) and off.
        for run in (d, d['keep_freed_off']):
            per = run['latency']['node_per_frame']
            assert per['minor_faults'] >= 0 and per['cpu_ms'] > 0, per
            assert run['throughput_no_overlap']['fps'] > 0
        assert d['node_fill_publish'] > 0 and d['ratio_node_forward_vs_bare'] > 0
        # The bare forward again in a process set up as the node's (its OpenMP setting),
        # back to back and paced as the latency phase paced frames.
        nf = d['node_forward']
        assert nf['ran'] == d['backend'] and nf['period_s'] == pytest.approx(
            1.0 / d['latency']['rate_hz'], rel=1e-3)
        assert nf['back_to_back']['n'] == nf['paced']['n'] > 0
        assert math.isfinite(d['ratio_node_forward_vs_paced'])
        assert math.isfinite(d['ratio_fps_vs_setting_forward'])
        assert r['dds_segmentation']['latency']['received'] > 0
    md = (out / 'results.md').read_text()
    assert 'bare forward' in md and 'naive wrapper' in md and 'lower' in md
    assert '| backend (alone in its process) |' in md or len(backends) == 1
    if have_ros:
        assert 'bytes path' in md and 'transport floor' in md and 'output.overlap' in md
        assert "the relay's own fill + publish" in md and 'the relay sustains' in md
        assert "the bare forward in a process set up as the node's" in md
        assert '| node process, per frame published | memory.keep_freed on (deployed) | off |' \
            in md
    if (out / 'latency.png').exists():
        assert (out / 'latency.png').read_bytes()[:4] == b'\x89PNG'
    else:
        pytest.importorskip('matplotlib')
        raise AssertionError('matplotlib is installed but no plot was written')
    record_figure('bench smoke (CPU, tiny, 640x480)',
                  f"ours overhead {r['our_overhead']['p50']:.1f} ms vs naive "
                  f"{r['naive']['overhead']['p50']:.1f} ms ({ratio:.0f}x lower)")


def test_backend_option_takes_what_the_backend_table_lists():
    import argparse
    from dpt_ros.tools.bench import parse_backends
    from dpt_ros.core.backends import NAMES
    assert parse_backends(','.join(NAMES)) == list(NAMES)
    assert parse_backends('torch, compile,torch') == ['torch', 'compile']
    for bad in ('torch,onnx-magic', '', ','):
        with pytest.raises(argparse.ArgumentTypeError, match='choose from'):
            parse_backends(bad)


def test_a_fallback_is_named_and_never_the_fastest(tmp_path):
    """A backend that cannot run (TensorRT on a CPU) is shown as what it fell back to."""
    from dpt_ros.tools.bench import _backend_lines, bench_backend, fastest
    row = bench_backend('tiny-depth-anything', 'tensorrt', tmp_path, 'cpu', 'fp32', 160, 120, 2)
    assert row['ran'] == 'torch', row
    assert 'tensorrt unavailable' in row['error'] and row['forward']['p50'] > 0
    torch_row = dict(row, ran='torch', forward={'p50': 10 * row['forward']['p50']})
    rows = {'torch': torch_row, 'tensorrt': row}
    assert fastest(rows) == 'torch'  # though the fallback's forward was 10x lower
    table = '\n'.join(_backend_lines({'backends': rows, 'best_backend': fastest(rows)}))
    assert '| tensorrt (ran torch) | - | - |' in table and 'tensorrt unavailable' in table
    assert '| torch (fastest) |' in table


def test_bench_cameras_smoke(tmp_path):
    """dpt_bench --cameras: one multi-camera node against one node per camera, both run.

    Under ONNX Runtime each node reports its builds in /diagnostics: none after activation.
    """
    pytest.importorskip('rclpy', reason='rclpy (ROS 2) is not installed')
    pytest.importorskip('onnxruntime', reason='onnxruntime is not installed')
    out = tmp_path / 'bench'
    proc = subprocess.run([sys.executable, '-m', 'dpt_ros.tools.bench', '--cameras', '2',
                           '--camera-rate', '5', '--seconds', '3', '--width', '96',
                           '--height', '72', '--models', 'tiny-depth', '--backend',
                           'onnxruntime', '--out', str(out), '--work-dir',
                           str(tmp_path / 'work')],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / 'cameras.json').read_text())['models']['tiny-depth']
    for layout, nodes in (('one_node', 1), ('separate', 2)):
        r = res[layout]
        assert r['nodes_reporting'] == nodes, (layout, r)
        assert r['backend_builds'] >= nodes and r['backend_builds_after_activation'] == 0, r
        assert set(r['per_camera']) == {'cam0', 'cam1'}, layout
        assert all(c['received'] > 0 and c['p95'] >= c['p50'] > 0
                   for c in r['per_camera'].values()), (layout, r)
        assert r['fps'] > 0 and 0 < r['min_share'] <= 1.0
        # A node process holds torch and a model: far more than 50 MiB each.
        assert r['rss_mb'] > 50 * nodes, (layout, r['rss_mb'])
    assert res['separate']['rss_mb'] > res['one_node']['rss_mb']
    md = (out / 'cameras.md').read_text()
    assert '| one node |' in md and '| 2 nodes |' in md


ONE = {'layout': 'one node', 'cameras': 1, 'width': 640, 'height': 480, 'rate_hz': 1.0,
       'sent_per_camera': 1, 'seconds': 1.0, 'rss_mb': 1.0, 'fps': 1.0, 'min_share': 1.0,
       'per_camera': {'cam0': {'p50': 1.0, 'p95': 1.0, 'received': 1}}}


def test_batching_figures_time_what_the_node_runs(tmp_path):
    """Same-size frames as one batch vs one forward each; mixed sizes vs a padded batch."""
    from dpt_ros.tools.bench import bench_batching, markdown_cameras, other_size
    from dpt_ros.tools.sample import random_checkpoint
    assert other_size(640, 480) == (1280, 720) and other_size(1280, 720) == (640, 480)
    ckpt = random_checkpoint('tiny-depth-anything', tmp_path)
    r = bench_batching(ckpt, 'cpu', 'fp32', 3, [(640, 480), (1280, 720)], iters=1, warmup=0)
    # Depth Anything keeps the aspect ratio: the two cameras get different network inputs,
    # and the padded batch takes the larger of each side.
    (ha, wa), (hb, wb) = r['inputs']
    assert ha == hb and wa < wb, r['inputs']
    assert r['padded_input'] == [max(ha, hb), max(wa, wb)]
    for section in ('same', 'mixed'):
        assert all(v > 0 and math.isfinite(v) for v in r[section].values()), r
    assert r['same']['speedup'] == pytest.approx(r['same']['single_ms'] / r['same']['batch_ms'])
    assert 'padded_ms' in r['mixed'] and 'shared_ms' not in r['mixed']
    # DPT (a fixed square input): both cameras' frames go through one forward, as the node
    # runs them.
    r = bench_batching(random_checkpoint('tiny-depth', tmp_path), 'cpu', 'fp32', 2,
                       [(640, 480), (1280, 720)], iters=1, warmup=0)
    assert r['inputs'][0] == r['inputs'][1] and 'padded_ms' not in r['mixed']
    assert r['mixed']['shared_speedup'] == pytest.approx(
        r['mixed']['separate_ms'] / r['mixed']['shared_ms'])
    md = markdown_cameras({'device': 'cpu', 'torch': 't', 'precision': 'fp32', 'smoke': True,
                           'models': {'tiny-depth': {'batching': r, 'one_node': ONE,
                                                     'separate': ONE}}})
    assert 'one forward of both, as the node runs them' in md, md


def test_a_backend_process_that_runs_too_long_is_stopped(tmp_path):
    """Each backend's own process has a time limit: past it, a failed row says so."""
    from dpt_ros.tools.bench import bench_backend
    row = bench_backend('tiny-depth-anything', 'torch', tmp_path, 'cpu', 'fp32', 96, 72, 2,
                        timeout=0.05)
    assert row == {'ran': 'failed', 'error': 'its process took over 0.05 s: stopped'}


def test_a_hung_publisher_process_ends_its_phase_with_an_error(monkeypatch):
    """dpt_bench's DDS phases wait for their publisher process a bounded time, then stop it."""
    import time
    from dpt_ros.tools import dds_clients as dds
    procs = []

    def hung(*args):
        procs.append(subprocess.Popen(['sleep', '600'], stderr=subprocess.PIPE, text=True))
        return procs[-1]

    class Client:
        def spin_until(self, pred, limit, proc=None, step=0.02):
            end = time.monotonic() + limit
            while time.monotonic() < end and not pred():
                time.sleep(0.05)
            return pred()

        def spin_for(self, seconds, step=0.02):
            pass
    monkeypatch.setattr(dds, '_publisher_process', hung)
    monkeypatch.setattr(dds, 'PUBLISHER_GRACE_S', 0.5)
    with pytest.raises(RuntimeError, match='did not finish within 1 s'):
        dds._latency_phase(Client(), {'depth': {}}, ['depth'], '/x', 64, 48, 100.0, 8, 0.0, {})
    assert procs[0].poll() is not None  # stopped, not left running


def test_bench_multitask_times_one_forward_against_two(tmp_path):
    """dpt_bench --multitask: a TIPSv2-DPT forward for depth + labels vs two checkpoints."""
    out = tmp_path / 'bench'
    proc = subprocess.run([sys.executable, '-m', 'dpt_ros.tools.bench', '--multitask',
                           '--models', 'tiny-tipsv2', '--iters', '2', '--width', '96',
                           '--height', '72', '--device', 'cpu', '--out', str(out),
                           '--work-dir', str(tmp_path / 'work')],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / 'multitask.json').read_text())
    assert res['one']['forwards_per_frame'] == 1 and res['two']['forwards_per_frame'] == 2
    assert res['one']['models'][0].startswith('Tipsv2DptForDensePrediction')
    assert [m.split()[0] for m in res['two']['models']] == [
        'Tipsv2DptForDepthEstimation', 'Tipsv2DptForSemanticSegmentation']
    for part in ('forward', 'pipeline'):
        assert res[f'ratio_{part}'] == pytest.approx(
            res['two'][part]['p50'] / res['one'][part]['p50'])
    md = (out / 'multitask.md').read_text()
    assert 'two forwards / one' in md and md in proc.stdout


@pytest.mark.parametrize('preset', ['tiny-tipsv2', 'tiny-depth-pro',
                                    'tiny-prompt-depth-anything'])
def test_the_stage_and_forward_sections_run_the_new_families(tmp_path, preset):
    """dpt_bench --models with the dense families: metres and points, a prompt from anchors."""
    from dpt_ros.tools.bench import (bench_forward, bench_stages, BENCH_OUTPUTS, make_pipeline,
                                     naive_serves, scene_anchors)
    from dpt_ros.tools.sample import random_checkpoint, synthetic_scene
    pipe, depth_cfg = make_pipeline(random_checkpoint(preset, tmp_path), 'cpu', 'fp32')
    assert depth_cfg['depth.mode'] == 'metric' and not naive_serves(pipe)
    s = synthetic_scene(96, 72)
    anchors = scene_anchors(s.depth) if pipe.prompted else None
    no_pub = type('NoPub', (), {'ok': False})()
    st = bench_stages(pipe, s.rgb, s.intrinsics, BENCH_OUTPUTS, 1, 0, no_pub, anchors)
    fw = bench_forward(pipe, s.rgb, 1, 0, anchors)
    assert st['geometry']['p50'] >= 0 and len(fw['raw']) == 1
    r = pipe.process(conv_frame(s), s.intrinsics, BENCH_OUTPUTS, anchors)
    assert 'points' in r.arrays and r.mode == 'metric'


def conv_frame(scene):
    from dpt_ros.core.conversions import Frame
    return Frame(scene.rgb, 'rgb8')


def test_the_node_share_of_the_floor_leaves_the_forward_out_on_both_sides():
    """(e2e - floor) / overhead as it stands, and without the forward the relay never runs."""
    from dpt_ros.tools.bench import _floor_line, node_share
    d = {'latency': {'latency': {'p50': 44.0}, 'node_p50_ms': {'forward': 2.0}},
         'relay': {'latency': {'p50': 30.0}, 'received': 30, 'sent': 30},
         'inprocess_overhead': 8.0}
    got = node_share(d)
    assert got['e2e_minus_floor'] == pytest.approx(14.0)
    assert got['ratio_node_share_vs_inprocess_overhead'] == pytest.approx(14.0 / 8.0)
    assert got['e2e_minus_floor_and_forward'] == pytest.approx(12.0)
    assert got['ratio_node_share_outside_forward_vs_inprocess_overhead'] == pytest.approx(1.5)
    line = _floor_line(d)
    assert '**1.75x**' in line and '**1.50x**' in line and "node's forward (2.0 ms" in line
    # No forward reported by the node (an older results.json): only the first ratio.
    del d['latency']['node_p50_ms']
    assert set(node_share(d)) == {'e2e_minus_floor', 'ratio_node_share_vs_inprocess_overhead'}
    assert '**1.75x**' in _floor_line(d)
    # Under the floor: said as such, not as a ratio.
    d['latency']['latency']['p50'] = 29.0
    assert 'at or under the floor' in _floor_line(d)


def test_the_dds_processes_run_with_the_shipped_large_frame_profile(monkeypatch):
    """dpt_bench and the demo find config/fastdds_large_frames.xml from a source checkout."""
    from pathlib import Path
    from dpt_ros.tools.toolkit import packaged_config, profile_env
    shipped = Path(__file__).resolve().parents[2] / 'config' / 'fastdds_large_frames.xml'
    assert packaged_config('fastdds_large_frames.xml') == shipped
    from dpt_ros.ros import fastdds
    for var in fastdds.PROFILE_VARS:
        monkeypatch.delenv(var, raising=False)
    major = fastdds.fastdds_major()  # rclpy is loaded here: the library tells
    assert major in (2, 3)
    read = fastdds.FASTRTPS_VAR if major == 2 else fastdds.FASTDDS_VAR
    assert profile_env() == {read: str(shipped)}  # test_fastdds: that puts it in effect
    # A profile the user chose is kept, named the way this Fast DDS reads it (Jazzy ignores a
    # FASTDDS_DEFAULT_PROFILES_FILE set alone).
    for var in fastdds.PROFILE_VARS:
        monkeypatch.setenv(var, '/etc/mine.xml')
        assert profile_env() == {read: '/etc/mine.xml'}
        monkeypatch.delenv(var)


def test_the_node_forward_is_split_into_its_openmp_setting_idling_and_the_rest():
    """forward_as_node: bare (this process) -> node's setting -> paced -> the node's own."""
    from dpt_ros.tools.bench import _node_lines, forward_as_node
    d = {'backend': 'torch', 'forward_bare_pooled_p50': 800.0,
         'latency': {'node_p50_ms': {'forward': 990.0}}, 'throughput': {'fps': 1.0},
         'node_forward': {'ran': 'torch', 'openmp': 'OMP_WAIT_POLICY=PASSIVE', 'period_s': 1.5,
                          'back_to_back': {'p50': 840.0}, 'paced': {'p50': 900.0}}}
    got = forward_as_node(d)
    assert got['ratio_setting_vs_bare'] == pytest.approx(840 / 800)
    assert got['ratio_paced_vs_back_to_back'] == pytest.approx(900 / 840)
    assert got['ratio_node_forward_vs_paced'] == pytest.approx(990 / 900)
    assert got['ratio_fps_vs_setting_forward'] == pytest.approx(0.84)
    d.update(got)
    line = next(ln for ln in _node_lines(d) if 'set up as the node' in ln)
    assert '(OMP_WAIT_POLICY=PASSIVE)' in line and '**1.05x**' in line and '**1.10x**' in line
    # Another backend ran in that process (a fallback): nothing is split.
    d['node_forward']['ran'] = 'torch-fallback'
    assert forward_as_node(d) == {}


@pytest.mark.parametrize('told', [{}, {'GOMP_SPINCOUNT': '10000'}])
def test_the_bare_forward_set_up_as_the_node_runs_with_its_openmp_setting(
        tmp_path, monkeypatch, told):
    """The child process gets what dpt_node would run with: passive, or the user's setting."""
    from dpt_ros.tools.bench import bench_node_forward
    for k in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT'):
        monkeypatch.delenv(k, raising=False)
    for k, v in told.items():
        monkeypatch.setenv(k, v)
    row = bench_node_forward('tiny-depth-anything', 'torch', tmp_path, 'cpu', 'fp32', 96, 72, 2,
                             0.2)
    assert row['ran'] == 'torch', row
    assert row['openmp'] == ('GOMP_SPINCOUNT=10000' if told else 'OMP_WAIT_POLICY=PASSIVE')
    assert row['back_to_back']['n'] == row['paced']['n'] == 2 and row['period_s'] == 0.2
