#!/usr/bin/env bash
# One device run on a machine with a CUDA GPU (see benchmarks/RESULTS.md, "On a GPU").
#   1. builds the preset's corpus, tokenizer, tokens, model A and SAE A/1 from nothing, one
#      timed stage at a time: the model and the SAE train (and the SAE's activations are
#      harvested) on the GPU, everything after training runs on the CPU as always;
#   2. prints what came out (benchmarks/gpu_summary.py), to set beside the CPU build's figures;
#   3. times SAE training steps on the GPU (benchmarks/bench_sae.py);
#   4. runs the core unit tests with CUDA present (train_sae then picks the GPU).
# Where transformer_lens is missing, wheels in .whl are installed first: download them here with
# benchmarks/gpu_wheels.sh and carry .whl. Usage: bash benchmarks/gpu_check.sh [preset]
# (SKIP_BENCH=1 leaves out step 3).
set -uo pipefail
PRESET=${1:-default}
OUT=${OUT:-/tmp/gpu-check}; mkdir -p "$OUT"
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"
export MONO_ARTIFACTS=${MONO_ARTIFACTS:-/tmp/gpu-store}
$PY -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(), '| cores', torch.get_num_threads())" | tee -a "$OUT/gpu.txt"
for stage in corpus tokenizer tokens "model A" "SAE A/1"; do
  timeout 300 $PY -m mono_utils build --preset "$PRESET" --stage "$stage" 2>&1 | grep -E "^\| $stage|^==|Error|error" | tee -a "$OUT/build.txt"
done
$PY benchmarks/gpu_summary.py --preset "$PRESET" 2>&1 | tee "$OUT/summary.txt"
[ -n "${SKIP_BENCH:-}" ] || timeout 90 $PY benchmarks/bench_sae.py --sizes 4096,16384 --bf16 2>&1 | tee "$OUT/bench_sae.txt"
timeout 200 $PY -m pytest -q -p no:cacheprovider --timeout 120 tests/test_sae.py tests/test_train.py \
  tests/test_activations.py tests/test_model.py tests/test_metrics.py tests/test_index.py >"$OUT/pytest.txt" 2>&1
tail -8 "$OUT/pytest.txt"
