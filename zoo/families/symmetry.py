"""Hidden-channel permutations of ResNet-8: the parameter symmetry the paper removes.

A permutation of each hidden channel space, applied consistently to every tensor that reads or
writes that space, leaves a standard ResNet-8's function unchanged. The residual stream of a
stage is one space shared by the blocks that add into it (and by the shortcut conv that writes
it). GroupNorm(1, C) is permutation equivariant, so its affine parameters simply follow their
channels.

`RESNET8` is that symmetry as one spec for the skeleton all three families share. It also places
the fixed pieces, so a permutation can act on trainable and fixed entries alike:
- W-Asym's `weight_mask` and `weight_fixed` follow their `weight` (paper eq. 2 is elementwise);
- FiGLU's F (`mixing`, [C, C, 1, 1]) is conjugated, F -> P F P^T: both axes follow the channels
  it acts on, because sigma(P x) = sigmoid(F' P x) * P x equals P sigma(x) iff F' = P F P^T.
Permuting the fixed pieces as well preserves every family's function, but the result has other
fixed pieces than its zoo, so it is not a member of that zoo's family: within a zoo, whose fixed
pieces are shared, W-Asym and sigma-Asym have no such symmetry.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from .resnet import WIDTHS


@dataclass(frozen=True)
class PermutationSpec:
    """Which permutation acts on which axis of which tensor (Git Re-Basin's spec, Ainsworth et al.
    2023): a permutation `perms[s]` of space `s` acts as `t.index_select(dim, perms[s])` on every
    dim of every tensor that `axes` maps to `s`."""

    spaces: Mapping[str, int]  # channel space -> its width (the size of its permutation)
    axes: Mapping[str, tuple[str | None, ...]]  # tensor (parameter or buffer) -> space per dim; None = not permuted

    def __post_init__(self):
        for name, dims in self.axes.items():
            unknown = [s for s in dims if s is not None and s not in self.spaces]
            if unknown:
                raise ValueError(f"axes[{name!r}]={dims}: unknown spaces {unknown}; allowed: {', '.join(self.spaces)}")

    def axes_of(self, name: str) -> tuple[str | None, ...]:
        if name not in self.axes:
            raise ValueError(f"tensor={name!r}: not in this permutation spec; it names {len(self.axes)} tensors")
        return self.axes[name]

    def users(self, space: str, names) -> list[tuple[str, int]]:
        """(tensor, dim) pairs among `names` on which the permutation of `space` acts."""
        return [(n, d) for n in names for d, s in enumerate(self.axes_of(n)) if s == space]

    def random(self, seed: int) -> dict[str, torch.Tensor]:
        """One uniformly random permutation per space, a pure function of `seed`."""
        gen = torch.Generator().manual_seed(seed)
        return {name: torch.randperm(width, generator=gen) for name, width in self.spaces.items()}

    def identity(self) -> dict[str, torch.Tensor]:
        return {name: torch.arange(width) for name, width in self.spaces.items()}


def permute_tensor(t: torch.Tensor, dims: tuple[str | None, ...], perms: Mapping[str, torch.Tensor],
                   skip: int | None = None) -> torch.Tensor:
    """`t` with each dim permuted by its space's permutation; dim `skip` is left as it is."""
    for dim, space in enumerate(dims):
        if space is not None and dim != skip:
            t = t.index_select(dim, perms[space])
    return t


# Channel spaces: "s{i}" is the residual stream after stage i, "b{i}" the inside of block i.
SPACES = {"s0": WIDTHS[0], "b0": WIDTHS[0], "b1": WIDTHS[1], "s1": WIDTHS[1], "b2": WIDTHS[2], "s2": WIDTHS[2]}


def _resnet8_axes() -> tuple[dict, dict]:
    """({trainable parameter: space per dim}, {fixed buffer: space per dim}) of `resnet.ResNet8`."""
    axes, fixed = {}, {}

    def weight(name, out, inp):  # conv or linear; W-Asym's eq. 2 is elementwise, so its pieces follow
        axes[f"{name}.weight"] = (out, inp)
        fixed.update({f"{name}.weight_mask": (out, inp), f"{name}.weight_fixed": (out, inp)})

    def norm(name, space):
        axes.update({f"{name}.weight": (space,), f"{name}.bias": (space,)})

    def act(name, space):  # FiGLU's F: conjugated, F -> P F P^T
        fixed[f"{name}.mixing"] = (space, space)

    weight("stem.conv", "s0", None)
    norm("stem.norm", "s0")
    act("stem.act", "s0")
    for i, (inp, out) in enumerate([("s0", "s0"), ("s0", "s1"), ("s1", "s2")]):
        p, inner = f"blocks.{i}.", f"b{i}"
        weight(p + "conv1", inner, inp)
        norm(p + "norm1", inner)
        act(p + "act1", inner)
        weight(p + "conv2", out, inner)
        norm(p + "norm2", out)
        act(p + "act2", out)
        if inp != out:  # a projection shortcut writes the next stream; block 0's is the identity
            weight(p + "shortcut.conv", out, inp)
            norm(p + "shortcut.norm", out)
    weight("head", None, "s2")
    axes["head.bias"] = (None,)
    return axes, fixed


AXES, FIXED_AXES = _resnet8_axes()  # name -> (space of dim 0, space of dim 1, ...); None = not permuted
RESNET8 = PermutationSpec(spaces=SPACES, axes={**AXES, **FIXED_AXES})


def random_permutations(seed: int) -> dict[str, torch.Tensor]:
    return RESNET8.random(seed)


@torch.no_grad()
def permute_params(net: nn.Module, perms: Mapping[str, torch.Tensor], spec: PermutationSpec = RESNET8) -> nn.Module:
    """A copy of `net` whose trainable parameters are permuted by `perms`; buffers (W-Asym masks
    and fixed values, FiGLU's F) stay where they are, which is exactly why those families are
    not invariant."""
    out = copy.deepcopy(net)
    for name, p in out.named_parameters():
        p.copy_(permute_tensor(p, spec.axes_of(name), perms))
    return out


@torch.no_grad()
def permute_network(net: nn.Module, perms: Mapping[str, torch.Tensor], spec: PermutationSpec = RESNET8) -> nn.Module:
    """A copy of `net` with trainable and fixed entries alike permuted by `perms`: the same
    function in every family, but with other fixed pieces than `net`'s zoo (module docstring)."""
    out = permute_params(net, perms, spec)
    for name, b in out.named_buffers():
        b.copy_(permute_tensor(b, spec.axes_of(name), perms))
    return out
