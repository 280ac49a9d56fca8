#!/usr/bin/env bash
# Regenerates the tables and plots of docs/results.md, one named section per group of tables (hours
# on a 2-core CPU; the GPU section runs only where `nvidia-smi` finds a GPU). Outputs go under runs/
# and are printed; copy the tables into docs/results.md by hand. Every run resumes where it stopped
# (training, ranking, searching and table building all do), so a section cut short continues.
#
#   bash benchmarks/regenerate_results.sh [SECTION ...]     (default: every section)
#   SHARED=/path/to/shared bash benchmarks/regenerate_results.sh fmnist28
#
# Sections: core (ops, CIFAR-10 ranking study, engine, latency, search, loaders, quickstart,
# gradient variance, digits and CIFAR-10 ablations, overhead), fidelity (the issue-12 ablations on
# CIFAR-10 and Fashion-MNIST, FairNAS, the one-file reference, the Fashion-MNIST table), throughput
# (device data, supernet vs static), fmnist28 (the third benchmark: table, ablation with the probe,
# curves, search quality, protocols), reliability (the fault tests), gpu.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SHARED=${SHARED:-../shared}
CIFAR=$SHARED/datasets/cifar10-jpeg
NATS=$SHARED/nb201/nats_bench.csv
export OMP_NUM_THREADS=1

section_core() {
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

}

section_fidelity() {
echo "## the Fashion-MNIST table (28x28, 100 architectures, 20 with a second seed)"
pada-fast build-benchmark --config configs/nb201_fashion_mnist.yaml --archs 100 --noise-archs 20 --noise-pick first \
  --out runs/tables/nb201_fashion_mnist.json
echo "## issue-12 ablation: CIFAR-10 (5,000 x 15) and Fashion-MNIST (4,000 x 10), 3 seeds"
python benchmarks/ablation.py --config configs/nb201_cifar10_cpu.yaml --out runs/ablation_cifar --seeds 3 \
  --set data.root=$CIFAR --set rank.ground_truth=$NATS --set data.train_subset=5000 --set optim.epochs=15 \
  --set run.threads=1 --rank-eval-subset 500 \
  --variants "spos,pa,da,pada,pada official,pada pa_aggregation=official,pada da_aggregation=official,pada lagged schedule,pada lr per epoch,pada update unsampled,pada affine reductions,pada per_edge,pada decreasing,pada random subsets,pada augment=flip"
python benchmarks/ablation.py --config configs/nb201_fashion_mnist.yaml --out runs/ablation_fm --seeds 3 \
  --set optim.epochs=10 --variants "spos,pa,da,pada,pada official,pada pa_aggregation=official,pada da_aggregation=official,pada lagged schedule,pada lr per epoch,pada update unsampled,pada affine reductions,pada random subsets,pada augment=none,pada augment=crop,spos augment=none,spos augment=crop"
echo "## FairNAS at SPOS's cost (one fifth of the epochs)"
python benchmarks/ablation.py --config configs/nb201_cifar10_cpu.yaml --out runs/ablation_cifar_fairnas --seeds 3 \
  --set data.root=$CIFAR --set rank.ground_truth=$NATS --set data.train_subset=5000 --set optim.epochs=3 \
  --set run.threads=1 --rank-eval-subset 500 --variants fairnas
python benchmarks/ablation.py --config configs/nb201_fashion_mnist.yaml --out runs/ablation_fm_fairnas --seeds 3 \
  --set optim.epochs=2 --variants fairnas
echo "## the one-file reference on Fashion-MNIST"
for method in spos pada; do for seed in 0 1 2; do
  python benchmarks/minimal_pada.py --method $method --dataset fashion_mnist --root /usr/share/datasets/fashion-mnist \
    --table pada_fast/data/ground_truth/nb201_fashion_mnist.json --train-subset 4000 --eval-subset 2000 --epochs 10 \
    --C 8 --N 1 --batch-size 64 --lr 0.05 --weight-decay 2.5e-4 --grad-clip 5 --augment flip --seed $seed --threads 1 \
    --out runs/minimal_fm/${method}_s${seed}.json
done; done
}

section_throughput() {
echo "## device-resident data, supernet step vs a static network"
python benchmarks/bench_device_data.py --config configs/nb201_cifar10_cpu.yaml --set data.root=$CIFAR \
  --set data.train_subset=2000 --rounds 2
python benchmarks/bench_supernet_static.py --method pada --rounds 11 --steps 5
python benchmarks/bench_supernet_static.py --C 4 --N 1 --image 8 --channels 1 --method pada --rounds 21 --steps 40
}

section_fmnist28() {
bash benchmarks/fmnist28_study.sh
}

section_reliability() {
echo "## the reliability table: every fault case through the CLI"
python -m pytest -q tests/test_user_faults.py tests/test_trainer_faults.py
}

section_gpu() {
if command -v nvidia-smi >/dev/null && nvidia-smi >/dev/null 2>&1; then
  echo "## GPU"
  DATA_ROOT=$CIFAR GPU_CHECK_SUBSET=2560 bash benchmarks/gpu_check.sh
fi
}

sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(core fidelity throughput fmnist28 reliability gpu)
for name in "${sections[@]}"; do
  declare -F "section_$name" >/dev/null || { echo "unknown section $name" >&2; exit 2; }
  "section_$name"
done
