"""DMC, a 1D CNN over the flat parameter vector (Eilertsen et al. 2020; paper Table 3).

Six Conv1d(kernel 5)-ReLU-BatchNorm-MaxPool(2) stages widen 1 -> 2 -> 4 -> 8 -> 16 -> 32 -> 64,
then four Conv1d(64, 64, 5)-ReLU-BatchNorm, with MaxPool(2) after the 2nd and 4th, then a
DeepSets readout over the remaining positions (Linear(64, 64)-LN-ReLU, mean, Linear(64, 64)-LN-
ReLU, Linear(64, 1)). 105,357 parameters, as in paper Table 9. Convolutions are unpadded, as in
the companion code, so the flat vector must hold at least `MIN_LENGTH` entries.
"""
from __future__ import annotations

from torch import nn

from .base import Metanet, MetanetSpec
from .deepsets import SetReadout

HIDDEN = 64  # channels of the last stages
KERNEL = 5


def _stage(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers = [nn.Conv1d(c_in, c_out, KERNEL), nn.ReLU(), nn.BatchNorm1d(c_out)]
    return nn.Sequential(*layers, nn.MaxPool1d(2)) if pool else nn.Sequential(*layers)


def _plan(hidden: int) -> list[tuple[int, int, bool]]:
    """(c_in, c_out, pool) of every conv stage."""
    widths = [1] + [hidden // 2**k for k in (5, 4, 3, 2, 1, 0)]
    plan = [(a, b, True) for a, b in zip(widths[:-1], widths[1:])]
    return plan + [(hidden, hidden, i % 2 == 1) for i in range(4)]


def min_length(hidden: int = HIDDEN) -> int:
    """Shortest input that leaves at least one position after every unpadded conv and pool."""
    n = 1
    for _, _, pool in reversed(_plan(hidden)):
        n = (2 * n if pool else n) + KERNEL - 1
    return n


MIN_LENGTH = min_length()  # 2,044


class Conv(nn.Module):
    """[B, P] -> [B, positions, channels] for the readout."""

    def __init__(self, hidden: int):
        super().__init__()
        self.stages = nn.Sequential(*[_stage(*s) for s in _plan(hidden)])

    def forward(self, x):
        return self.stages(x.unsqueeze(1)).transpose(1, 2)


class DMC(Metanet):
    def __init__(self, layout, *, hidden: int = HIDDEN):
        super().__init__(layout)
        if hidden < 32 or hidden % 32:
            raise ValueError(f"hidden={hidden!r}: must be a multiple of 32 (six halvings down to 1 channel)")
        if self.layout.size < min_length(hidden):
            raise ValueError(f"DMC needs at least {min_length(hidden)} parameters per member; "
                             f"this layout has {self.layout.size}")
        self.head = nn.Sequential(Conv(hidden), SetReadout(hidden, hidden, n_rho=1))


SPEC = MetanetSpec(name="dmc", display="DMC", build=DMC, options={"hidden": HIDDEN})
