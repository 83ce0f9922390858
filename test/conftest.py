# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Shared fixtures: tiny random checkpoints, sample data, an isolated ROS domain."""

import os
from pathlib import Path
import random
import sys

import pytest

# Isolate DDS traffic of this test run from anything else on the machine (and from parallel
# runs): a random domain, discovery on this host only. Set before any rclpy import.
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 100)))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_LOCALHOST_ONLY', '1')  # Humble's spelling of the same
os.environ.setdefault('HF_HUB_OFFLINE', '1')       # tests never reach for the network
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
# Jazzy/Kilted messages check field types only with this set; Humble's always do (rosidl_python
# humble runs the checks under `if __debug__`). Forced, so the suite fails here as it would there.
os.environ['ROS_PYTHON_CHECK_FIELDS'] = '1'

ROOT = Path(__file__).resolve().parents[1]
# The shared test helpers (rosutil, bagutil) live beside this file; tests sit in sub-folders.
sys.path.insert(0, str(Path(__file__).resolve().parent))
# Real RGB-D frames with ground truth (TUM, ICL-NUIM), part of the repository: test/data/README.md.
RGBD_DATA = Path(os.environ.get('DPT_ROS_DATA', ROOT / 'test' / 'data'))


def pytest_addoption(parser):
    parser.addoption('--model', default=os.environ.get('DPT_ROS_MODEL', ''),
                     help='a real depth checkpoint folder (or hub id) for real-weight tests')


def pytest_configure(config):
    if os.environ.get('DPT_ROS_REQUIRE_ROS') == '1':  # CI: no green run with the node skipped
        try:
            import rclpy  # noqa: F401
        except ImportError as exc:
            raise pytest.UsageError(
                f'DPT_ROS_REQUIRE_ROS=1 but rclpy does not import ({exc}): every node test '
                'would be skipped. Install the ROS 2 wheels (scripts/setup_venv.sh) or source '
                'a ROS 2 install.') from exc
    config.addinivalue_line('markers', 'gpu: needs a CUDA GPU (skipped without one)')
    config.addinivalue_line('markers', 'real_model: needs --model DIR with real weights')
    config.addinivalue_line('markers', 'ros: needs rclpy and the ROS 2 message packages')


def pytest_collection_modifyitems(config, items):
    import torch
    no_gpu = pytest.mark.skip(reason='no CUDA GPU on this machine (torch.cuda.is_available() '
                                     'is False)')
    no_model = pytest.mark.skip(reason='no real checkpoint given: pass --model DIR (or set '
                                       'DPT_ROS_MODEL) to run real-weight tests')
    for item in items:
        # Markers, not keywords: keywords also hold folder names (a checkout in ./gpu).
        if item.get_closest_marker('gpu') and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if item.get_closest_marker('real_model') and not config.getoption('--model'):
            item.add_marker(no_model)


@pytest.fixture(scope='session')
def real_model(request):
    """Return the --model checkpoint (tests using it are marked real_model)."""
    return request.config.getoption('--model')


@pytest.fixture(scope='session')
def checkpoints(tmp_path_factory):
    """Tiny random-weight checkpoints written with save_pretrained, by preset name."""
    from dpt_ros.tools.sample import make_random_checkpoint
    base = tmp_path_factory.mktemp('ckpt')
    made = {}

    def get(preset):
        if preset not in made:
            made[preset] = make_random_checkpoint(base / preset, preset, seed=0)
        return made[preset]
    return get


@pytest.fixture(scope='session')
def tiny_depth(checkpoints):
    """Return a ViT DPT depth checkpoint (relative inverse depth), 64 x 64 input."""
    return checkpoints('tiny-depth')


@pytest.fixture(scope='session')
def tiny_seg(checkpoints):
    """DPT semantic segmentation checkpoint with 5 named classes."""
    return checkpoints('tiny-seg')


@pytest.fixture(scope='session')
def tiny_metric(checkpoints):
    """Depth Anything (DINOv2 backbone + DPT head) metric checkpoint, max depth 10 m."""
    return checkpoints('tiny-depth-anything')


@pytest.fixture(scope='session')
def rgbd_data():
    """Return test/data: real TUM and ICL-NUIM frames with ground-truth depth."""
    # In the repository, so a missing folder is a broken checkout, not a reason to skip.
    assert (RGBD_DATA / 'tum' / 'TUM_color.png').is_file(), \
        f'{RGBD_DATA} lacks the TUM / ICL-NUIM frames (test/data/README.md; or set DPT_ROS_DATA)'
    return RGBD_DATA


_FIGURES = []


@pytest.fixture(scope='session')
def record_figure():
    """Record a measured figure (name, text); all are printed at the end of the run."""
    def record(name, text):
        _FIGURES.append((name, text))
    return record


def pytest_terminal_summary(terminalreporter):
    if _FIGURES:
        terminalreporter.section('dpt_ros measured figures')
        for name, text in _FIGURES:
            terminalreporter.write_line(f'{name}: {text}')


@pytest.fixture
def ctrl_c_after():
    """Run a command until it prints a marker, then Ctrl-C it twice as launch does.

    Returns (exit status, everything it printed); a process that does not exit within
    timeout seconds of the Ctrl-C is killed (status None).
    """
    import signal
    import subprocess
    import sys
    import time

    def run(args, marker, start_timeout=120.0, timeout=30.0, cwd=None):
        proc = subprocess.Popen([sys.executable] + [str(a) for a in args], cwd=cwd,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, PYTHONUNBUFFERED='1'))
        out = ''
        try:
            end = time.monotonic() + start_timeout
            while marker not in out and time.monotonic() < end and proc.poll() is None:
                out += proc.stdout.readline()
            assert marker in out, out
            proc.send_signal(signal.SIGINT)
            time.sleep(0.05)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            out += proc.communicate(timeout=timeout)[0]
        finally:
            if proc.poll() is None:
                proc.kill()
                out += proc.communicate()[0]
                return None, out
        return proc.returncode, out
    return run
