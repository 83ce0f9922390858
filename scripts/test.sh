#!/usr/bin/env bash
# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0
#
# README command 2: set up .venv with the test requirements and run the whole test suite.
# Arguments go to pytest, e.g. --model DIR (real-weight tests), -k node, -x.
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TESTS=1 bash scripts/setup_venv.sh
# Humble's generated messages always check field types; Jazzy/Kilted only with this set.
export ROS_PYTHON_CHECK_FIELDS=1
exec .venv/bin/python -m pytest test -ra "$@"
