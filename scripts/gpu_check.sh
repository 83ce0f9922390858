#!/usr/bin/env bash
# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0
#
# The GPU check, one command on a CUDA machine that reaches no package registry:
#
#   bash scripts/gpu_check.sh [--budget S] [--steps a,b] [--models M...] [--sizes WxH...]
#                             [--precisions P...] [--iters N] [--device D]
#   bash scripts/gpu_check.sh --dry-run --machine FILE [...]   the plan, against a description
#   bash scripts/gpu_check.sh --wheels                          build wheels/ here (needs pip)
#
# It uses the machine's own python3, torch and transformers. What the machine lacks (the ROS 2
# Jazzy wheels) comes carried in wheels/ (WHEELS_DIR) and goes into a venv that sees the
# machine's packages; nothing is installed over them. The steps (python -m dpt_ros.tools.gpu_check)
# run ordered by value, each under its own `timeout`, each only when its estimate fits what is
# left of the budget (default 540 s), and each writes its figures the moment it has them:
# $OUT/run.json, $OUT/summary.md, $OUT/bench_<model>.json (OUT defaults to gpu_check_out/).
# The last thing printed is the table of what was measured.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export OUT=${OUT:-$ROOT/gpu_check_out}
export GPU_CHECK_WORK=${GPU_CHECK_WORK:-/tmp/dpt_gpu_check}
WHEELS_DIR=${WHEELS_DIR:-$ROOT/wheels}
PY=${PYTHON:-python3}
STEP_LIMIT=${GPU_CHECK_STEP_LIMIT:-0}   # if set: no step may run longer (seconds)
DRY=0
MACHINE=()
PLAN=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --machine) MACHINE=(--machine "$2"); shift ;;
    --budget|--steps|--iters|--device) PLAN+=("$1" "$2"); shift ;;
    --models|--sizes|--precisions)
      PLAN+=("$1"); shift
      while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do PLAN+=("$1"); shift; done
      continue ;;
    --wheels)
      # The carried wheels, for CPython 3.12 on x86_64 (the machine's): pinned, no deps.
      mkdir -p "$WHEELS_DIR"
      "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$WHEELS_DIR" -r scripts/gpu_wheels.txt || exit 1
      echo "gpu_check: $(ls "$WHEELS_DIR"/*.whl | wc -l) wheels in $WHEELS_DIR," \
           "$(du -sm "$WHEELS_DIR" | cut -f1) MiB (the working tree travels with them:" \
           "64 MiB in all)"
      exit 0 ;;
    -h|--help) sed -n '5,19p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$DRY" = 1 ] && [ ${#MACHINE[@]} -eq 0 ]; then
  echo "gpu_check: --dry-run needs --machine FILE (e.g. test/data/gpu_machine.txt)" >&2
  exit 2
fi
GLOBAL=("${MACHINE[@]}")
[ "$DRY" = 1 ] && GLOBAL+=(--dry-run)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export TOKENIZERS_PARALLELISM=false ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( RANDOM % 100 + 1 ))}
mkdir -p "$OUT" "$GPU_CHECK_WORK/logs"
# What an earlier run here left (the folder may hold other files: only ours go).
rm -f "$OUT"/run.json "$OUT"/summary.md "$OUT"/bench_*.json "$GPU_CHECK_WORK"/logs/*
gc() { "$PY" -m dpt_ros.tools.gpu_check "${GLOBAL[@]}" "$@"; }

# Simulated time in a dry run: each step takes its estimate, so the budget logic is exercised.
START=$(date +%s)
CLOCK=$START
DEADLINE=$(( START + 600 ))   # until the plan sets it: budget - reserve
now() { if [ "$DRY" = 1 ]; then echo "$CLOCK"; else date +%s; fi; }

gc versions || { gc table; exit 1; }   # the first lines: which versions run
gc install --wheels "$WHEELS_DIR"
# shellcheck disable=SC1091
source "$GPU_CHECK_WORK/python_env.sh"   # PY: the venv's python when wheels were installed
STATUS=0

run_step() {  # run_step NAME ESTIMATE LIMIT
  local name=$1 est=$2 limit=$3 left t0 rc log
  left=$(( DEADLINE - $(now) ))
  if [ "$left" -lt "$est" ]; then
    echo "== step $name: skipped (needs ~$est s, $left s left)"
    gc record "$name" --estimate "$est" --skipped "needs ~$est s, $left s left"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  [ "$STEP_LIMIT" -gt 0 ] && [ "$limit" -gt "$STEP_LIMIT" ] && limit=$STEP_LIMIT
  echo "== step $name: estimate $est s, limit $limit s, $left s left"
  log="$GPU_CHECK_WORK/logs/${name//:/_}.log"
  t0=$(date +%s)
  # timeout signals the step's whole process group (node and publisher processes too).
  timeout -k 10 "$limit" "$PY" -m dpt_ros.tools.gpu_check "${GLOBAL[@]}" step "$name" \
    </dev/null 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || STATUS=1
  if [ "$DRY" = 1 ]; then CLOCK=$(( CLOCK + est )); fi
  echo "== step $name: $([ "$rc" = 0 ] && echo ok || echo "exit $rc") in" \
       "$(( $(date +%s) - t0 )) s (estimate $est s)"
  gc record "$name" --rc "$rc" --took "$(( $(date +%s) - t0 ))" --estimate "$est" --log "$log"
}

run_step env 15 60   # first, always: the plan needs what it finds (estimate: gpu_check.ESTIMATE)
if gc plan "${PLAN[@]}"; then
  exec 3< "$GPU_CHECK_WORK/plan.tsv"
  read -r _ budget reserve <&3   # '#budget S R': steps end by START + S - R
  DEADLINE=$(( START + budget - reserve ))
  while IFS=$'\t' read -r name est limit <&3; do
    run_step "$name" "$est" "$limit"
  done
  exec 3<&-
else
  STATUS=1
fi
gc table   # the last thing printed: the table of what was measured
exit $STATUS
