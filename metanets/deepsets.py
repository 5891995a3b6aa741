"""DeepSets over scalar parameters (Zaheer et al. 2017; paper Table 3): every trainable entry of a
member is one set element, so the prediction ignores where an entry sits and is invariant to
every permutation of the flat vector, hidden-channel permutations included.

    phi: Linear(1, 64) - LN - ReLU,  mean over elements,  rho: 2 x [Linear(64, 64) - LN - ReLU],
    Linear(64, 1)                                          (8,897 parameters, paper Table 9)

Memory. phi's activations are [B, P, 64]: 128 x 78,042 x 64 floats is 2.6 GB each, and autograd
keeps several. The mean is a sum over elements, so `chunked_mean` walks the elements in chunks of
`chunk` and, while training, wraps each chunk in `torch.utils.checkpoint`: only the chunk's input
and its [B, 64] partial sum are kept, and the backward pass recomputes one chunk at a time. The
result is exact (same sum, another order), the peak is about one chunk's activations, and the
price is a second phi forward during backward.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .base import Metanet

HIDDEN = 64  # width of phi and rho
CHUNK = 8192  # set elements per chunk; 128 x 8192 x 64 floats = 268 MB per activation


def mlp_block(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.LayerNorm(d_out), nn.ReLU())


def _phi_sum(phi: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return phi(x).sum(dim=1)


def chunked_mean(phi: nn.Module, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """mean over n of phi(x[:, n]) for x [B, N, D] -> [B, H], `chunk` elements at a time."""
    if x.shape[1] <= chunk:  # one chunk: checkpointing would only add a recompute
        return phi(x).mean(dim=1)
    total = 0
    for start in range(0, x.shape[1], chunk):
        part = x[:, start : start + chunk]
        if torch.is_grad_enabled():
            total = total + checkpoint(_phi_sum, phi, part, use_reentrant=False)
        else:
            total = total + _phi_sum(phi, part)
    return total / x.shape[1]


class SetReadout(nn.Module):
    """[B, N, D] set -> [B, 1]: phi per element, mean, then `n_rho` hidden blocks and a linear.
    The companion code's DSSeqReadout; DMC uses it over conv positions, DeepSets over scalars."""

    def __init__(self, d_in: int, hidden: int = HIDDEN, *, n_rho: int, chunk: int = CHUNK):
        super().__init__()
        if chunk < 1:
            raise ValueError(f"chunk={chunk!r}: must be an int >= 1")
        self.chunk = chunk
        self.phi = mlp_block(d_in, hidden)
        self.rho = nn.Sequential(*[mlp_block(hidden, hidden) for _ in range(n_rho)], nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rho(chunked_mean(self.phi, x, self.chunk))


class Elements(nn.Module):
    """[B, P] -> [B, P, 1]: each scalar parameter becomes a one-feature set element."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-1)


class DeepSets(Metanet):
    def __init__(self, layout, *, hidden: int = HIDDEN, chunk: int = CHUNK):
        super().__init__(layout)
        self.head = nn.Sequential(Elements(), SetReadout(1, hidden, n_rho=2, chunk=chunk))
