#!/usr/bin/env bash
# One-shot GPU check of pada_fast on a machine with an NVIDIA GPU and no network (< 8 min on one
# H200): build the op library in place with its CUDA kernels, run the op tests (their CUDA cases
# run when a GPU is visible), benchmark the fused ops on the GPU, and time PA&DA (and PA, DA,
# PA&DA with schedules off) against SPOS on a short NAS-Bench-201 run on the GPU; then the latency
# table's accuracy on the GPU and the latency/export tests.
#
#   bash benchmarks/gpu_check.sh
#
# Everything goes to ${OUT:-gpu_check_out}/results.txt (with the GPU's name and the date).
# Environment:
#   OUT                  output folder (default gpu_check_out)
#   DATA_ROOT            a CIFAR-10 image-folder tree (DATA_ROOT/train/<class>/*.jpg) for the
#                        overhead run; without it the run uses scikit-learn's bundled digits
#   GPU_CHECK_SUBSET     training images taken from DATA_ROOT (default 5120)
#   GT_FILE              the NATS-Bench CSV: with DATA_ROOT (holding test/ too) the ranking engine
#                        is timed on a C=16 N=5 supernet (1 epoch) and ranks all 15,625
#                        architectures on the whole test split
#   PYTHON               interpreter (default python3, else python)
#   GPU_CHECK_BUDGET_S   overall time budget in seconds (default 450); steps are cut to fit
#   GPU_CHECK_DRY_RUN=1  print the steps it would run and exit 0; runs and writes nothing
# Without a GPU the GPU steps are skipped with a message; the script still reports versions and
# runs the op tests' CPU cases, and exits 0. With a GPU it exits 1 if a step failed.
set -u
set -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
# Benchmarks import pada_fast from the checkout when the op library is built in place.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-gpu_check_out}
DRY=${GPU_CHECK_DRY_RUN:-0}
BUDGET=${GPU_CHECK_BUDGET_S:-450}
SUBSET=${GPU_CHECK_SUBSET:-5120}
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif command -v python3 >/dev/null 2>&1; then PY=python3
else PY=python; fi
export PYTHONUNBUFFERED=1

if [ "$DRY" = "1" ]; then
    RESULTS=/dev/null
else
    mkdir -p "$OUT" || exit 1
    RESULTS=$OUT/results.txt
    : >"$RESULTS"
fi
FAILED=()
SUMMARY=()

log() { echo "$*" | tee -a "$RESULTS"; }

# step NAME LIMIT_S NEEDS_GPU(0|1) COMMAND...
step() {
    local name=$1 limit=$2 needs_gpu=$3
    shift 3
    if [ "$DRY" = "1" ]; then
        echo "[dry-run] would run ($name, limit ${limit}s$([ "$needs_gpu" = 1 ] && echo ', needs a GPU')): $*"
        return 0
    fi
    log ""
    log "### $name"
    if [ "$needs_gpu" = 1 ] && [ "$HAVE_GPU" != 1 ]; then
        log "skipped: no NVIDIA GPU visible"
        SUMMARY+=("$name: skipped (no GPU)")
        return 0
    fi
    local left=$((BUDGET - SECONDS - 5))
    if [ "$left" -lt 15 ]; then
        log "skipped: the ${BUDGET}s time budget is spent"
        SUMMARY+=("$name: skipped (time budget)")
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    log "\$ $* (limit ${limit}s)"
    local started=$SECONDS rc
    if command -v timeout >/dev/null 2>&1; then
        timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$RESULTS"
    else
        "$@" 2>&1 | tee -a "$RESULTS"
    fi
    rc=${PIPESTATUS[0]}
    local took=$((SECONDS - started))
    if [ "$rc" = 0 ]; then
        SUMMARY+=("$name: ok (${took}s)")
    else
        [ "$rc" = 124 ] && log "timed out after ${limit}s"
        SUMMARY+=("$name: FAILED, exit $rc (${took}s)")
        FAILED+=("$name")
    fi
    log "-> exit $rc after ${took}s"
}

# -- the machine ----------------------------------------------------------------------------------
HAVE_GPU=0
if [ "$DRY" != "1" ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    HAVE_GPU=1
fi
if [ "$DRY" = "1" ]; then
    echo "[dry-run] pada_fast GPU check: nothing is built or run; results would go to $OUT/results.txt"
    echo "[dry-run] python: $PY; time budget ${BUDGET}s; DATA_ROOT=${DATA_ROOT:-<unset: digits>}"
else
    log "# pada_fast GPU check"
    log "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    log "host: $(uname -srm)"
    log "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ local changes)')"
    if [ "$HAVE_GPU" = 1 ]; then
        nvidia-smi --query-gpu=name --format=csv 2>&1 | tee -a "$RESULTS"
        nvidia-smi --query-gpu=driver_version,memory.total,compute_cap --format=csv 2>&1 | tee -a "$RESULTS"
    else
        log "no NVIDIA GPU visible (nvidia-smi missing or failing): the GPU steps are skipped"
    fi
    log "python: $("$PY" -c 'import sys; print(sys.version.split()[0])' 2>&1)"
    log "torch: $("$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda, "GPU visible:", torch.cuda.is_available())' 2>&1)"
    if [ "$HAVE_GPU" = 1 ]; then
        if [ -z "${CUDA_HOME:-}" ]; then
            if command -v nvcc >/dev/null 2>&1; then
                CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
            elif [ -x /usr/local/cuda/bin/nvcc ]; then
                CUDA_HOME=/usr/local/cuda
            else
                CUDA_HOME=$("$PY" -c 'from torch.utils.cpp_extension import CUDA_HOME; print(CUDA_HOME or "")' 2>/dev/null)
            fi
        fi
        if [ -n "$CUDA_HOME" ]; then
            export CUDA_HOME
            export PATH="$CUDA_HOME/bin:$PATH"
            log "CUDA_HOME: $CUDA_HOME ($("$CUDA_HOME/bin/nvcc" --version 2>/dev/null | tail -n 1))"
        else
            log "CUDA_HOME: not found (no nvcc): the build makes CPU kernels only, CUDA tests will fail"
        fi
        export MAX_JOBS=${MAX_JOBS:-$(nproc 2>/dev/null || echo 4)}
    fi
