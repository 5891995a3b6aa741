"""Hidden-channel permutations of ResNet-8: the parameter symmetry the paper removes.

A permutation of each hidden channel space, applied consistently to every tensor that reads or
writes that space, leaves a standard ResNet-8's function unchanged. The residual stream of a
stage is one space shared by the blocks that add into it. GroupNorm(1, C) is permutation
equivariant, so its affine parameters simply follow their channels.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .resnet import WIDTHS

# Channel spaces: "s{i}" is the residual stream after stage i, "b{i}" the inside of block i.
SPACES = {"s0": WIDTHS[0], "b0": WIDTHS[0], "b1": WIDTHS[1], "s1": WIDTHS[1], "b2": WIDTHS[2], "s2": WIDTHS[2]}

# parameter name -> (space of dim 0, space of dim 1); None = not permuted.
AXES = {
    "stem.conv.weight": ("s0", None), "stem.norm.weight": ("s0", None), "stem.norm.bias": ("s0", None),
    "head.weight": (None, "s2"), "head.bias": (None, None),
}
for _i, (_inp, _out) in enumerate([("s0", "s0"), ("s0", "s1"), ("s1", "s2")]):
    _b, _p = f"b{_i}", f"blocks.{_i}."
    AXES.update({
        _p + "conv1.weight": (_b, _inp), _p + "norm1.weight": (_b, None), _p + "norm1.bias": (_b, None),
        _p + "conv2.weight": (_out, _b), _p + "norm2.weight": (_out, None), _p + "norm2.bias": (_out, None),
        _p + "shortcut.conv.weight": (_out, _inp),
        _p + "shortcut.norm.weight": (_out, None), _p + "shortcut.norm.bias": (_out, None),
    })


def random_permutations(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randperm(width, generator=gen) for name, width in SPACES.items()}


@torch.no_grad()
def permute_params(net: nn.Module, perms: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of `net` whose trainable parameters are permuted by `perms`; buffers (W-Asym masks
    and fixed values, FiGLU's F) stay where they are, which is exactly why those families are
    not invariant."""
    out = copy.deepcopy(net)
    for name, p in out.named_parameters():
        for dim, space in enumerate(AXES[name]):
            if space is not None:
                p.copy_(p.index_select(dim, perms[space]))
    return out
