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

"grouped_fused" runs the same leaves through a twin of the containers (`FUSED_CONTAINERS`) whose
forwards call `zoo.train.fused_norm`: each GroupNorm with its affine, the block's residual add
and a following ReLU in one Triton kernel forward and one backward, entries read and written in
the activation dtype (bf16 under autocast) with fp32 statistics. FiGLU's gate mixes channels, so
sigma-Asym fuses GN + affine + residual and runs its FiGLU after. It needs triton and a CUDA
device (`fused_unavailable`); off by default until a GPU has measured it.

Only the leaves are swapped (`grouped_net`): the containers and their forward() are the family's
own (`zoo.families.resnet`), so the graph is defined once. The members' tensors come in through
functional_call, named as in the family's network, shaped [N, *shape]; fixed entries and fixed
buffers are the family's. A leaf type with no grouped version is refused by name, so a new family
cannot run silently wrong: it adds its leaf here or trains with impl="vmap".
"""
from __future__ import annotations

import copy
import importlib.util
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..families.layers import FiGLU, MaskedConv2d, MaskedLinear
from ..families.resnet import BasicBlock, ConvNormAct, Shortcut

# packed forwards (grouped_cl: channels_last activations; grouped_fused: Triton GroupNorm kernels)
IMPLS = ("vmap", "grouped", "grouped_cl", "grouped_fused")
ELEMENTWISE = (nn.ReLU, nn.Identity)  # leaves that act per entry, so any layout is theirs


def fused_unavailable() -> str | None:
    """Why this process cannot run "grouped_fused", or None. Triton is not imported here: it is
    optional, and importing it decides whether its kernels are interpreted (TRITON_INTERPRET)."""
    if importlib.util.find_spec("triton") is None:
        return "needs triton (pip install triton), which is not installed"
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return "needs a CUDA device, and this machine has none (TRITON_INTERPRET=1 runs it on the CPU, for tests)"


def check_impl(impl: str, field: str = "impl", *, here: bool = True) -> str:
    """`impl` if it names a packed forward (and, with `here`, one this machine can run: a CPU-only
    Ray head checks only the name, its GPU workers check the rest)."""
    if impl not in IMPLS:
        raise ValueError(f"{field}={impl!r}: unknown packed forward; allowed: {', '.join(IMPLS)}")
    why = fused_unavailable() if impl == "grouped_fused" and here else None
    if why:
        raise ValueError(f"{field}={impl!r}: {why}; allowed here: {', '.join(i for i in IMPLS if i != impl)}")
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

    def fused(self, x: torch.Tensor, residual: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:
        """[B, N*C, H, W] -> relu?(this norm of x + residual), one Triton kernel (zoo.train.fused_norm)."""
        from .fused_norm import group_norm_act  # imports triton, an optional dependency

        return group_norm_act(x, self.weight, self.bias, residual, eps=self.eps, relu=relu)


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


def _norm_act(norm: GroupedNorm, act: nn.Module, h: torch.Tensor, residual: torch.Tensor | None = None):
    """act(norm(h) + residual) with the activation inside the kernel where it acts per entry."""
    if isinstance(act, nn.ReLU):
        return norm.fused(h, residual, relu=True)
    out = norm.fused(h, residual)
    return out if isinstance(act, nn.Identity) else act(out)  # FiGLU: its 1x1 conv mixes channels


class FusedConvNormAct(ConvNormAct):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _norm_act(self.norm, self.act, self.conv(x))


class FusedShortcut(Shortcut):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm.fused(self.conv(x))


class FusedBasicBlock(BasicBlock):
    """BasicBlock.forward with norm2, the residual add and act2 in one kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _norm_act(self.norm1, self.act1, self.conv1(x))
        return _norm_act(self.norm2, self.act2, self.conv2(h), residual=self.shortcut(x))


FUSED_CONTAINERS = {ConvNormAct: FusedConvNormAct, Shortcut: FusedShortcut, BasicBlock: FusedBasicBlock}


def _fused_twin(module: nn.Module) -> nn.Module:
    """The same tree with every container that calls a norm swapped for its fused class. Leaves
    are shared, not copied, so moving the grouped net (.to, .cuda) moves its twin."""
    children = dict(module.named_children())
    if not children:
        return module
    fused = FUSED_CONTAINERS.get(type(module))
    if fused is None and any(isinstance(c, GroupedNorm) for c in children.values()):
        raise TypeError(f"{type(module).__name__}: calls a GroupNorm but has no fused version in "
                        "zoo/train/grouped.py (FUSED_CONTAINERS); add one, or use impl='grouped'")
    twin = copy.copy(module)
    twin.__dict__.update(_modules={k: _fused_twin(c) for k, c in children.items()},
                         _parameters=dict(module._parameters), _buffers=dict(module._buffers))
    if fused is not None:
        twin.__class__ = fused  # a subclass that only overrides forward()
    return twin


def grouped_net(net: nn.Module, n: int) -> nn.Module:
    """A copy of the family's `net` for n members: same containers and parameter names, every leaf
    swapped for its grouped version. Parameters are placeholders (see `grouped_forward`).
    `.fused_twin` runs the same leaves with fused norms (impl "grouped_fused")."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r}: must be an int >= 1")
    g = copy.deepcopy(net)
    for name, module in list(g.named_modules()):
        if name and not any(True for _ in module.children()):
            parent, _, leaf = name.rpartition(".")
            setattr(g.get_submodule(parent) if parent else g, leaf, _grouped_leaf(module, n))
    twin = _fused_twin(g)
    if not list(dict(g.named_parameters())) == list(dict(twin.named_parameters())) == list(dict(net.named_parameters())):
        raise AssertionError("grouped_net changed the parameter names or their order")
    object.__setattr__(g, "fused_twin", twin)  # not a submodule: its parameters are g's own, once
    return g


def grouped_forward(gnet: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, *,
                    channels_last: bool = False, fused: bool = False) -> torch.Tensor:
    """params {name: [N, *shape]}, x [N, B, 3, 32, 32] -> logits [N, B, 10]; the same contract as
    `zoo.train.vmap.packed_forward`, on a `grouped_net(net, N)`. `channels_last` runs every
    activation in that memory format (the layout tensor-core convolutions prefer on GPUs);
    `fused` runs the norms as Triton kernels (`zoo.train.fused_norm`; NCHW only)."""
    if channels_last and fused:
        raise ValueError("channels_last=True, fused=True: the fused norm reads NCHW slabs; pick one")
    n, b = x.shape[:2]
    h = x.transpose(0, 1).reshape(b, n * x.shape[2], *x.shape[3:])  # [B, N*3, H, W]
    if channels_last:
        h = h.contiguous(memory_format=torch.channels_last)
    logits = functional_call(gnet.fused_twin if fused else gnet, params, (h,), strict=False)  # [B, N*10]
    return logits.view(b, n, -1).transpose(0, 1)
