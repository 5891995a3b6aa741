"""The small named pieces that make a network asymmetric, and the plain ones they replace.

Every fixed (untrainable) tensor is drawn from a numpy Generator keyed by (asym_seed, layer name),
so it is identical in every process and independent of construction order. A masked parameter
`weight` is accompanied by a boolean buffer `weight_mask` (True = trainable); `zoo.layout` uses
that convention to read and write only the trainable entries.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def layer_rng(asym_seed: int, name: str) -> np.random.Generator:
    """A generator addressed by (seed, layer name): never Python's salted hash()."""
    if not isinstance(asym_seed, int) or asym_seed < 0:
        raise ValueError(f"asym_seed={asym_seed!r}: must be a non-negative int")
    return np.random.default_rng([asym_seed, zlib.crc32(name.encode())])


def plain_conv(name: str, c_in: int, c_out: int, kernel: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)


def plain_linear(name: str, d_in: int, d_out: int) -> nn.Linear:
    return nn.Linear(d_in, d_out)


def relu(name: str, channels: int) -> nn.ReLU:
    return nn.ReLU()


def fixed_entry_mask(rng: np.random.Generator, rows: int, cols: int, n_fix: int) -> np.ndarray:
    """[rows, cols] bool, True = trainable; each row fixes a random subset of min(n_fix, cols)."""
    trainable = np.ones((rows, cols), dtype=bool)
    for r in range(rows):
        trainable[r, rng.permutation(cols)[: min(n_fix, cols)]] = False
    return trainable


class MaskedConv2d(nn.Module):
    """W-Asymmetric conv, paper eq. (2): W' = M * W + (1 - M) * F.

    For each output channel, `n_fix` input channels have their whole k x k filter fixed to
    F ~ kappa * N(0, 1); all filters are fixed when the layer has <= n_fix inputs.
    """

    def __init__(self, c_in, c_out, kernel, stride, *, rng: np.random.Generator, n_fix: int, kappa: float):
        super().__init__()
        self.stride, self.padding = stride, kernel // 2
        rows = fixed_entry_mask(rng, c_out, c_in, n_fix)
        mask = torch.from_numpy(np.repeat(rows[:, :, None, None], kernel, 2).repeat(kernel, 3))
        fixed = torch.from_numpy(rng.standard_normal((c_out, c_in, kernel, kernel)).astype(np.float32))
        self.register_buffer("weight_mask", mask)
        self.register_buffer("weight_fixed", kappa * fixed * ~mask)
        self.weight = nn.Parameter(torch.zeros(c_out, c_in, kernel, kernel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.where(self.weight_mask, self.weight, self.weight_fixed)
        return F.conv2d(x, w, stride=self.stride, padding=self.padding)


class MaskedLinear(nn.Module):
    """W-Asymmetric linear layer, paper eq. (2); biases are never fixed."""

    def __init__(self, d_in, d_out, *, rng: np.random.Generator, n_fix: int, kappa: float):
        super().__init__()
        mask = torch.from_numpy(fixed_entry_mask(rng, d_out, d_in, n_fix))
        fixed = torch.from_numpy(rng.standard_normal((d_out, d_in)).astype(np.float32))
        self.register_buffer("weight_mask", mask)
        self.register_buffer("weight_fixed", kappa * fixed * ~mask)
        self.weight = nn.Parameter(torch.zeros(d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, torch.where(self.weight_mask, self.weight, self.weight_fixed), self.bias)


class FiGLU(nn.Module):
    """sigma-Asymmetric nonlinearity (paper Section 4.2): sigma(x) = sigmoid(F x) * x.

    F is a fixed dense 1x1 convolution mixing channels, F ~ N(0, 1/C). Because F mixes channels,
    sigma is not permutation-equivariant, which removes the hidden-unit permutation symmetry.
    """

    def __init__(self, channels: int, *, rng: np.random.Generator):
        super().__init__()
        f = rng.standard_normal((channels, channels)) / np.sqrt(channels)
        self.register_buffer("mixing", torch.from_numpy(f.astype(np.float32))[:, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(F.conv2d(x, self.mixing)) * x
