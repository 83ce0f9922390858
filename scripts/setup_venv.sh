#!/usr/bin/env bash
# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0
#
# Create (or update) .venv with dpt_ros and what it needs. Used by demo.sh, test.sh, .ci/run.
#   WITH_TESTS=1  also install the test requirements
#   PYTHON=...    interpreter to use (default: python3.12, python3.11, then python3)
# With ROS 2 sourced (rclpy importable), the venv sees the system ROS; otherwise the ROS 2
# Jazzy wheels from PyPI are installed (Python 3.11 / 3.12 only).
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  for p in python3.12 python3.11 python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
      echo "$p"; return
    fi
  done
  echo "dpt_ros needs Python 3.10 or newer (python3.12 / python3.11 / python3 not found)" >&2
  exit 1
}

PY=$(pick_python)
SYSTEM_ROS=0
if "$PY" -c 'import rclpy, sensor_msgs.msg' >/dev/null 2>&1; then SYSTEM_ROS=1; fi

STAMP=.venv/.dpt_ros_setup
WANT="$(cat requirements/*.txt setup.py | sha256sum | cut -c1-16) tests=${WITH_TESTS:-0} ros=$SYSTEM_ROS"
if [ -x .venv/bin/python ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0  # already set up for these requirements
fi

if [ ! -x .venv/bin/python ]; then
  ARGS=()
  if [ "$SYSTEM_ROS" = 1 ]; then ARGS+=(--system-site-packages); fi
  echo "creating .venv with $PY ${ARGS[*]:-}"
  "$PY" -m venv "${ARGS[@]}" .venv || {
    echo "could not create a virtual environment: on Debian/Ubuntu run" \
         "'sudo apt install python3-venv' (or python3.X-venv) and try again" >&2
    exit 1
  }
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install -r requirements/core.txt
if [ "$SYSTEM_ROS" = 1 ]; then
  echo "using the ROS 2 found on this system (rclpy importable)"
elif ! "${PIP[@]}" install -r requirements/ros-jazzy.txt; then
  echo "WARNING: the ROS 2 Jazzy wheels did not install (they exist for Python 3.11 and 3.12);" \
       "node tests will be skipped and the demo runs without the node." \
       "On a robot, source /opt/ros/<distro>/setup.bash before running this." >&2
fi
if [ "${WITH_TESTS:-0}" = 1 ]; then
  "${PIP[@]}" install -r requirements/test.txt
fi
"${PIP[@]}" install --no-deps -e .
echo "$WANT" > "$STAMP"
