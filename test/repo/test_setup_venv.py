# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""scripts/setup_venv.sh picks its interpreter quietly, and the sourced ROS's one first."""

import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYENV_HELP = ('pyenv: python3.12: command not found\n\nThe `python3.12` command exists in these '
              'Python versions:\n  3.12.1\n')


def _bin(tmp_path: Path, scripts: dict) -> Path:
    """Make a PATH folder holding only these shell scripts (name -> body) and dirname."""
    d = tmp_path / 'bin'
    d.mkdir()
    for name, body in scripts.items():
        f = d / name
        f.write_text('#!/bin/sh\n' + body + '\n')
        f.chmod(0o755)
    (d / 'dirname').symlink_to(shutil.which('dirname'))
    return d


def _pick(path: Path, **env) -> subprocess.CompletedProcess:
    full = {'PATH': str(path), 'HOME': os.environ.get('HOME', '/tmp'), **env}
    return subprocess.run(['/bin/bash', str(ROOT / 'scripts' / 'setup_venv.sh'), '--print-python'],
                          env=full, capture_output=True, text=True, timeout=120)


def test_pyenv_shims_are_probed_quietly(tmp_path):
    # A pyenv shim for a version that is not installed: help text on stderr, exit 127.
    shim = f"printf '%s' '{PYENV_HELP}' >&2\nexit 127"
    path = _bin(tmp_path, {'python3.12': shim, 'python3.11': shim,
                           'python3': f'exec {sys.executable} "$@"'})
    out = _pick(path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'python3'
    assert out.stderr == ''


def test_sourced_ros_prefers_the_python_that_imports_rclpy(tmp_path):
    pytest.importorskip('rclpy', reason='rclpy (ROS 2) is not installed')
    # python3.12 runs but cannot import the sourced ROS (-S: no site-packages, as a Python of
    # another version beside a Humble install); python3 is the distro's own.
    path = _bin(tmp_path, {'python3.12': f'exec {sys.executable} -S "$@"',
                           'python3': f'exec {sys.executable} "$@"'})
    assert _pick(path).stdout.strip() == 'python3.12'  # no ROS sourced: newest first
    out = _pick(path, ROS_DISTRO='humble')
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'python3'
    assert out.stderr == ''


def test_sourced_ros_that_no_python_imports_says_so(tmp_path):
    path = _bin(tmp_path, {'python3': f'exec {sys.executable} -S "$@"'})
    out = _pick(path, ROS_DISTRO='jazzy')
    assert out.stdout.strip() == 'python3'
    assert 'ROS_DISTRO=jazzy' in out.stderr and 'rclpy' in out.stderr


def test_ci_fails_instead_of_skipping_the_node_tests_when_rclpy_is_missing(tmp_path):
    """.ci/run requires ROS: pytest stops with the reason when rclpy does not import."""
    assert 'export DPT_ROS_REQUIRE_ROS=1' in (ROOT / '.ci' / 'run').read_text()
    assert 'DPT_ROS_REQUIRE_ROS' in (ROOT / 'scripts' / 'setup_venv.sh').read_text()
    blocked = tmp_path / 'blocked' / 'rclpy'
    blocked.mkdir(parents=True)
    (blocked / '__init__.py').write_text("raise ImportError('rclpy blocked for this test')\n")
    env = {k: v for k, v in os.environ.items() if k != 'DPT_ROS_REQUIRE_ROS'}  # CI sets it
    env['PYTHONPATH'] = f"{blocked.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    cmd = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
           str(ROOT / 'test' / 'core' / 'test_config.py'), '-k', 'camera_list']
    required = subprocess.run(cmd, env=dict(env, DPT_ROS_REQUIRE_ROS='1'), cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
    assert required.returncode != 0
    assert 'DPT_ROS_REQUIRE_ROS=1 but rclpy does not import' in required.stderr, \
        required.stdout + required.stderr
    optional = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
    assert optional.returncode == 0, optional.stdout + optional.stderr