fi

# -- overhead run's data ---------------------------------------------------------------------------
if [ -n "${DATA_ROOT:-}" ] && [ -d "${DATA_ROOT}/train" ]; then
    OVERHEAD=(--config configs/nb201_cifar10_cpu.yaml --set "data.root=$DATA_ROOT"
              --set "data.train_subset=$SUBSET" --set data.num_workers=8 --set run.threads=8
              --set rank.ground_truth= --rounds 5)
    DATA_NOTE="CIFAR-10 folder $DATA_ROOT, $SUBSET training images, C=8 N=1"
else
    OVERHEAD=(--config configs/quickstart_digits.yaml --set space.C=16 --set space.N=5
              --set rank.ground_truth= --rounds 8)
    DATA_NOTE="DATA_ROOT unset or without train/: scikit-learn digits (8x8), C=16 N=5"
fi
log ""
log "overhead run data: $DATA_NOTE"

# -- steps ----------------------------------------------------------------------------------------
step "build the op library in place (CUDA kernels)" 200 1 \
    "$PY" setup.py build_ext --inplace
step "op library status" 60 0 \
    "$PY" -m pada_fast.cli info
step "op tests (tests/test_ops_*.py; CUDA cases need a GPU)" 90 0 \
    "$PY" -m pytest -q -p no:cacheprovider tests/test_ops_*.py
step "fused ops vs PyTorch on the GPU (bench_ops.py)" 50 1 \
    "$PY" benchmarks/bench_ops.py --device cuda --rounds 20
step "PA&DA vs SPOS overhead on the GPU (bench_overhead.py)" 110 1 \
    "$PY" benchmarks/bench_overhead.py "${OVERHEAD[@]}" --set run.device=cuda --micro-rounds 20
step "sampler scaling with N on the GPU (bench_overhead.py --scaling)" 40 1 \
    "$PY" benchmarks/bench_overhead.py --scaling --device cuda --scaling-rounds 5
step "latency table vs measured latency on the GPU (bench_latency_table.py, batch 64)" 90 1 \
    "$PY" benchmarks/bench_latency_table.py --device cuda --batch 64 --archs 50 --out "$OUT/latency_cuda.json"
step "latency and export tests (tests/test_latency.py, tests/test_export.py; onnxruntime where installed)" 120 0 \
    "$PY" -m pytest -q -p no:cacheprovider tests/test_latency.py tests/test_export.py

if [ -n "${DATA_ROOT:-}" ] && [ -d "${DATA_ROOT}/test" ] && [ -n "${GT_FILE:-}" ]; then
    RANK_RUN=$OUT/rank_supernet
    step "a C=16 N=5 supernet for the ranking engine (1 epoch)" 150 1 \
        "$PY" -m pada_fast.cli train --config configs/nb201_cifar10.yaml --set "data.root=$DATA_ROOT" \
        --set optim.epochs=1 --set "data.train_subset=$SUBSET" --set "run.out_dir=$RANK_RUN" \
        --set run.device=cuda --set data.num_workers=8 --set rank.ground_truth=
    step "ranking engine vs the per-architecture loop on the GPU (bench_rank.py)" 120 1 \
        "$PY" benchmarks/bench_rank.py "$RANK_RUN/checkpoint.pt" --ground-truth "$GT_FILE" \
        --device cuda --archs 50 --rounds 3 --eval-subset 0
    step "bf16 ranking's tolerance on the GPU (bench_rank.py --precision bf16)" 90 1 \
        "$PY" benchmarks/bench_rank.py "$RANK_RUN/checkpoint.pt" --ground-truth "$GT_FILE" \
        --device cuda --archs 50 --rounds 2 --eval-subset 0 --precision bf16
    step "rank all 15,625 on the 10,000 test images (pada-fast rank --archs all)" 360 1 \
        "$PY" -m pada_fast.cli rank "$RANK_RUN/checkpoint.pt" --out "$OUT/rank_all" \
        --ground-truth "$GT_FILE" --archs all --eval-subset 0 --device cuda
fi

if [ "$DRY" = "1" ]; then
    echo "[dry-run] done; exit 0"
    exit 0
fi
log ""
log "## summary (${SECONDS}s)"
for line in "${SUMMARY[@]}"; do log "- $line"; done
log "results: $RESULTS"
if [ "$HAVE_GPU" = 1 ] && [ "${#FAILED[@]}" -gt 0 ]; then
    exit 1
fi
exit 0
