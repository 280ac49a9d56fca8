#!/usr/bin/env bash
# The paper's NAS-Bench-201 experiment (PA&DA, then SPOS if time remains) on one GPU in under 10
# minutes, offline: build the op library in place with its CUDA kernels, then
# benchmarks/paper_run.py (step times fp32/bf16 x NCHW/NHWC, the sync-debug check, the C=16 N=5
# batch-256 supernet on the whole CIFAR-10 folder with the data on the device, the ranking).
#
#   bash benchmarks/gpu_paper_run.sh CIFAR10_JPEG_ROOT NATS_CSV OUT_DIR
#   bash benchmarks/gpu_paper_run.sh --dry-run OUT_DIR [CIFAR10_JPEG_ROOT NATS_CSV]
#
# CIFAR10_JPEG_ROOT holds train/<class>/*.jpg and test/<class>/*.jpg; OUT_DIR receives build.log,
# summary.json, summary.md and the runs. --dry-run builds nothing and runs every step at toy size
# on the CPU with the installed package (with no data given, on a generated toy folder).
# After the build it measures the ProxylessNAS supernet step (bf16, NHWC, synthetic 224x224) and the
# JPEG decoders (CPU workers; torchvision's nvjpeg decode on the GPU), about a minute.
# Environment: PYTHON (default python3), PAPER_RUN_BUDGET_S (seconds for paper_run.py; default
# what is left of 570 s after the build and those measurements), MAX_JOBS (compile jobs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null 2>&1 || PY=python
export PYTHONUNBUFFERED=1

if [ "${1:-}" = "--dry-run" ]; then
    OUT=${2:?usage: gpu_paper_run.sh --dry-run OUT_DIR [DATA_ROOT NATS_CSV]}
    mkdir -p "$OUT"
    DATA=()
    if [ -n "${3:-}" ]; then DATA=(--data-root "$3" --ground-truth "${4:?NATS_CSV missing}"); fi
    echo "[dry-run] no build; paper_run.py at toy size on the CPU"
    exec "$PY" benchmarks/paper_run.py --dry-run --out "$OUT" "${DATA[@]}"
fi

DATA_ROOT=${1:?usage: gpu_paper_run.sh CIFAR10_JPEG_ROOT NATS_CSV OUT_DIR}
GT=${2:?usage: gpu_paper_run.sh CIFAR10_JPEG_ROOT NATS_CSV OUT_DIR}
OUT=${3:?usage: gpu_paper_run.sh CIFAR10_JPEG_ROOT NATS_CSV OUT_DIR}
for need in "$DATA_ROOT/train" "$DATA_ROOT/test"; do
    [ -d "$need" ] || { echo "gpu_paper_run: $need is not a folder (expected ROOT/{train,test}/<class>/*.jpg)" >&2; exit 2; }
done
[ -f "$GT" ] || { echo "gpu_paper_run: ground truth $GT does not exist" >&2; exit 2; }
mkdir -p "$OUT"
started=$SECONDS

if [ -z "${CUDA_HOME:-}" ]; then
    if command -v nvcc >/dev/null 2>&1; then
        CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
    elif [ -x /usr/local/cuda/bin/nvcc ]; then
        CUDA_HOME=/usr/local/cuda
    fi
fi
export CUDA_HOME=${CUDA_HOME:-} FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-$(nproc 2>/dev/null || echo 8)}
export PATH="${CUDA_HOME:+$CUDA_HOME/bin:}$PATH"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
    echo "\$ $PY setup.py build_ext --inplace"
} | tee "$OUT/build.log"
"$PY" setup.py build_ext --inplace >>"$OUT/build.log" 2>&1 || { tail -n 30 "$OUT/build.log"; exit 1; }
"$PY" -m pada_fast.cli info | tee -a "$OUT/build.log"
echo "build: $((SECONDS - started)) s" | tee -a "$OUT/build.log"

# ImageNet ProxylessNAS: the supernet step (synthetic 224x224 batches on the GPU, bf16 NHWC) and
# what the JPEG decoders deliver, so a reader can tell which one bounds an 8-GPU run (~1 min)
timeout -k 5 60 "$PY" benchmarks/bench_supernet_static.py --space proxyless --image 224 --batch 256 \
    --device cuda --precision bf16 --channels-last --rounds 5 --steps 5 --warmup 3 --threads 8 \
    >"$OUT/proxyless_step.md" 2>&1 || echo "proxyless step benchmark failed or timed out (see $OUT/proxyless_step.md)"
timeout -k 5 60 "$PY" benchmarks/bench_jpeg_decode.py --synthetic 1500 --workers "$(nproc 2>/dev/null || echo 8)" \
    --batch 128 --rounds 2 >"$OUT/jpeg_decode.md" 2>&1 || echo "JPEG decode benchmark failed or timed out (see $OUT/jpeg_decode.md)"
cat "$OUT/proxyless_step.md" "$OUT/jpeg_decode.md" | grep -v "^training\|^INFO" || true

# the paper run gets what is left of 10 minutes (or PAPER_RUN_BUDGET_S)
BUDGET=${PAPER_RUN_BUDGET_S:-$((570 - (SECONDS - started)))}
"$PY" benchmarks/paper_run.py --data-root "$DATA_ROOT" --ground-truth "$GT" --out "$OUT" \
    --budget-s "$BUDGET" --workers "$(nproc 2>/dev/null || echo 8)"
echo "whole script: $((SECONDS - started)) s"
