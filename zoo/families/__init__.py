"""The family registry: one `Family` record per model family, declared in the family's own file.

To add a family: write `zoo/families/NAME.py` with a `build(asym_seed)` and a
`FAMILY = Family(...)` record (`zoo.families.family`), then add one line to `REGISTRY` below.
Everything else (the store, training, the packed forwards, tables, figures, presets) reads the record.
"""
from __future__ import annotations

import hashlib
import math

import torch
from torch import nn

from . import sigma_asym, standard, w_asym
from .family import Family

INITS = ("companion", "kaiming_normal")  # weight-init schemes of zoo.recipe.Recipe.init

REGISTRY = (
    standard.FAMILY,
    w_asym.FAMILY,
    sigma_asym.FAMILY,
)
FAMILIES = {f.name: f for f in REGISTRY}  # name -> Family, in the order tables list them
LABELS = {f.name: f.label for f in REGISTRY}
TEX_LABELS = {f.name: f.tex_label for f in REGISTRY}


def check_family(arch: str) -> str:
    if arch not in FAMILIES:
        raise ValueError(f"family={arch!r}: unknown; allowed: {', '.join(FAMILIES)}")
    return arch


def build(arch: str, asym_seed: int = 0) -> nn.Module:
    """A fresh network of family `arch`: [B, 3, 32, 32] -> [B, 10] logits.

    `asym_seed` addresses the fixed pieces (W-Asym masks and values, FiGLU's F); it is shared by
    every member of a zoo. Call `init_weights` to give the trainable entries a member's init.
    """
    return FAMILIES[check_family(arch)].build(asym_seed)


def fixed_digest(net: nn.Module) -> str:
    """sha256 of a network's fixed tensors (its buffers: W-Asym masks and values, FiGLU's F), by
    name, dtype, shape and bytes. A zoo records it, because those tensors come from numpy's
    Generator, whose streams numpy does not promise to keep across releases."""
    h = hashlib.sha256()
    for name, b in sorted(net.named_buffers()):
        t = b.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@torch.no_grad()
def init_weights(net: nn.Module, seed: int, scheme: str = "kaiming_normal", family: str | None = None) -> nn.Module:
    """A member's initialisation, from `seed` alone. GroupNorm affines are 1 / 0 in every scheme.

    "kaiming_normal": conv/linear weights N(0, 2 / fan_in), biases zero.
    "companion": what the paper's companion code ends up with: its `_weights_init` (kaiming
    normal weights) runs for the standard and sigma-Asym nets, but its W-Asym `SparseResNet` never
    calls it, so there every weight keeps PyTorch's default U(+-1/sqrt(fan_in)); the head bias
    keeps PyTorch's default U(+-1/sqrt(fan_in)) in every family. `family` picks the rule
    (`Family.companion_init`).

    Masked (fixed) entries of a trainable tensor are kept at zero: they never reach the forward
    pass, and zero keeps them inert under AdamW's decoupled weight decay.
    """
    if scheme not in INITS:
        raise ValueError(f"init={scheme!r}: must be one of {', '.join(INITS)}")
    uniform_weights = scheme == "companion" and FAMILIES[check_family(family)].companion_init == "torch_default"
    gen = torch.Generator().manual_seed(seed)
    for module in net.modules():
        for leaf, p in module.named_parameters(recurse=False):
            fan_in = p.shape[1] * math.prod(p.shape[2:]) if p.dim() > 1 else None
            if isinstance(module, nn.GroupNorm):
                p.fill_(1.0 if leaf == "weight" else 0.0)
            elif leaf == "weight" and uniform_weights:
                p.copy_(_uniform(p.shape, fan_in, gen))
            elif leaf == "weight":
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / p[0].numel()) ** 0.5)
            elif scheme == "companion":
                p.copy_(_uniform(p.shape, module.weight.shape[1], gen))  # nn.Linear's default bias
            else:
                p.zero_()
            mask = getattr(module, f"{leaf}_mask", None)
            if mask is not None:
                p.mul_(mask)
    return net


def _uniform(shape, fan_in: int, gen: torch.Generator) -> torch.Tensor:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for conv and linear weights
    (kaiming_uniform_ with a = sqrt(5)) and for linear biases."""
    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound
