"""ResNet-8 for CIFAR-10, the skeleton every family shares.

The graph is the paper's (Section 5.3, Appendix E.3): a 3x3 stem, three basic blocks of widths
16/32/64 with strides 1/2/2, GroupNorm(1, C) as the "LayerNorm", global average pooling and a
Linear(64, 10) head. A family changes only *which* conv, linear and nonlinearity it plugs in
(`Parts`), so the asymmetry stays a small named piece rather than flags through the network.

Trainable-parameter order (the canonical order of `zoo.layout`) is the module registration order
below: stem.conv, stem.norm, then for each block conv1, norm1, conv2, norm2, [shortcut.conv,
shortcut.norm], then head. 29 tensors, 78,042 entries for the standard family.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

WIDTHS = (16, 32, 64)  # channels of the three blocks
STRIDES = (1, 2, 2)  # spatial stride of each block's first conv
NUM_CLASSES = 10


@dataclass(frozen=True)
class Parts:
    """Factories a family supplies; each receives a name so seeded pieces differ per layer."""

    conv: Callable[..., nn.Module]  # conv(name, c_in, c_out, kernel, stride) -> module without bias
    linear: Callable[..., nn.Module]  # linear(name, d_in, d_out) -> module with bias
    act: Callable[..., nn.Module]  # act(name, channels) -> nonlinearity


def norm(channels: int) -> nn.GroupNorm:
    """The paper's LayerNorm for CNNs: normalise over (C, H, W) per sample, per-channel affine."""
    return nn.GroupNorm(1, channels)


class ConvNormAct(nn.Sequential):
    def __init__(self, parts: Parts, name: str, c_in: int, c_out: int, *, stride: int = 1):
        super().__init__()
        self.conv = parts.conv(f"{name}.conv", c_in, c_out, 3, stride)
        self.norm = norm(c_out)
        self.act = parts.act(f"{name}.act", c_out)


class Shortcut(nn.Sequential):
    def __init__(self, parts: Parts, name: str, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv = parts.conv(f"{name}.conv", c_in, c_out, 1, stride)
        self.norm = norm(c_out)


class BasicBlock(nn.Module):
    """conv3x3-norm-act-conv3x3-norm, plus identity or conv1x1-norm shortcut, then act."""

    def __init__(self, parts: Parts, name: str, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = parts.conv(f"{name}.conv1", c_in, c_out, 3, stride)
        self.norm1 = norm(c_out)
        self.act1 = parts.act(f"{name}.act1", c_out)
        self.conv2 = parts.conv(f"{name}.conv2", c_out, c_out, 3, 1)
        self.norm2 = norm(c_out)
        needs_proj = stride != 1 or c_in != c_out
        self.shortcut = Shortcut(parts, f"{name}.shortcut", c_in, c_out, stride) if needs_proj else nn.Identity()
        self.act2 = parts.act(f"{name}.act2", c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return self.act2(h + self.shortcut(x))


class ResNet8(nn.Module):
    """[B, 3, 32, 32] normalised images -> [B, 10] logits."""

    def __init__(self, parts: Parts):
        super().__init__()
        self.stem = ConvNormAct(parts, "stem", 3, WIDTHS[0])
        blocks, c_in = [], WIDTHS[0]
        for i, (c_out, stride) in enumerate(zip(WIDTHS, STRIDES)):
            blocks.append(BasicBlock(parts, f"blocks.{i}", c_in, c_out, stride))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = parts.linear("head", WIDTHS[-1], NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x))
        return self.head(h.mean(dim=(2, 3)))
