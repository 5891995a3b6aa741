#!/usr/bin/env bash
# Issue 16's GPU measurements in ONE device call (a fresh H200 each call: nothing from an
# earlier call is there, nor Ray, nor FFCV):
#
#   run(command="bash benchmarks/gpu_session.sh", timeout_s=600)
#   CPU check of every step at tiny sizes (tests/test_gpu_session.py runs it in CI):
#   bash benchmarks/gpu_session.sh --dry-run
#
# Each step of benchmarks/gpu_session.py runs in its own process under its own `timeout`,
# ordered from safe to risky, so a CUDA fault (which poisons its process) costs only its step.
# The whole session stops starting steps at BUDGET_S (default 540 s = 9 min); a step gets
# min(its cap, what is left). Rows are appended under $OUT as they are measured, in 8 files:
#   log.txt (everything printed, with step headers and exit codes), env.json, conv.jsonl,
#   norm.jsonl, profile.txt, throughput.jsonl, memory.jsonl, tests.txt
# Data: $SYMZOO_DATA if it holds CIFAR-10, else materialized from ../shared when that exists
# (it does not travel to the GPU machine), else random images (speed does not depend on pixels;
# tests/test_gpu.py then uses learnable synthetic images).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=""
[[ "${1:-}" == --dry-run ]] && DRY=--dry-run
[[ $# -gt 1 || ( $# -eq 1 && -z "$DRY" ) ]] && { echo "usage: $0 [--dry-run]"; exit 2; }
OUT="${OUT:-/tmp/symzoo-gpu-out}"
BUDGET_S="${BUDGET_S:-540}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
LOG="$OUT/log.txt"

say() { echo "$*" | tee -a "$LOG"; }

# step NAME CAP COMMAND...: run COMMAND under min(CAP, time left) seconds, output to log.txt
step() {
  local name=$1 cap=$2 left=$((BUDGET_S - SECONDS - 5))
  shift 2
  (( cap > left )) && cap=$left
  if (( cap < 15 )); then
    say "=== $name: skipped, ${left}s left of ${BUDGET_S}s"
    return
  fi
  say "=== $name (cap ${cap}s, ${SECONDS}s elapsed)"
  timeout -k 5 "$cap" "$@" 2>&1 | tee -a "$LOG"
  say "=== $name rc=${PIPESTATUS[0]} (${SECONDS}s elapsed)"
}

session() { step "$1" "$2" "$PY" benchmarks/gpu_session.py "$1" --out "$OUT" $DRY; }

has_cifar() { [[ -n "${1:-}" && -f "$1/cifar-10-batches-py/test_batch" ]]; }
if ! has_cifar "${SYMZOO_DATA:-}"; then
  unset SYMZOO_DATA
  if [[ -z "$DRY" && -f ../shared/data/cifar10/materialize.py ]]; then
    step materialize 90 "$PY" ../shared/data/cifar10/materialize.py /tmp/symzoo-cifar10
    has_cifar /tmp/symzoo-cifar10 && export SYMZOO_DATA=/tmp/symzoo-cifar10
  fi
fi
say "data: ${SYMZOO_DATA:-random images}; budget ${BUDGET_S}s; ${DRY:-GPU run}"

session env 30
session conv 60
session norm 45
session profile_eager 45
session throughput_eager 60
session memory 45
session profile_compiled 70
session throughput_compiled 80
step tests 100 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py -o addopts="" 2>&1 | tee "$OUT/tests.txt" >/dev/null
session risky_n128 90
session risky_graph 90
say "=== done (${SECONDS}s)"
