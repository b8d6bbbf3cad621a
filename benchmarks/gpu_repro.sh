#!/usr/bin/env bash
# Same config, same bits on a GPU? Builds model A and SAE A/1 twice from the same tokens in two
# stores (both trained on the GPU) and prints both stores' digests (benchmarks/gpu_summary.py).
# Run on a device machine after gpu_check.sh's set-up; usage: bash benchmarks/gpu_repro.sh [preset]
set -uo pipefail
PRESET=${1:-default}
OUT=${OUT:-/tmp/gpu-repro}; mkdir -p "$OUT"
source "$(dirname "$0")/gpu_env.sh"
S1=/tmp/repro-1 S2=/tmp/repro-2
MONO_ARTIFACTS=$S1 $PY -m mono_utils build --preset "$PRESET" --only corpus tokenizer tokens 2>&1 | grep -E "^\| [a-z]"
mkdir -p $S2 && cp -r $S1/corpus $S1/tokenizer $S1/tokens $S2/
for S in $S1 $S2; do
  for stage in "model A" "SAE A/1"; do
    MONO_ARTIFACTS=$S $PY -m mono_utils build --preset "$PRESET" --stage "$stage" 2>&1 | grep -E "^\| $stage|Error|Warn" | head -5
  done
  $PY benchmarks/gpu_summary.py --preset "$PRESET" --artifacts $S | tee "$OUT/$(basename $S).txt" | head -24
done
