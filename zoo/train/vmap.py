"""Many members of one family as stacked tensors: the core of packed training and MLI.

A family's network is built once (its fixed buffers: W-Asym masks and values, FiGLU's F are
shared by the zoo). Members differ only in their trainable entries, so N members are a
[N, P] flat matrix, scattered into per-parameter tensors [N, *shape] and run with
`torch.func.functional_call` under `torch.func.vmap`. Fixed entries never enter the stack: the
masked modules apply eq. (2) with their own buffers inside the forward.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap

from ..layout import layout, trainable_masks


def stack_params(net: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """[N, P] flat trainable vectors -> {name: [N, *shape]} (masked-out entries are zero)."""
    lay, masks = layout(net), trainable_masks(net)
    n = flat.shape[0]
    out = {}
    for spec in lay.tensors:
        chunk = flat[:, spec.offset : spec.offset + spec.size]
        mask = masks[spec.name]
        if mask is None:
            out[spec.name] = chunk.reshape(n, *spec.shape)
        else:
            full = chunk.new_zeros(n, *spec.shape)
            full[:, mask.to(flat.device)] = chunk
            out[spec.name] = full
    return out


def unstack_params(net: nn.Module, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """{name: [N, *shape]} -> [N, P] flat trainable vectors (inverse of `stack_params`)."""
    masks = trainable_masks(net)
    parts = []
    for name, _ in net.named_parameters():
        p, mask = params[name], masks[name]
        parts.append(p[:, mask.to(p.device)] if mask is not None else p.reshape(p.shape[0], -1))
    return torch.cat(parts, dim=1)


def packed_forward(net: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """params {name: [N, *shape]}, x [N, B, 3, 32, 32] -> logits [N, B, 10]."""
    buffers = dict(net.named_buffers())

    def one(p, xb):
        return functional_call(net, (p, buffers), (xb,))

    return vmap(one)(params, x)
