#!/usr/bin/env bash
# Regenerates every table and plot of docs/results.md (hours on a 2-core CPU; the GPU section runs
# only where `nvidia-smi` finds a GPU). Outputs go under runs/ and are printed; copy the tables into
# docs/results.md by hand. Usage: bash benchmarks/regenerate_results.sh [SHARED_DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SHARED=${1:-../shared}
CIFAR=$SHARED/datasets/cifar10-jpeg
NATS=$SHARED/nb201/nats_bench.csv
export OMP_NUM_THREADS=1

echo "## fused ops vs PyTorch (CPU)"
python benchmarks/bench_ops.py --rounds 40 --threads 1

echo "## ranking study: SPOS vs PA&DA on CIFAR-10, seeds 0, 1 and 2"
for seed in 0 1 2; do
  for method in spos pada; do
    out=runs/cifar/${method}_s${seed}
    pada-fast train --config configs/nb201_cifar10_cpu.yaml --set data.root=$CIFAR --set rank.ground_truth=$NATS \
      --set method.name=$method --set run.seed=$seed --set run.out_dir=$out --set run.threads=1
    pada-fast rank $out/checkpoint.pt --out $out/rank --threads 1     # the config's protocol
  done
done

echo "## ranking engine vs the per-architecture loop (same batches), and bf16's tolerance"
python benchmarks/bench_rank.py runs/cifar/spos_s0/checkpoint.pt --archs 20 --rounds 3 --threads 1
python benchmarks/bench_rank.py runs/cifar/spos_s0/checkpoint.pt --archs 20 --rounds 2 --threads 1 --precision bf16

echo "## latency tables vs measured latency (ProxylessNAS at 224 and the CPU variant at 32)"
python benchmarks/bench_latency_table.py --threads 1 --out runs/latency_eval.json
python benchmarks/bench_latency_table.py --width 0.25 --stem-stride 1 --last-channels 256 --resolution 32 \
  --classes 10 --threads 1 --out runs/latency_eval_cifar.json

echo "## search: evolution vs random on NAS-Bench-201, ProxylessNAS under a MACs budget"
pada-fast search runs/cifar/pada_s0/checkpoint.pt --out runs/search/nb201_evo --algorithm evolution \
  --population 20 --generations 10 --mutation-children 10 --crossover-children 10 --parents 5 \
  --eval-subset 500 --ground-truth $NATS --seed 0 --threads 1
pada-fast search runs/cifar/pada_s0/checkpoint.pt --out runs/search/nb201_random --algorithm random \
  --rounds 10 --per-round 20 --eval-subset 500 --ground-truth $NATS --seed 0 --threads 1
pada-fast train --config configs/proxyless_cifar10_cpu.yaml --set data.root=$CIFAR --set optim.epochs=3 \
  --set data.train_subset=2000 --set run.out_dir=runs/proxyless_cpu --set run.threads=1
pada-fast search runs/proxyless_cpu/checkpoint.pt --out runs/search/proxyless_evo --algorithm evolution \
  --max-macs 5M --population 16 --generations 5 --mutation-children 8 --crossover-children 8 \
  --eval-subset 500 --seed 0 --threads 1

echo "## loaders and multi-process training"
python benchmarks/bench_loader.py $CIFAR/train --subset 10000 --workers 2 --rounds 6
python benchmarks/bench_distributed.py --steps 20 --rounds 3 --set data.root=$CIFAR --set rank.ground_truth=

echo "## quickstart, gradient variance, digits ablation"
OMP_NUM_THREADS=2 pada-fast quickstart --out runs/quickstart
for method in spos pada; do
  pada-fast train --config configs/quickstart_digits.yaml --set optim.epochs=40 --set method.name=$method \
    --set run.gv_draws=16 --set run.out_dir=runs/gv/$method --set run.threads=2
done
pada-fast gv runs/gv/spos runs/gv/pada --out docs/gv_digits.png --out runs/gv/gv.csv
python benchmarks/ablation.py --out runs/ablation_digits --set run.threads=1

echo "## CIFAR-10 ablation (two single-thread lanes) and its gradient variance per epoch"
ABL="python benchmarks/ablation.py --config configs/nb201_cifar10_cpu.yaml --out runs/ablation_cifar \
  --set data.root=$CIFAR --set rank.ground_truth=$NATS --set data.train_subset=5000 --set optim.epochs=15 \
  --set run.threads=1 --rank-eval-subset 500 --gv-draws 8"
$ABL --variants spos,pa,da > runs/ablation_cifar_laneA.txt &
lane_a=$!
$ABL --variants "pada,pada per_edge,pada decreasing" > runs/ablation_cifar_laneB.txt
wait $lane_a     # a failed lane stops the script (set -e)
$ABL      # every run is done: prints the whole table
pada-fast gv runs/ablation_cifar/spos/s0 runs/ablation_cifar/spos/s1 runs/ablation_cifar/spos/s2 \
  runs/ablation_cifar/pada/s0 runs/ablation_cifar/pada/s1 runs/ablation_cifar/pada/s2 \
  --out docs/gv_cifar10.png --out runs/ablation_cifar/gv.csv

echo "## overhead vs SPOS (CPU) and scaling"
python benchmarks/bench_overhead.py --config configs/nb201_cifar10_cpu.yaml --set data.root=$CIFAR \
  --set rank.ground_truth= --set data.train_subset=2560 --set run.threads=1 --rounds 3 --micro-rounds 10
python benchmarks/bench_overhead.py --config configs/proxyless_cifar10_cpu.yaml --set data.root=$CIFAR \
  --set data.train_subset=1280 --set run.threads=1 --rounds 5 --micro-rounds 10
python benchmarks/bench_overhead.py --scaling
python benchmarks/bench_memory_format.py --config configs/nb201_cifar10_cpu.yaml --threads 1 --rounds 10
python benchmarks/bench_memory_format.py --config configs/proxyless_cifar10_cpu.yaml --threads 1 --rounds 10
python benchmarks/bench_overhead.py --config configs/nb201_cifar10_cpu.yaml --set data.root=$CIFAR --set rank.ground_truth= \
  --set data.train_subset=2560 --set run.threads=1 --set run.channels_last=true --rounds 3 --micro-rounds 5 \
  --variants spos,pada,pada-off --no-breakdown

if command -v nvidia-smi >/dev/null && nvidia-smi >/dev/null 2>&1; then
  echo "## GPU"
  DATA_ROOT=$CIFAR GPU_CHECK_SUBSET=2560 bash benchmarks/gpu_check.sh
fi
