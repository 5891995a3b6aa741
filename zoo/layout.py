"""The flat weight space of a family: canonical order, per-tensor layout, flatten/unflatten.

Canonical order is `net.named_parameters()` order (module registration order, see
`zoo.families.resnet`). For each parameter only the trainable entries enter the flat vector, in row-major
order; a parameter `p` whose module carries a bool buffer `p_mask` contributes `p[p_mask]`.
Fixed entries (W-Asym) and fixed buffers (FiGLU's F) never enter it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class TensorSpec:
    name: str  # parameter name, e.g. "blocks.0.conv1.weight"
    shape: tuple[int, ...]  # full tensor shape, fixed entries included
    offset: int  # first index of this tensor's trainable entries in the flat vector
    size: int  # number of trainable entries (== prod(shape) unless masked)


@dataclass(frozen=True)
class Layout:
    tensors: tuple[TensorSpec, ...]  # canonical order

    @property
    def size(self) -> int:
        """Total number of trainable entries, P."""
        return sum(t.size for t in self.tensors)

    def split(self, flat):
        """[..., P] array or tensor -> {name: [..., size]} views, in canonical order."""
        if flat.shape[-1] != self.size:
            raise ValueError(f"flat vector length {flat.shape[-1]} != layout size {self.size}")
        return {t.name: flat[..., t.offset : t.offset + t.size] for t in self.tensors}

    def to_json(self) -> list[dict]:
        return [{"name": t.name, "shape": list(t.shape), "offset": t.offset, "size": t.size} for t in self.tensors]

    @classmethod
    def from_json(cls, tensors: list[dict]) -> "Layout":
        """The inverse of `to_json` (e.g. a zoo manifest's per-family layout), validated."""
        if not isinstance(tensors, (list, tuple)) or not tensors:
            raise ValueError(f"layout={type(tensors).__name__}: must be a non-empty list of tensor dicts")
        specs = tuple(TensorSpec(t["name"], tuple(t["shape"]), int(t["offset"]), int(t["size"])) for t in tensors)
        ends = [s.offset + s.size for s in specs]
        if [s.offset for s in specs] != [0] + ends[:-1]:
            raise ValueError("layout: tensor offsets must be contiguous and start at 0")
        return cls(specs)


def _mask_of(net: nn.Module, name: str) -> torch.Tensor | None:
    module_name, _, leaf = name.rpartition(".")
    module = net.get_submodule(module_name) if module_name else net
    return getattr(module, f"{leaf}_mask", None)


def trainable_masks(net: nn.Module) -> dict[str, torch.Tensor | None]:
    """{parameter name: bool mask of trainable entries, or None when all are trainable}."""
    return {name: _mask_of(net, name) for name, _ in net.named_parameters()}


def layout(net: nn.Module) -> Layout:
    specs, offset = [], 0
    for name, p in net.named_parameters():
        mask = _mask_of(net, name)
        size = int(mask.sum()) if mask is not None else p.numel()
        specs.append(TensorSpec(name, tuple(p.shape), offset, size))
        offset += size
    return Layout(tuple(specs))


def flatten(net: nn.Module) -> torch.Tensor:
    """The [P] float32 vector of trainable entries in canonical order (a copy, on CPU)."""
    parts = []
    for name, p in net.named_parameters():
        mask = _mask_of(net, name)
        parts.append((p[mask] if mask is not None else p.reshape(-1)).detach().float().cpu())
    return torch.cat(parts)


@torch.no_grad()
def unflatten(net: nn.Module, vec) -> nn.Module:
    """Write a [P] vector into the trainable entries of `net`; fixed entries are left untouched."""
    vec = torch.as_tensor(np.asarray(vec) if not torch.is_tensor(vec) else vec)
    lay = layout(net)
    if vec.ndim != 1 or vec.numel() != lay.size:
        raise ValueError(f"vec has shape {tuple(vec.shape)}; expected ({lay.size},) for this family")
    for spec, (name, p) in zip(lay.tensors, net.named_parameters()):
        chunk = vec[spec.offset : spec.offset + spec.size].to(p.device, p.dtype)
        mask = _mask_of(net, name)
        if mask is not None:
            p[mask] = chunk
        else:
            p.copy_(chunk.view_as(p))
    return net
