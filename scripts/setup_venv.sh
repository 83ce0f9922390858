#!/usr/bin/env bash
# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0
#
# Create (or update) .venv with dpt_ros and what it needs. Used by demo.sh, test.sh, .ci/run.
#   WITH_TESTS=1     also install the test requirements
#   PYTHON=...       interpreter to use. Default: with ROS 2 sourced (ROS_DISTRO set), the first of
#                    python3, python3.12, python3.11, python3.10 that imports rclpy (the distro's
#                    own); otherwise python3.12, python3.11, then python3.
#   --print-python   print the interpreter that would be used, and exit
# With ROS 2 sourced (rclpy importable), the venv sees the system ROS and pip installs only what
# requirements/robot.txt lists, under requirements/robot-constraints.txt (numpy stays the one
# the apt packages were built against); otherwise the ROS 2 Jazzy wheels from PyPI are
# installed (Python 3.11 / 3.12 only).
set -euo pipefail
cd "$(dirname "$0")/.."

# Probe quietly: a pyenv shim for a version that is not installed prints a page of help on
# stderr, and a Python that cannot import the sourced ROS prints a traceback.
runs() { "$@" >/dev/null 2>&1; }
usable() { command -v "$1" >/dev/null 2>&1 && runs "$1" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; }

pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  local p
  if [ -n "${ROS_DISTRO:-}" ]; then
    # A sourced ROS 2 works with the one Python its packages were built for (Humble: 3.10,
    # Jazzy/Kilted: 3.12); a newer python3.X beside it cannot import its rclpy.
    for p in python3 python3.12 python3.11 python3.10; do
      if usable "$p" && runs "$p" -c 'import rclpy, sensor_msgs.msg'; then echo "$p"; return; fi
    done
    echo "ROS_DISTRO=$ROS_DISTRO is set but no python3 imports its rclpy; is the ROS 2 setup" \
         "sourced in this shell? Continuing without it." >&2
  fi
  for p in python3.12 python3.11 python3; do
    if usable "$p"; then echo "$p"; return; fi
  done
  echo "dpt_ros needs Python 3.10 or newer (python3.12 / python3.11 / python3 not found)" >&2
  exit 1
}

PY=$(pick_python)
if [ "${1:-}" = --print-python ]; then echo "$PY"; exit 0; fi
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
if [ "$SYSTEM_ROS" = 1 ]; then
  echo "using the ROS 2 found on this system (rclpy importable); numpy, OpenCV and PyYAML from it"
  "${PIP[@]}" install -r requirements/robot.txt
else
  "${PIP[@]}" install -r requirements/core.txt
  if ! "${PIP[@]}" install -r requirements/ros-jazzy.txt; then
    if [ "${DPT_ROS_REQUIRE_ROS:-0}" = 1 ]; then
      echo "ERROR: the ROS 2 Jazzy wheels did not install and DPT_ROS_REQUIRE_ROS=1" >&2
      exit 1
    fi
    echo "WARNING: the ROS 2 Jazzy wheels did not install (they exist for Python 3.11 and 3.12);" \
         "node tests will be skipped and the demo runs without the node." \
         "On a robot, source /opt/ros/<distro>/setup.bash before running this." >&2
  fi
fi
if [ "${WITH_TESTS:-0}" = 1 ]; then
  CONSTRAINTS=()
  if [ "$SYSTEM_ROS" = 1 ]; then CONSTRAINTS=(-c requirements/robot-constraints.txt); fi
  "${PIP[@]}" install -r requirements/test.txt "${CONSTRAINTS[@]}"
fi
"${PIP[@]}" install --no-deps -e .
echo "$WANT" > "$STAMP"
