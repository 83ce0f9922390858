# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""scripts/gpu_check.sh: planned against the GPU machine's description, run for real on CPU."""

import json
import os
from pathlib import Path
import re
import subprocess
import sys

import pytest

from dpt_ros.tools import gpu_check as gc

ROOT = Path(__file__).resolve().parents[2]
MACHINE = ROOT / 'test' / 'data' / 'gpu_machine.txt'
# Wheels one might carry: two the machine lacks, and what must never go in there.
WHEELS = ['ros_rclpy-7.1.6-cp312-cp312-manylinux_2_28_x86_64.whl',
          'ros_jazzy_rclpy-7.1.6-py3-none-any.whl',
          'torch-2.13.0-cp312-cp312-manylinux_2_28_x86_64.whl',
          'nvidia_cudnn_cu13-9.13.0.50-py3-none-manylinux_2_27_x86_64.whl',
          'numpy-2.4.6-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl',
          'ros_rcl-9.2.8-cp311-cp311-manylinux_2_28_x86_64.whl']


def gpu_check(tmp_path, *args, python=sys.executable, wheels=None, **env):
    """Run the script with its folders under tmp_path; return (rc, stdout lines, OUT)."""
    out = tmp_path / 'out'
    env = dict(os.environ, OUT=str(out), GPU_CHECK_WORK=str(tmp_path / 'work'),
               WHEELS_DIR=str(wheels or tmp_path / 'no_wheels'), PYTHON=str(python), **env)
    proc = subprocess.run(['bash', 'scripts/gpu_check.sh', *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    return proc.returncode, (proc.stdout + proc.stderr).splitlines(), out


def fake_wheels(tmp_path):
    folder = tmp_path / 'wheels'
    folder.mkdir()
    for name in WHEELS:
        (folder / name).write_bytes(b'')
    return folder


def assert_files_come_back(out):
    """Check what the machine sends back: at most 8 files, 2 folders down, plain names."""
    files = [p.relative_to(out) for p in out.rglob('*') if p.is_file()]
    assert 0 < len(files) <= gc.MAX_FILES, files
    for f in files:
        assert len(f.parts) <= 3 and all(re.fullmatch(r'[A-Za-z0-9._-]+', x) for x in f.parts)


def test_dry_run_on_the_gpu_machine_fits_its_time_and_file_budgets(tmp_path):
    rc, lines, out = gpu_check(tmp_path, '--dry-run', '--machine', str(MACHINE),
                               wheels=fake_wheels(tmp_path))
    text = '\n'.join(lines)
    assert rc == 0, text
    # First: which versions run (the machine's own, not the repository's pins).
    assert lines[0].startswith('versions: python 3.12.3, torch 2.11.0+cu130, transformers 5.17.0')
    run = json.loads((out / 'run.json').read_text())
    # The plan, by estimate, fits the budget, and the budget one 600 s command.
    assert run['estimate_s'] <= run['budget_s'] - gc.RESERVE_S
    # A minute of the 600 s command stays for a stopped step's kill grace and the table.
    assert run['budget_s'] <= 600 - 60
    planned = [p['name'] for p in run['plan']]
    assert planned[:2] == ['env', 'tests']
    for m in gc.MODELS:
        assert f'eager:{m}' in planned and f'compile:{m}' in planned
    assert 'dds:hybrid-depth' in planned and 'tests-compile' in planned  # rclpy is carried
    assert not [p for p in planned if p.startswith(('naive', 'tensorrt', 'onnxruntime'))]
    # What cannot run there is said once and never planned (no fallback timed as a backend).
    assert set(run['skipped_backends']) == {'tensorrt', 'onnxruntime'}
    assert 'onnxruntime 1.30.0 has no CUDAExecutionProvider' in run['skipped_backends'][
        'onnxruntime']
    assert sum(1 for ln in lines if ln.startswith('  skip ')) == 2
    # Nothing is installed over the machine's packages, torch least of all.
    inst = run['install']
    assert inst['installed'] == [WHEELS[1], WHEELS[0]]
    for name in WHEELS[2:4]:
        assert 'never installed' in inst['left_out'][name]
    assert 'machine has numpy 2.5.2' in inst['left_out'][WHEELS[4]]
    assert 'cp311' in inst['left_out'][WHEELS[5]]
    pip = next(ln for ln in lines if ' -m pip install ' in ln)
    assert '--no-index --no-deps' in pip and '--target' not in pip
    assert pip.split()[2] == str(tmp_path / 'work' / 'venv' / 'bin' / 'python3')
    # Every row the GPU would measure has its place in the results, and the files fit.
    rows = json.loads((out / 'bench_large-depth.json').read_text())['rows']
    assert set(rows) == {gc.row_key(f'{w}x{h}', b, p) for w, h in gc.SIZES
                         for b, p in [('torch', 'fp16'), ('torch', 'bf16'), ('torch', 'fp32'),
                                      ('compile', 'fp16'), ('compile-nograph', 'fp16')]}
    assert_files_come_back(out)
    # Last: the table of every row, then what was skipped.
    head = max(i for i, ln in enumerate(lines) if ln.startswith('model '))
    assert lines[head - 1].startswith('== GPU check: NVIDIA H200 | python 3.12.3')
    tail = lines[head + 1:]
    assert len([ln for ln in tail if ln.startswith(('hybrid-depth ', 'large-depth '))]) == 20
    assert all(ln.startswith(('hybrid-depth ', 'large-depth ', 'skipped ', 'left out: '))
               for ln in tail), tail
    assert '# GPU check: NVIDIA H200' in (out / 'summary.md').read_text()


def test_plan_keeps_what_fits_in_order_and_says_why_the_rest_is_left_out():
    facts = gc.read_description(MACHINE)
    s = gc.Settings(models=['hybrid-depth', 'large-depth'], sizes=[[640, 480]],
                    precisions=['fp16'], budget_s=200)
    plan, left = gc.make_plan(facts, s)
    assert [p.name for p in plan] == ['env', 'tests', 'eager:hybrid-depth', 'eager:large-depth']
    why = {p.name: w for p, w in left}
    assert 'carry the ROS 2 wheels' in why['dds:hybrid-depth']
    assert 'over the budget' in why['compile:hybrid-depth']
    assert 'only on request' in why['naive:hybrid-depth']
    assert sum(p.estimate_s for p in plan) + gc.INSTALL_ESTIMATE_S <= 200 - gc.RESERVE_S
    # A machine whose runtimes can run gets their rows; --steps picks steps or kinds.
    gpu_ort = dict(facts, ort_providers=['CUDAExecutionProvider', 'CPUExecutionProvider'],
                   packages=dict(facts['packages'], tensorrt='10.13.0', **{'ros-rclpy': '7'}))
    assert gc.skipped_backends(gpu_ort) == {}
    plan, _ = gc.make_plan(gpu_ort, gc.Settings(models=['hybrid-depth'], sizes=[[640, 480]],
                                                precisions=['fp16'], budget_s=5000))
    names = [p.name for p in plan]
    assert {'tensorrt:hybrid-depth', 'onnxruntime:hybrid-depth', 'dds:hybrid-depth'} <= set(names)
    assert names.index('compile:hybrid-depth') < names.index('tensorrt:hybrid-depth')
    plan, _ = gc.make_plan(gpu_ort, s, only=['eager', 'naive:hybrid-depth'])
    assert [p.name for p in plan] == ['env', 'eager:hybrid-depth', 'eager:large-depth',
                                      'naive:hybrid-depth']


def test_test_counts_survive_a_killed_pytest():
    """Count pytest -v lines as they come: a run killed mid-way keeps its outcomes."""
    log = ('test/core/test_pipeline_gpu.py::test_a[fp16] PASSED                  [ 10%]\n'
           'test/core/test_pipeline_gpu.py::test_b SKIPPED (needs two CUDA GPUs)  [ 20%]\n'
           'test/core/test_pipeline_gpu.py::test_c FAILED                         [ 30%]\n'
           'test/core/test_pipeline_gpu.py::test_d ')
    counts = gc.test_counts(log)
    assert (counts['passed'], counts['failed'], counts['skipped']) == (1, 1, 1)
    assert counts['problems'] == {'test/core/test_pipeline_gpu.py::test_c': ''}
    summary = '\nFAILED test/core/test_pipeline_gpu.py::test_c - AssertionError: 3 != 4\n'
    assert gc.test_counts(log + summary)['problems'] == {
        'test/core/test_pipeline_gpu.py::test_c': 'AssertionError: 3 != 4'}


def test_a_step_past_its_limit_is_stopped_and_keeps_what_it_wrote(tmp_path):
    """A step that hangs after writing its first figures: stopped, figures kept, run goes on."""
    wrapper = tmp_path / 'python'
    wrapper.write_text('#!/usr/bin/env bash\n'
                       f'{sys.executable} "$@"; rc=$?\n'
                       'case "$*" in *"step eager:hybrid-depth"*) exec sleep 600 ;; esac\n'
                       'exit $rc\n')
    wrapper.chmod(0o755)
    rc, lines, out = gpu_check(tmp_path, '--dry-run', '--machine', str(MACHINE),
                               '--models', 'hybrid-depth', '--steps', 'eager,compile',
                               python=wrapper, GPU_CHECK_STEP_LIMIT='5')
    text = '\n'.join(lines)
    assert rc == 1, text  # a step did not finish
    steps = json.loads((out / 'run.json').read_text())['steps']
    assert steps['eager:hybrid-depth']['status'] == 'timed out', steps
    assert steps['compile:hybrid-depth']['status'] == 'dry run'  # the run went on
    rows = json.loads((out / 'bench_hybrid-depth.json').read_text())['rows']
    assert gc.row_key('1280x720', 'torch', 'fp32') in rows  # written before the hang
    assert 'steps not ok: eager:hybrid-depth (timed out)' in text
    assert lines[-1].startswith('left out: ')


def test_cpu_run_measures_every_row_and_prints_the_table_last(tmp_path):
    """The real steps on a tiny model on CPU: figures written per row, the table printed last."""
    pytest.importorskip('transformers')
    rc, lines, out = gpu_check(tmp_path, '--device', 'cpu', '--models', 'tiny-depth-anything',
                               '--sizes', '96x72', '--precisions', 'fp32', '--iters', '3',
                               '--steps', 'eager')
    text = '\n'.join(lines)
    assert rc == 0, text
    row = json.loads((out / 'bench_tiny-depth-anything.json').read_text())['rows'][
        gc.row_key('96x72', 'torch', 'fp32')]
    assert row['status'] == 'measured' and row['ran'] == 'torch', row
    assert row['forward']['n'] == 3 and 0 < row['forward']['p50'] <= row['forward']['p95']
    assert row['pipeline']['p50'] > 0 and row['stages_p50']['forward'] > 0
    said = [ln for ln in lines if ln.startswith('tiny-depth-anything 96x72 torch fp32: forward')]
    assert len(said) == 1  # its summary line, as soon as it was measured
    last = [ln for ln in lines if ln.startswith('tiny-depth-anything ')][-1].split()
    assert last[:4] == ['tiny-depth-anything', '96x72', 'torch', 'fp32']
    assert float(last[4]) == pytest.approx(row['forward']['p50'], abs=0.01)
    assert_files_come_back(out)


def test_compile_without_graphs_keeps_the_pipeline_on_its_module(tiny_metric, monkeypatch):
    """The no-graphs variant compiles in torch's default mode, and the pipeline keeps it."""
    import torch
    from dpt_ros.tools.bench import make_pipeline
    from dpt_ros.core.conversions import Frame
    from dpt_ros.tools.sample import synthetic_scene
    modes = []

    def fake_compile(module, mode=None, **kw):
        modes.append(mode)
        return module
    monkeypatch.setattr(torch, 'compile', fake_compile)
    pipe, _ = make_pipeline(tiny_metric, 'cpu', 'fp32', 'compile')
    gc.compile_without_graphs(pipe)
    s = synthetic_scene(96, 72)
    pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics)
    assert modes == [None] and pipe.depth_model.backend == 'compile'
    assert pipe.depth_model.eager is not None


def test_a_compile_that_falls_back_is_never_timed_as_compile(tmp_path, monkeypatch):
    """Both compile variants: a compiled module that fails gives a row saying so, no figures."""
    import torch

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError('inductor exploded')
    monkeypatch.setattr(torch, 'compile', lambda module, **kw: Broken())
    s = gc.Settings(models=['tiny-depth-anything'], sizes=[[96, 72], [160, 120]],
                    precisions=['fp32'], device='cpu', iters=2, warmup=1)
    ctx = gc.Ctx(s, tmp_path / 'out', tmp_path / 'work', 'tiny-depth-anything')
    assert gc.step_compile(ctx) == 1
    rows = json.loads(gc.bench_file(ctx.out, ctx.model).read_text())['rows']
    assert len(rows) == 4
    for key, row in rows.items():
        assert row['status'] == 'fell back to eager torch: not timed', (key, row)
        assert 'inductor exploded' in row['error'] and 'forward' not in row
