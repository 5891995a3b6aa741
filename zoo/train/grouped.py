"""N members of one family as one network of grouped convolutions: the second packed forward.

`zoo.train.vmap.packed_forward` runs the family's network under torch.func vmap, which turns each
conv into a grouped conv but moves the member dimension around between layers (vmap's rules for
conv and GroupNorm want it in different places, so activations are copied between them: a
forward and backward of 4 members x 16 images copies 20.7 M elements under vmap, 3.7 M here,
measured with torch.profiler on CPU). This module keeps every activation in one layout,
[B, N*C, H, W] (member n owns channels n*C..n*C+C-1), from the stem to the head:

  conv (plain or W-Asym eq. 2)  -> F.conv2d(groups=N) with the [N, C_out, C_in, k, k] weights
                                   flattened to [N*C_out, C_in, k, k]
  GroupNorm(1, C) ("LayerNorm") -> GroupNorm(N, N*C) with [N*C] affines (see GroupedNorm)
  FiGLU                         -> its fixed F as a grouped 1x1 conv, shared by the N members
  Linear (plain or W-Asym)      -> a batched matmul over the N members
  ReLU, Identity                -> unchanged (elementwise)

Only the leaves are swapped (`grouped_net`): the containers and their forward() are the family's
own (`zoo.families.resnet`), so the graph is defined once. The members' tensors come in through
functional_call, named as in the family's network, shaped [N, *shape]; fixed entries and fixed
buffers are the family's. A leaf type with no grouped version is refused by name, so a new family
cannot run silently wrong: it adds its leaf here or trains with impl="vmap".
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..families.layers import FiGLU, MaskedConv2d, MaskedLinear

IMPLS = ("vmap", "grouped", "grouped_cl")  # packed forwards (grouped_cl: channels_last activations)
ELEMENTWISE = (nn.ReLU, nn.Identity)  # leaves that act per entry, so any layout is theirs


def check_impl(impl: str, field: str = "impl") -> str:
    if impl not in IMPLS:
        raise ValueError(f"{field}={impl!r}: unknown packed forward; allowed: {', '.join(IMPLS)}")
    return impl


class _Grouped(nn.Module):
    """A leaf for N members: `weight` (and `bias`) are [N, *shape] placeholders that
    functional_call replaces (expanded views of the family's tensors, so they cost no memory);
    masked leaves keep the family's `weight_mask` / `weight_fixed`."""

    def __init__(self, leaf: nn.Module, n: int):
        super().__init__()
        self.n = n
        for name, p in leaf.named_parameters(recurse=False):
            self.register_parameter(name, nn.Parameter(p.detach().expand(n, *p.shape)))
        for name, b in leaf.named_buffers(recurse=False):
            self.register_buffer(name, b)

    def full_weight(self) -> torch.Tensor:
        """[N, *shape] weights with eq. (2) applied where the leaf is W-Asymmetric."""
        if hasattr(self, "weight_mask"):
            return torch.where(self.weight_mask, self.weight, self.weight_fixed)
        return self.weight


class GroupedConv2d(_Grouped):
    def __init__(self, conv: nn.Conv2d | MaskedConv2d, n: int):
        super().__init__(conv, n)
        self.stride, self.padding = conv.stride, conv.padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, N*C_in, H, W] -> [B, N*C_out, H', W']
        return F.conv2d(x, self.full_weight().flatten(0, 1), stride=self.stride, padding=self.padding, groups=self.n)


