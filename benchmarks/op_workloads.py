"""The shapes the op benchmarks measure: loss batches and sampled-path gradient lists."""
from __future__ import annotations

import torch

LOSS_SHAPES = [(256, 10), (256, 1000)]


def loss_inputs(batch: int, classes: int, device: str = "cpu", dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, classes, generator=g) * 2).to(device=device, dtype=dtype)
    target = torch.randint(0, classes, (batch,), generator=g).to(device)
    return logits, target


def nb201_path_grads(device: str = "cpu", seed: int = 0):
    """Gradients of a sampled NAS-Bench-201 path (C=16, N=5, all 6 edges nor_conv_3x3: the
    largest path), with their (edge, op) slots, like the trainer passes them."""
    g = torch.Generator().manual_seed(seed)
    grads, slots = [], []
    for stage, c in enumerate((16, 32, 64)):
        for _ in range(5):
            for edge in range(6):
                # ReLU-Conv3x3-BN(affine=False): one conv weight per edge per cell.
                grads.append(torch.randn(c, c, 3, 3, generator=g).to(device))
                slots.append(edge * 5 + 3)
    return grads, slots


def proxyless_path_grads(device: str = "cpu", seed: int = 0):
    """A ProxylessNAS-sized sampled path: 21 MBConv layers (expand 1x1, depthwise kxk, project 1x1,
    three BatchNorms with weight and bias each), widths of docs/method.md ("Search spaces"), k=7 e=6 everywhere: about
    5M parameters in 189 tensors. Slot = layer * 7 + candidate."""
    g = torch.Generator().manual_seed(seed)
    stages = [(24, 4), (40, 4), (80, 4), (96, 4), (192, 4), (320, 1)]
    grads, slots = [], []
    cin, layer = 16, 0
    for cout, count in stages:
        for _ in range(count):
            hidden = cin * 6
            shapes = [(hidden, cin, 1, 1), (hidden,), (hidden,), (hidden, 1, 7, 7), (hidden,), (hidden,),
                      (cout, hidden, 1, 1), (cout,), (cout,)]
            for shape in shapes:
                grads.append(torch.randn(*shape, generator=g).to(device))
                slots.append(layer * 7 + 5)
            cin, layer = cout, layer + 1
    return grads, slots
