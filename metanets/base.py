"""What every metanetwork shares: the input convention, the layout it reads, a seeded init.

Input convention: a metanetwork of a family is built from that family's layout (a `zoo.Layout`
or its JSON list) and maps a batch of flat trainable-parameter vectors [B, P], in `zoo.flatten`
order, to predictions [B]. It does so in two steps:

    featurize(x [B, P]) -> [B, F]   parameter-free, so a trainer may compute it once per data set
    head(f [B, F]) -> [B, 1]        everything that learns

Only StatNN has a non-trivial `featurize` (its 7 statistics per tensor); the others pass x on.

Each metanetwork's file ends with a `MetanetSpec`: its name, its display name and its options
(keyword arguments of its constructor, with their defaults). `metanets.registry` lists the specs;
the stage, the tables and the run records read them, so a metanetwork lives in one file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from zoo.layout import Layout


@dataclass(frozen=True, kw_only=True)
class MetanetSpec:
    name: str  # key in configs, run records and output paths, e.g. "deepsets"
    display: str  # row label in Table 3 and the plots, e.g. "DeepSets"
    build: Callable[..., "Metanet"]  # (layout, **options) -> a fresh metanetwork
    options: dict = field(default_factory=dict)  # option -> default, every keyword `build` takes
    memory_only: frozenset = frozenset()  # options that trade memory for time, never the result
    invariant: bool = False  # exactly invariant to hidden-channel permutations (tests/test_metanets.py checks)

    def __post_init__(self):
        object.__setattr__(self, "memory_only", frozenset(self.memory_only))
        unknown = sorted(self.memory_only - set(self.options))
        if unknown:
            raise ValueError(f"{self.name}.memory_only={unknown}: not among its options {sorted(self.options)}")

    def check_options(self, given: dict) -> dict:
        """`given` over the defaults; an unknown option is a ValueError naming the allowed ones."""
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            raise ValueError(f"options of metanet {self.name!r}: unknown {unknown}; allowed: {sorted(self.options)}")
        for key, value in given.items():  # ranges are the constructor's to check; types are checked here, early
            default = self.options[key]
            if type(value) is not type(default) and not (type(default) is float and type(value) is int):
                raise ValueError(f"options.{self.name}.{key}={value!r}: must be of type {type(default).__name__}, "
                                 f"as its default {default!r}")
        return {**self.options, **given}

    def result_options(self, given: dict) -> dict:
        """The options that can change a run's result, which its key hashes (its record holds them all)."""
        return {k: v for k, v in self.check_options(given).items() if k not in self.memory_only}


def as_layout(layout) -> Layout:
    """A `zoo.Layout`, or its `to_json()` list of {"name", "shape", "offset", "size"}."""
    return layout if isinstance(layout, Layout) else Layout.from_json(layout)


class Metanet(nn.Module):
    """[B, P] flat trainable vectors of one family -> [B] predictions (subclasses set `head`)."""

    head: nn.Module

    def __init__(self, layout):
        super().__init__()
        self.layout = as_layout(layout)

    def featurize(self, x: torch.Tensor) -> torch.Tensor:
        """[B, P] -> [B, F]; parameter-free. Identity unless the metanetwork reads statistics."""
        if x.shape[-1] != self.layout.size:
            raise ValueError(f"input has {x.shape[-1]} parameters; this family's layout has {self.layout.size}")
        return x

    def forward_features(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(f).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(self.featurize(x))


@torch.no_grad()
def seeded_init(net: nn.Module, seed: int) -> nn.Module:
    """PyTorch's default init (U(+-1/sqrt(fan_in)) for linear/conv weight and bias, unit/zero
    norms) drawn from a generator keyed by `seed`, so a run's init never touches global RNG."""
    gen = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            bound = 1.0 / math.sqrt(module.weight[0].numel())
            for p in (module.weight, module.bias):
                if p is not None:
                    p.copy_(torch.rand(p.shape, generator=gen) * 2 * bound - bound)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d)):
            module.reset_parameters()
    return net


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
