"""DeepSets over scalar parameters (Zaheer et al. 2017; paper Table 3): every trainable entry of a
member is one set element, so the prediction ignores where an entry sits and is invariant to
every permutation of the flat vector, hidden-channel permutations included.

    phi: Linear(1, 64) - LN - ReLU,  mean over elements,  rho: 2 x [Linear(64, 64) - LN - ReLU],
    Linear(64, 1)                                          (8,897 parameters, paper Table 9)

phi reads one scalar, so `ScalarPhi` computes it in closed form (same parameters, same function).

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

from .base import Metanet, MetanetSpec

HIDDEN = 64  # width of phi and rho
CHUNK = 8192  # set elements per chunk; 128 x 8192 x 64 floats = 268 MB per activation


def mlp_block(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.LayerNorm(d_out), nn.ReLU())


class ScalarPhi(nn.Module):
    """Linear(1, H) - LayerNorm(H) - ReLU for scalar set elements, in closed form: [B, N, 1] ->
    [B, N, H], the same parameters and function as the three layers, about 2.5x faster.

    With h = x w + b, LayerNorm centres h to x a + c (a = w - mean w, c = b - mean b) and divides
    by sqrt(x^2 A + 2 x Bc + C + eps), where A, Bc, C are the means of a*a, a*c, c*c. So the
    output is relu(u @ [gamma a; gamma c] + beta) with u = [x r, r] and r that scalar rsqrt: one
    rank-2 matmul per element instead of a Linear and a 64-wide normalisation.
    """

    def __init__(self, hidden: int):
        super().__init__()
        self.linear, self.norm = nn.Linear(1, hidden), nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.linear.weight[:, 0], self.linear.bias
        a, c = w - w.mean(), b - b.mean()
        r = torch.rsqrt(x * x * (a * a).mean() + 2 * x * (a * c).mean() + (c * c).mean() + self.norm.eps)
        u = torch.cat([x * r, r], dim=-1)  # [B, N, 2]
        mix = torch.stack([self.norm.weight * a, self.norm.weight * c])  # [2, H]
        out = torch.addmm(self.norm.bias, u.reshape(-1, 2), mix)
        return torch.relu_(out).reshape(*x.shape[:-1], -1)


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
        self.phi = ScalarPhi(hidden) if d_in == 1 else mlp_block(d_in, hidden)
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


# chunk only sets how much of phi is alive at once (module docstring): results are the same up to float
# summation order, so a rerun with another chunk reuses the finished runs.
SPEC = MetanetSpec(name="deepsets", display="DeepSets", build=DeepSets, options={"hidden": HIDDEN, "chunk": CHUNK},
                   memory_only={"chunk"}, invariant=True)
