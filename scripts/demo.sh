#!/usr/bin/env bash
# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0
#
# README command 1: set up .venv, then run the built-in synthetic scene through dpt_node and
# write depth PNGs, colored depth, labels, overlays and .ply clouds to demo_out/ (with no
# pretrained checkpoint reachable, also the random-weight ones it ran: demo_out/random_models/).
# Arguments go to dpt_demo: --model DIR_OR_ID, --segmentation DIR_OR_ID, --out DIR, --frames N
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
exec .venv/bin/dpt_demo "$@"
