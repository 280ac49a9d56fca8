"""A test-only search space, to show what adding one takes: this file (a SuperNet subclass that
supplies its layers, its path's modules and its architecture strings), its registration, and a
contract subclass (tests/test_toy_components.py). Two searchable layers choose among a 3x3
convolution, a 1x1 convolution and the identity."""
from __future__ import annotations

from torch import nn

from pada_fast.registry import SPACES, SpaceEntry
from pada_fast.spaces import SuperNet

OPS = ("conv3x3", "conv1x1", "identity")


def make_op(name: str, channels: int) -> nn.Module:
    if name == "identity":
        return nn.Identity()
    k = 3 if name == "conv3x3" else 1
    return nn.Sequential(nn.Conv2d(channels, channels, k, padding=k // 2, bias=False), nn.ReLU())


class ToySuperNet(SuperNet):
    space_name = "toy"

    def __init__(self, C: int = 4, num_layers: int = 2, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, C, 3, padding=1)
        self.layers = nn.ModuleList(nn.ModuleList(make_op(n, C) for n in OPS) for _ in range(num_layers))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(C, num_classes))
        self._space_kwargs = {"C": C, "num_layers": num_layers, "num_classes": num_classes,
                              "in_channels": in_channels}

    def layer_candidates(self):
        return [list(OPS) for _ in self.layers]

    def forward(self, x, arch):
        x = self.stem(x)
        for layer, choice in zip(self.layers, self._key(arch)):
            x = layer[choice](x)
        return self.head(x)

    def path_modules(self, arch):
        for layer, choice in enumerate(arch):
            yield layer * len(OPS) + choice, self.layers[layer][choice]

    def candidate_modules(self):
        return [[[op] for op in layer] for layer in self.layers]

    def arch_to_str(self, arch):
        return "|".join(OPS[g] for g in self._key(arch))

    def str_to_arch(self, text):
        return tuple(OPS.index(name) for name in text.split("|"))

    def network_kwargs(self, arch, weights=None):
        return {"arch": list(self._key(arch)), **self._space_kwargs}


def toy_network(arch, **kwargs) -> nn.Module:
    """The stand-alone network of ``arch``: the supernet with only the chosen operations."""
    net = ToySuperNet(**kwargs)
    chosen = tuple(arch)

    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x, chosen)
    return Fixed()


def register() -> None:
    SPACES.register("toy", SpaceEntry(
        ToySuperNet, lambda s, num_classes, in_channels: {"C": s.C, "num_classes": num_classes,
                                                          "in_channels": in_channels},
        toy_network))


def unregister() -> None:
    SPACES.unregister("toy")
