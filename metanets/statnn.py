"""StatNN (Unterthiner et al. 2020; paper Table 3): 7 statistics of every parameter tensor
(mean, variance, min, max, 25/50/75% quantiles) feed an MLP. A permutation of hidden channels
moves entries only within their tensors, so the statistics, and the prediction, are invariant.

    features [B, 7 T] - Linear(7 T, 256) - ReLU - LN - Linear(256, 256) - ReLU - LN - Linear(256, 1)

T counts the layout's non-empty tensors. Empty tensors are skipped rather than given 7 constant
features (the companion code writes zeros): W-Asym's stem conv is fully fixed, so that family has
T = 28 and 196 features (117,505 parameters) against 29 and 203 (119,297, paper Table 9) for the
standard and sigma-Asym families. The variance is the population one (divide by n), so a tensor
with a single entry is well defined.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Metanet, MetanetSpec

HIDDEN = 256
QUANTILES = (0.25, 0.5, 0.75)
N_STATS = 4 + len(QUANTILES)


def tensor_stats(v: torch.Tensor) -> torch.Tensor:
    """[B, n] entries of one tensor -> [B, 7] statistics."""
    q = torch.quantile(v, torch.tensor(QUANTILES, dtype=v.dtype, device=v.device), dim=1).T
    moments = [v.mean(1), v.var(1, correction=0), v.amin(1), v.amax(1)]
    return torch.cat([torch.stack(moments, 1), q], 1)


class StatNN(Metanet):
    def __init__(self, layout, *, hidden: int = HIDDEN):
        super().__init__(layout)
        self.tensors = [t for t in self.layout.tensors if t.size > 0]
        n_features = N_STATS * len(self.tensors)
        self.head = nn.Sequential(
            nn.Linear(n_features, hidden), nn.ReLU(), nn.LayerNorm(hidden),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.LayerNorm(hidden),
            nn.Linear(hidden, 1),
        )

    def featurize(self, x: torch.Tensor) -> torch.Tensor:
        x = super().featurize(x)
        return torch.cat([tensor_stats(x[:, t.offset : t.offset + t.size]) for t in self.tensors], 1)


SPEC = MetanetSpec(name="statnn", display="StatNN", build=StatNN, options={"hidden": HIDDEN}, invariant=True)
