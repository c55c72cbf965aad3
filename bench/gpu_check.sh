#!/usr/bin/env bash
# The prepared GPU check (< 8 min on one H100/H200): inference end to end on 1,376 frames at
# 854x480 and on 36 frames (default vs plain path), model-only rates (plain / BN-folded / CUDA
# graph at batch 32 bf16, and the official fp32 batch-1 baseline), the training step (fp32 vs
# bf16 + channels_last, profiled) and a torchrun + NCCL run of train.py, in ONE JSON report.
#
#   bench/gpu_check.sh [--out REPORT.json]   # default: $OUT/gpu_check.json, else ./gpu_check.json
#   bench/gpu_check.sh --dry_run             # same steps on the CPU, tiny sizes, report shape checked
#
# The GPU image lacks tensorboardX (train.py logs through it); without it the check stops at once
# with one error line. Carry its wheel (pure Python) from a machine with pip, in the repository root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl tensorboardX==2.6.5
# and on the GPU machine (the device tool: carry [".whl"], one call, timeout_s 540):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; bench/gpu_check.sh
# This script and every step extend PYTHONPATH (the repository first), so the carried package stays
# importable in the steps' subprocesses.
#
# Exit status 0 when every step ran and wrote its result; see bench/gpu_check.py and
# docs/benchmarks.md#gpu.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# python3 first: the GPU image has no plain "python" (PYTHON=... picks another interpreter)
exec "${PYTHON:-$(command -v python3 || command -v python)}" -m bench.gpu_check "$@"
