"""MLP metanetwork (paper Table 3): the flat vector as an ordinary feature vector, so it sees
every symmetry-related copy of a network as a different input.

    Linear(P, 64) - ReLU - LayerNorm - Linear(64, 1)
    (4,994,945 parameters for P = 78,042; 3,880,833 for W-Asym's 60,634; paper Table 9)
"""
from __future__ import annotations

from torch import nn

from .base import Metanet, MetanetSpec

HIDDEN = 64


class MLP(Metanet):
    def __init__(self, layout, *, hidden: int = HIDDEN):
        super().__init__(layout)
        self.head = nn.Sequential(
            nn.Linear(self.layout.size, hidden), nn.ReLU(), nn.LayerNorm(hidden), nn.Linear(hidden, 1)
        )


SPEC = MetanetSpec(name="mlp", display="MLP", build=MLP, options={"hidden": HIDDEN})
