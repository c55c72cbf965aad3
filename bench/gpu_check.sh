#!/usr/bin/env bash
# The prepared GPU check of issue 13 (< 8 min on one H100/H200): inference (bf16, batch 32,
# model-only and end-to-end, CUDA-graph replay), training steps (fp32 / bf16 / channels_last,
# profiled) and a torchrun + NCCL run of train.py, in ONE JSON report.
#
#   bench/gpu_check.sh [--out REPORT.json]   # default: $OUT/gpu_check.json, else ./gpu_check.json
#   bench/gpu_check.sh --dry_run             # same steps on the CPU, tiny sizes, report shape checked
#
# Exit status 0 when every step ran and wrote its result; see bench/gpu_check.py and docs/demo.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" -m bench.gpu_check "$@"