class GroupedNorm(_Grouped):
    """GroupNorm(1, C) of each member: normalise the [B*N, C, H, W] view (free for a contiguous
    activation), then apply each member's affine. This is GroupNorm(N, N*C) with [N*C] affines,
    but torch's CPU backward for num_groups=N was measured 10x less accurate in float32 (a
    gradient 5e-4 off the float64 one where the num_groups=1 kernel, which vmap also runs, is
    4e-5 off), so the per-member kernel is used."""

    def __init__(self, norm: nn.GroupNorm, n: int):
        if norm.num_groups != 1 or not norm.affine:
            raise TypeError(f"GroupNorm(num_groups={norm.num_groups}, affine={norm.affine}): only the "
                            "affine GroupNorm(1, C) of zoo.families.resnet has a grouped version")
        super().__init__(norm, n)
        self.eps = norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, nc = x.shape[:2]
        if x.is_contiguous():
            h = F.group_norm(x.reshape(b * self.n, nc // self.n, *x.shape[2:]), 1, eps=self.eps).view_as(x)
        else:  # channels_last: the [B, H, W, N, C] view is free, statistics in float32
            v = x.permute(0, 2, 3, 1).reshape(b, -1, self.n, nc // self.n).float()
            var, mean = torch.var_mean(v, dim=(1, 3), keepdim=True, correction=0)
            h = ((v - mean) * torch.rsqrt(var + self.eps)).view(b, *x.shape[2:], nc).permute(0, 3, 1, 2)
        return torch.addcmul(self.bias.reshape(1, nc, 1, 1), h, self.weight.reshape(1, nc, 1, 1))


class GroupedFiGLU(nn.Module):
    """sigmoid(F x) * x per member, F the family's fixed mixing (shared by the members)."""

    def __init__(self, figlu: FiGLU, n: int):
        super().__init__()
        self.n = n
        self.register_buffer("mixing", figlu.mixing.repeat(n, 1, 1, 1))  # [N*C, C, 1, 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(F.conv2d(x, self.mixing, groups=self.n)) * x


class GroupedLinear(_Grouped):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, N*D_in] -> [B, N*D_out]
        h = x.view(x.shape[0], self.n, -1).transpose(0, 1)  # [N, B, D_in]
        out = torch.baddbmm(self.bias[:, None, :], h, self.full_weight().transpose(1, 2))  # [N, B, D_out]
        return out.transpose(0, 1).flatten(1)


def _grouped_leaf(module: nn.Module, n: int) -> nn.Module:
    if isinstance(module, (nn.Conv2d, MaskedConv2d)):
        if isinstance(module, nn.Conv2d) and (module.groups != 1 or module.bias is not None
                                              or module.dilation != (1, 1) or module.padding_mode != "zeros"):
            raise TypeError(f"{module}: only bias-free, ungrouped, undilated, zero-padded convs have a grouped version")
        return GroupedConv2d(module, n)
    if isinstance(module, nn.GroupNorm):
        return GroupedNorm(module, n)
    if isinstance(module, FiGLU):
        return GroupedFiGLU(module, n)
    if isinstance(module, (nn.Linear, MaskedLinear)):
        return GroupedLinear(module, n)
    if isinstance(module, ELEMENTWISE):
        return module
    raise TypeError(f"{type(module).__name__}: no grouped version in zoo/grouped.py; add one there, "
                    "or train this family with impl='vmap'")


def grouped_net(net: nn.Module, n: int) -> nn.Module:
    """A copy of the family's `net` for n members: same containers and parameter names, every leaf
    swapped for its grouped version. Parameters are placeholders (see `grouped_forward`)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r}: must be an int >= 1")
    g = copy.deepcopy(net)
    for name, module in list(g.named_modules()):
        if name and not any(True for _ in module.children()):
            parent, _, leaf = name.rpartition(".")
            setattr(g.get_submodule(parent) if parent else g, leaf, _grouped_leaf(module, n))
    if list(dict(g.named_parameters())) != list(dict(net.named_parameters())):
        raise AssertionError("grouped_net changed the parameter names or their order")
    return g


def grouped_forward(gnet: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, *,
                    channels_last: bool = False) -> torch.Tensor:
    """params {name: [N, *shape]}, x [N, B, 3, 32, 32] -> logits [N, B, 10]; the same contract as
    `zoo.train.vmap.packed_forward`, on a `grouped_net(net, N)`. `channels_last` runs every
    activation in that memory format (the layout tensor-core convolutions prefer on GPUs)."""
    n, b = x.shape[:2]
    h = x.transpose(0, 1).reshape(b, n * x.shape[2], *x.shape[3:])  # [B, N*3, H, W]
    if channels_last:
        h = h.contiguous(memory_format=torch.channels_last)
    logits = functional_call(gnet, params, (h,), strict=False)  # [B, N*10]
    return logits.view(b, n, -1).transpose(0, 1)
