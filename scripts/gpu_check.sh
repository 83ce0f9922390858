#!/usr/bin/env bash
# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0
#
# The GPU check: on a CUDA machine, run the gpu-marked tests and dpt_bench on the hybrid- and
# large-sized random-weight models for every backend that can run there; results in $OUT.
#
#   bash scripts/gpu_check.sh [--dry-run] STEP...
#   STEP: env tests bench-hybrid bench-large bench-flags, or all (every one, in that order)
#
# Each step is sized to finish within 10 minutes on one H100-class GPU (to be confirmed by the
# first run), so the steps can run as separate commands. Every step first makes sure what it needs is importable (idempotent):
#   - torch with CUDA, transformers, safetensors, opencv, pyyaml, pytest: the machine's own
#     when present, else pip (requirements/core.txt);
#   - optional: tensorrt ("tensorrt>=10,<12"), ROS 2 Jazzy wheels (requirements/ros-jazzy.txt,
#     cp311/cp312), onnxruntime: from wheels in WHEELS_DIR (default .whl/) when that folder
#     exists, else from the package index when it is reachable, else skipped with a note.
# Results: $OUT/<step>.txt (log), $OUT/tests.xml, $OUT/bench_<model>/results.{json,md} and
# latency.png; OUT defaults to ./gpu_check_out. --dry-run prints the plan and what is
# installed, and runs nothing on the GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu_check_out}
PY=${PYTHON:-python3}
WHEELS_DIR=${WHEELS_DIR:-$ROOT/.whl}
SITE=${GPU_CHECK_SITE:-/tmp/dpt_gpu_site}
WORK=${GPU_CHECK_WORK:-/tmp/dpt_gpu_work}
ITERS=${ITERS:-20}
DRY=0
STEPS=()
NAMES='env, tests, bench-hybrid, bench-large, bench-flags, all'
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    env|tests|bench-hybrid|bench-large|bench-flags) STEPS+=("$arg") ;;
    all) STEPS+=(env tests bench-hybrid bench-large bench-flags) ;;
    -h|--help) sed -n '5,21p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown step '$arg' ($NAMES)" >&2
       exit 2 ;;
  esac
done
if [ ${#STEPS[@]} -eq 0 ]; then
  echo "gpu_check: name at least one step ($NAMES)" >&2
  exit 2
fi
mkdir -p "$OUT" "$SITE" "$WORK"
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

say() { echo "== gpu_check: $*"; }
run() {  # run a command, or print it under --dry-run
  if [ "$DRY" = 1 ]; then echo "would run: $*"; return 0; fi
  "$@"
}
have() { "$PY" -c "import $1" >/dev/null 2>&1; }
index_reachable() {
  timeout 20 "$PY" -m pip download --no-deps -q --timeout 3 --retries 0 -d "$WORK/probe" \
    pyyaml >/dev/null 2>&1
}

pip_get() {  # pip_get NAME SPEC...: from WHEELS_DIR, else the index, else a note
  local name=$1; shift
  if [ -d "$WHEELS_DIR" ] && ls "$WHEELS_DIR"/*.whl >/dev/null 2>&1 && \
      run "$PY" -m pip install -q --no-index --find-links "$WHEELS_DIR" --target "$SITE" \
        --upgrade "$@" ; then
    say "$name: installed from $WHEELS_DIR"
  elif [ "$INDEX" = 1 ] && run "$PY" -m pip install -q --target "$SITE" --upgrade "$@"; then
    say "$name: installed from the package index"
  else
    say "$name: not available (no wheels in $WHEELS_DIR, no package index): skipped"
    return 1
  fi
}

ensure() {
  if [ -f "$SITE/.done" ]; then return 0; fi
  INDEX=0
  if [ "$DRY" = 0 ] && index_reachable; then INDEX=1; fi
  local core=1
  for mod in torch transformers safetensors cv2 yaml pytest; do have "$mod" || core=0; done
  if [ "$core" = 0 ]; then
    pip_get core -r requirements/core.txt pytest || { say "core packages missing"; exit 1; }
  fi
  if ! "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    say "torch $("$PY" -c 'import torch; print(torch.__version__)' 2>&1) sees no CUDA GPU"
    [ "$DRY" = 1 ] || exit 1
  fi
  have tensorrt || pip_get tensorrt 'tensorrt>=10,<12' || true
  # the CUDA build: the CPU-only onnxruntime would make model.backend onnxruntime fall back
  have onnxruntime || pip_get onnxruntime-gpu onnxruntime-gpu || true
  have rclpy || pip_get 'ROS 2 Jazzy' -r requirements/ros-jazzy.txt || true
  [ "$DRY" = 1 ] || touch "$SITE/.done"
}

backends() {  # every model.backend whose runtime imports here, comma-separated
  "$PY" - <<'EOF'
from dpt_ros.core.backends import runnable
print(','.join(runnable(cuda=True)))
EOF
}

step_env() {
  {
    say "env: $(date -u +%FT%TZ)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
      --format=csv,noheader
    "$PY" - <<'EOF'
import importlib, platform, sys
print('python', sys.version.split()[0], platform.machine())
for name in ('torch', 'transformers', 'tensorrt', 'onnxruntime', 'onnx', 'rclpy', 'numpy'):
    try:
        mod = importlib.import_module(name)
        print(name, getattr(mod, '__version__', 'present'))
    except Exception as exc:  # noqa: B902
        print(name, 'missing', type(exc).__name__)
import torch
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f'cuda:{i}', p.name, f'{p.total_memory / 2**30:.0f} GiB', f'sm_{p.major}{p.minor}',
              'bf16' if torch.cuda.is_bf16_supported() else 'no bf16',
              'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())
EOF
    say "backends that can run here: $(backends)"
  } 2>&1 | tee "$OUT/env.txt"
}

step_tests() {
  # The files holding the gpu-marked tests (other files need packages such a machine lacks),
  # whole: their CPU-side logic tests run too.
  local files
  files=$(grep -rl --include='test_*.py' 'mark.gpu' test | sort | tr '\n' ' ')
  # shellcheck disable=SC2086
  run "$PY" -m pytest $files -ra -p no:cacheprovider --junitxml="$OUT/tests.xml" 2>&1 \
    | tee "$OUT/tests.txt"
}

step_bench() {  # step_bench PRESET: fp16 (the CUDA default), every backend that runs here
  local preset=$1
  run "$PY" -m dpt_ros.tools.bench --models "$preset" --backend "$(backends)" --iters "$ITERS" \
    --cuda-flags --work-dir "$WORK/bench" --out "$OUT/bench_${preset%%-*}" 2>&1 \
    | tee "$OUT/bench_${preset%%-*}.txt"
}

step_flags() {  # fp32 on torch: what cuDNN autotuning and TF32 change
  run "$PY" -m dpt_ros.tools.bench --models hybrid-depth large-depth --precision fp32 --backend torch \
    --cuda-flags --no-dds --iters 10 --work-dir "$WORK/bench" --out "$OUT/bench_fp32" 2>&1 \
    | tee "$OUT/bench_fp32.txt"
}

ensure
status=0
for s in "${STEPS[@]}"; do
  say "step $s"
  case "$s" in
    env) step_env || status=1 ;;
    tests) step_tests || status=1 ;;
    bench-hybrid) step_bench hybrid-depth || status=1 ;;
    bench-large) step_bench large-depth || status=1 ;;
    bench-flags) step_flags || status=1 ;;
  esac
done
say "done (status $status); results in $OUT"
exit $status
