"""The record a model family declares about itself in its own file (see `zoo.families`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from .symmetry import RESNET8, PermutationSpec


@dataclass(frozen=True)
class Family:
    name: str  # key in stores, configs and manifests, e.g. "w_asym"
    label: str  # for tables and figures, e.g. "W-Asym ResNet-8"
    build: Callable[[int], nn.Module]  # asym_seed -> a fresh network; fixed pieces addressed by the seed
    options: dict = field(default_factory=dict)  # settings of the fixed pieces, recorded in each zoo's manifest
    symmetric: bool = True  # hidden-channel permutations leave the function unchanged (zoo.families.symmetry)
    permutations: PermutationSpec = RESNET8  # channel spaces and the axes of every tensor they act on
    companion_init: str = "kaiming_normal"  # the companion code's trainable-weight init: kaiming_normal | torch_default

    @property
    def tex_label(self) -> str:
        return self.label.replace("σ", r"$\sigma$")
