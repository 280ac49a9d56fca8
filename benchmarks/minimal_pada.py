"""A minimal reference implementation of SPOS and PA&DA on NAS-Bench-201 (docs/method.md), in plain
PyTorch, to bisect pada_fast against.

It shares no method code with pada_fast: the supernet, the path and data samplers, the training
loop and the ranking are all written out here. Only the dataset builder and the ground-truth
reader come from the package, so both read the same images and the same tables.

What it does: train a NAS-Bench-201 supernet (one sampled path and one mini-batch per step, SGD
momentum 0.9, cosine LR, gradient clipping 5), then evaluate every architecture of a ground-truth
table with inherited weights on a fixed, seeded held-out set and report Kendall's tau and
Precision@Top5%.

- PA: after backward and clipping, the L2 norm of all gradients of each sampled operation type
  (pooled over every edge and cell holding it in the step); per type, the mean over the steps
  where it was sampled. Epoch end: ``p = delta * g / sum(g) + (1 - delta) / K``, one p shared by
  all edges.
- DA: per sample ``||softmax(z) - onehot(y)||_2`` from the training logits, mean of repeats,
  unseen samples 0. Epoch end: ``q = tau * s / sum(s) + (1 - tau) / N``; the next epoch is N
  draws with replacement from q. The first epoch is a permutation.
- ``--schedule next``: the epoch after epoch e (0-based) uses delta = tau = (e+1)/E;
  ``--schedule current`` uses e/E (the authors' code).
- Methods: ``spos``, ``pada``, and ``pa`` / ``da`` for one half alone. Unsampled candidates get no
  gradient (``zero_grad(set_to_none=True)``), so weight decay and momentum skip them.

``--out`` gets JSON: ``kendall_tau``, ``precision_top5``, ``archs`` with their ``true`` and
``predicted`` accuracies, ``final_p`` (the p the last epoch sampled from), per-epoch ``epochs``
(loss, train accuracy, p and max(q)*N of that epoch) and the arguments.

    python benchmarks/minimal_pada.py --method pada --dataset cifar10_folder \\
        --root ../shared/datasets/cifar10-jpeg --table ../shared/nb201/nats_bench.csv \\
        --num-archs 500 --train-subset 10000 --eval-subset 2000 --epochs 40 --C 8 --N 1 \\
        --batch-size 128 --lr 0.05 --augment crop_flip --seed 0 --threads 1 --out pada_s0.json
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.stats import kendalltau

from pada_fast.data.datasets import build_dataset
from pada_fast.evaluate.ground_truth import load_ground_truth
from pada_fast.files import write_text_atomic

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))    # (to, from), NAS-Bench-201 order
METHODS = ("spos", "pada", "pa", "da")


# -- architectures ------------------------------------------------------------------------------
def parse_arch(text: str) -> tuple[int, ...]:
    """``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` -> six op indices in edge order."""
    genes = []
    for node, part in enumerate(text.strip().split("+"), start=1):
        for source, token in enumerate(t for t in part.split("|") if t):
            op, _, origin = token.partition("~")
            if op not in OPS or origin != str(source) or source >= node:
                raise ValueError(f"bad NAS-Bench-201 architecture {text!r} at {token!r}; expected "
                                 "'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' with ops from " + ", ".join(OPS))
            genes.append(OPS.index(op))
    if len(genes) != len(EDGES):
        raise ValueError(f"architecture {text!r} has {len(genes)} edges, NAS-Bench-201 needs 6")
    return tuple(genes)


def arch_str(arch) -> str:
    nodes = [[f"{OPS[arch[i]]}~{EDGES[i][1]}" for i in range(len(EDGES)) if EDGES[i][0] == to]
             for to in (1, 2, 3)]
    return "+".join("|" + "|".join(node) + "|" for node in nodes)


# -- supernet -----------------------------------------------------------------------------------
def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, affine=False, track_running_stats=False)


def relu_conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                         batch_norm(c_out))


class Zero(nn.Module):
    def forward(self, x):
        return x.mul(0.0)


def candidate_ops(channels: int) -> nn.ModuleList:
    return nn.ModuleList([Zero(), nn.Identity(), relu_conv_bn(channels, channels, 1),
                          relu_conv_bn(channels, channels, 3),
                          nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)])


class Cell(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.edges = nn.ModuleList([candidate_ops(channels) for _ in EDGES])

    def forward(self, x, arch):
        nodes = [x]
        for to in (1, 2, 3):
            nodes.append(sum(self.edges[i][arch[i]](nodes[src])
                             for i, (dst, src) in enumerate(EDGES) if dst == to))
        return nodes[3]


class ReductionBlock(nn.Module):
    """ResNet basic block, stride 2, doubling the width; the shortcut is avg-pool + 1x1 conv."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = relu_conv_bn(c_in, c_out, 3, stride=2)
        self.conv_b = relu_conv_bn(c_out, c_out, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x, arch=None):
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class Supernet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, C: int = 16, N: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), batch_norm(C))
        layers = []
        for stage, width in enumerate((C, 2 * C, 4 * C)):
            if stage:
                layers.append(ReductionBlock(width // 2, width))
            layers += [Cell(width) for _ in range(N)]
        self.layers = nn.ModuleList(layers)
        self.head = nn.Sequential(batch_norm(4 * C), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(4 * C, num_classes)

    def cells(self):
        return [m for m in self.layers if isinstance(m, Cell)]

    def forward(self, x, arch):
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x, arch)
        return self.classifier(self.head(x))


# -- PA: path importance ------------------------------------------------------------------------
def op_grad_norms(net: Supernet, arch) -> dict[int, float]:
    """Sampled op type -> L2 norm of its gradients over every edge and cell holding it."""
    squares = {op: 0.0 for op in set(arch)}
    for cell in net.cells():
        for edge, op in enumerate(arch):
            for param in cell.edges[edge][op].parameters():
                if param.grad is not None:
                    squares[op] += float(param.grad.pow(2).sum())
    return {op: math.sqrt(total) for op, total in squares.items()}


class PathImportance:
    """Per-op-type mean gradient norm over the epoch, and the shared path distribution p."""

    def __init__(self, num_ops: int = len(OPS)):
        self.p = torch.full((num_ops,), 1.0 / num_ops, dtype=torch.float64)
        self.reset()

    def reset(self):
        self.sums = torch.zeros_like(self.p)
        self.counts = torch.zeros_like(self.p)

    def add(self, norms: dict[int, float]):
        for op, norm in norms.items():
            self.sums[op] += norm
            self.counts[op] += 1

    def update(self, delta: float) -> torch.Tensor:
        mean = torch.where(self.counts > 0, self.sums / self.counts.clamp(min=1), torch.zeros_like(self.sums))
        self.p = path_probabilities(mean, delta)
        self.reset()
        return self.p


def path_probabilities(norms: torch.Tensor, delta: float) -> torch.Tensor:
    uniform = torch.full_like(norms, 1.0 / len(norms))
    total = norms.sum()
    return uniform if total <= 0 else delta * norms / total + (1 - delta) * uniform


def sample_arch(p: torch.Tensor, generator: torch.Generator) -> tuple[int, ...]:
    return tuple(torch.multinomial(p.float(), len(EDGES), replacement=True, generator=generator).tolist())


# -- DA: data importance ------------------------------------------------------------------------
def importance_scores(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``||softmax(z_i) - onehot(y_i)||_2`` per sample."""
    probs = logits.detach().double().softmax(dim=1)
    return (probs - F.one_hot(labels, probs.shape[1]).double()).norm(dim=1)


class DataImportance:
    """Per-dataset-index mean importance over the epoch, and the data distribution q."""

    def __init__(self, n: int):
        self.q = torch.full((n,), 1.0 / n, dtype=torch.float64)
        self.reset()

    def reset(self):
        self.sums = torch.zeros_like(self.q)
        self.counts = torch.zeros_like(self.q)

    def add(self, indices: torch.Tensor, scores: torch.Tensor):
        self.sums.index_add_(0, indices, scores.double())
        self.counts.index_add_(0, indices, torch.ones_like(scores, dtype=torch.float64))

    def update(self, tau: float) -> torch.Tensor:
        scores = self.sums / self.counts.clamp(min=1)
        self.q = data_probabilities(scores, tau)
        self.reset()
        return self.q


def data_probabilities(scores: torch.Tensor, tau: float) -> torch.Tensor:
    n = len(scores)
    total = scores.sum()
    return torch.full_like(scores, 1.0 / n) if total <= 0 else tau * scores / total + (1 - tau) / n


def schedule_weight(epochs_done: int, epochs: int, schedule: str) -> float:
    """delta = tau for the epoch that follows ``epochs_done`` (>= 1) finished epochs."""
    if schedule not in ("next", "current"):
        raise ValueError(f"schedule must be 'next' or 'current', got {schedule!r}")
    return (epochs_done if schedule == "next" else epochs_done - 1) / epochs


# -- data ---------------------------------------------------------------------------------------
class TrainImages:
    """Stored uint8 images read once; batches go through the dataset's own transform."""

    def __init__(self, dataset):
        self.images = [dataset.read_image(i) for i in range(len(dataset))]
        self.labels = torch.as_tensor(dataset.targets, dtype=torch.long)
        self.transform = dataset.transform

    def __len__(self):
        return len(self.images)

    def batch(self, indices: torch.Tensor, generator: torch.Generator):
        x = torch.stack([self.transform(self.images[i], generator) for i in indices.tolist()])
        return x, self.labels[indices]


def heldout_batches(dataset, batch_size: int, seed: int = 0):
    """The held-out set in one seeded, class-mixed order, cut into fixed batches."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    samples = [dataset[i] for i in order]
    x = torch.stack([s[0] for s in samples])
    y = torch.tensor([s[1] for s in samples], dtype=torch.long)
    return list(zip(x.split(batch_size), y.split(batch_size)))


# -- training -----------------------------------------------------------------------------------
def cosine_lr(args, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Cosine decay to 0, stepped every iteration (``--lr-step step``) or every epoch."""
    if args.lr_step == "epoch":
        progress = epoch / args.epochs
    else:
        progress = (epoch * steps_per_epoch + step) / (args.epochs * steps_per_epoch)
    return 0.5 * args.lr * (1 + math.cos(math.pi * progress))


def train(net, data: TrainImages, args) -> tuple[list[dict], PathImportance]:
    use_pa, use_da = args.method in ("pada", "pa"), args.method in ("pada", "da")
    paths = PathImportance()
    samples = DataImportance(len(data))
    g_path = torch.Generator().manual_seed(args.seed + 1)
    g_data = torch.Generator().manual_seed(args.seed + 2)
    g_aug = torch.Generator().manual_seed(args.seed + 3)
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay,
                          nesterov=args.nesterov)
    steps_per_epoch = math.ceil(len(data) / args.batch_size)
    log = []
    for epoch in range(args.epochs):
        if use_da and epoch > 0:
            stream = torch.multinomial(samples.q, len(data), replacement=True, generator=g_data)
        else:
            stream = torch.randperm(len(data), generator=g_data)
        net.train()
        loss_sum, correct = 0.0, 0
        for step, indices in enumerate(stream.split(args.batch_size)):
            for group in opt.param_groups:
                group["lr"] = cosine_lr(args, epoch, step, steps_per_epoch)
            arch = sample_arch(paths.p, g_path)
            x, y = data.batch(indices, g_aug)
            logits = net(x, arch)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_([q for q in net.parameters() if q.grad is not None], args.grad_clip)
            if use_pa:
                paths.add(op_grad_norms(net, arch))
            if use_da:
                samples.add(indices, importance_scores(logits, y))
            opt.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
        log.append({"epoch": epoch, "loss": loss_sum / len(stream), "train_acc": correct / len(stream),
                    "p": paths.p.tolist(), "q_max_over_uniform": float(samples.q.max() * len(data))})
        if epoch + 1 < args.epochs:     # the last epoch's statistics would steer no further epoch
            weight = schedule_weight(epoch + 1, args.epochs, args.schedule)
            if use_pa:
                paths.update(weight)
            if use_da:
                samples.update(weight)
        print(f"epoch {epoch + 1}/{args.epochs} loss {log[-1]['loss']:.4f} acc {log[-1]['train_acc']:.4f} "
              f"p {[round(v, 3) for v in log[-1]['p']]}", flush=True)
    return log, paths


# -- ranking ------------------------------------------------------------------------------------
@torch.no_grad()
def inherited_accuracy(net, arch, batches) -> float:
    net.train()     # batch-statistics BN either way; no running statistics exist
    correct = sum(int((net(x, arch).argmax(1) == y).sum()) for x, y in batches)
    return correct / sum(len(y) for _, y in batches)


def precision_at_top(true: np.ndarray, predicted: np.ndarray, fraction: float = 0.05) -> float:
    k = max(1, int(round(len(true) * fraction)))
    top_true = set(np.argsort(-true, kind="stable")[:k].tolist())
    top_pred = set(np.argsort(-predicted, kind="stable")[:k].tolist())
    return len(top_true & top_pred) / k


def chosen_archs(table, num_archs, seed: int = 0) -> list[str]:
    archs = table.arch_strs
    if num_archs is None or num_archs >= len(archs):
        return archs
    picked = np.random.default_rng(seed).choice(len(archs), size=num_archs, replace=False)
    return [archs[i] for i in sorted(picked.tolist())]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", choices=METHODS, default="pada")
    ap.add_argument("--dataset", choices=("fashion_mnist", "digits", "cifar10_folder"), required=True)
    ap.add_argument("--root", default=None)
    ap.add_argument("--table", required=True, help="NATS CSV, NB201 file or arch,accuracy table")
    ap.add_argument("--table-column", default="cifar10", help="column of a NATS CSV / NB201 file")
    ap.add_argument("--num-archs", type=int, default=None, help="rank a random subset (seed 0) of the table")
    ap.add_argument("--image-size", type=int, default=None, help="resize in-memory images to this square size")
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--eval-subset", type=int, default=None)
    ap.add_argument("--eval-batch-size", type=int, default=250)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--C", type=int, default=8)
    ap.add_argument("--N", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--lr-step", choices=("step", "epoch"), default="step")
    ap.add_argument("--weight-decay", type=float, default=2.5e-4)
    ap.add_argument("--nesterov", action="store_true")
    ap.add_argument("--grad-clip", type=float, default=5.0)
    ap.add_argument("--schedule", choices=("next", "current"), default="next",
                    help="epoch e+1 uses delta = tau = (e+1)/E (next) or e/E (current)")
    ap.add_argument("--augment", choices=("none", "flip", "crop", "crop_flip"), default="none")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True, help="JSON file for the results")
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.C < 1 or args.N < 1:
        ap.error("--epochs, --batch-size, --C and --N must all be at least 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.time()
    train_set = build_dataset(args.dataset, args.root, "train", augment=args.augment,
                              subset=args.train_subset, seed=0, image_size=args.image_size)
    eval_set = build_dataset(args.dataset, args.root, "test", augment=False, subset=args.eval_subset, seed=0,
                             image_size=args.image_size)
    table = load_ground_truth(args.table, args.table_column)
    archs = chosen_archs(table, args.num_archs)
    genes = [parse_arch(a) for a in archs]
    net = Supernet(train_set.in_channels, train_set.num_classes, args.C, args.N)
    log, paths = train(net, TrainImages(train_set), args)
    batches = heldout_batches(eval_set, args.eval_batch_size)
    predicted = np.array([inherited_accuracy(net, g, batches) for g in genes])
    true = table.accuracies_of(archs)
    tau = float(kendalltau(true, predicted)[0])
    p_at_5 = precision_at_top(true, predicted)
    print(f"{args.method}: Kendall tau {tau:.4f}, P@Top5% {p_at_5:.3f} over {len(archs)} architectures",
          flush=True)
    result = {"method": args.method, "args": vars(args), "kendall_tau": tau, "precision_top5": p_at_5,
              "final_p": paths.p.tolist(), "archs": archs, "true": true.tolist(),
              "predicted": predicted.tolist(), "epochs": log, "seconds": time.time() - started}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
