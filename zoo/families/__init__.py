"""The family registry: build a network by name and give it a seeded initialisation."""
from __future__ import annotations

import hashlib

import torch
from torch import nn

from . import sigma_asym, standard, w_asym

FAMILIES = {"standard": standard.build, "w_asym": w_asym.build, "sigma_asym": sigma_asym.build}
LABELS = {"standard": "Standard ResNet-8", "w_asym": "W-Asym ResNet-8", "sigma_asym": "σ-Asym ResNet-8"}  # for tables
TEX_LABELS = {f: label.replace("σ", r"$\sigma$") for f, label in LABELS.items()}


def check_family(arch: str) -> str:
    if arch not in FAMILIES:
        raise ValueError(f"family={arch!r}: unknown; allowed: {', '.join(FAMILIES)}")
    return arch


def build(arch: str, asym_seed: int = 0) -> nn.Module:
    """A fresh network of family `arch`: [B, 3, 32, 32] -> [B, 10] logits.

    `asym_seed` addresses the fixed pieces (W-Asym masks and values, FiGLU's F); it is shared by
    every member of a zoo. Call `init_weights` to give the trainable entries a member's init.
    """
    return FAMILIES[check_family(arch)](asym_seed)


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
def init_weights(net: nn.Module, seed: int) -> nn.Module:
    """Kaiming-normal conv/linear weights, zero biases, unit/zero norm affines, from `seed` alone.

    Masked (fixed) entries of a trainable tensor are kept at zero: they never reach the forward
    pass, and zero keeps them inert under AdamW's decoupled weight decay.
    """
    gen = torch.Generator().manual_seed(seed)
    for module_name, module in net.named_modules():
        for leaf, p in module.named_parameters(recurse=False):
            if isinstance(module, nn.GroupNorm):
                p.fill_(1.0 if leaf == "weight" else 0.0)
            elif leaf == "weight":
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / p[0].numel()) ** 0.5)
            else:
                p.zero_()
            mask = getattr(module, f"{leaf}_mask", None)
            if mask is not None:
                p.mul_(mask)
    return net
