"""The resident engine: one member at a time, the data set a uint8 tensor on the training device,
the augmentation batched tensor ops (`zoo.train.augment`), no DataLoader. The CPU path."""
from __future__ import annotations

from ..data import Cifar10
from ..members import MemberConfig
from ..recipe import Recipe
from ..records import MemberResult
from .augment import augment, draw_epoch
from .common import Resident, fit, resident


def resident_batches(res: Resident, recipe: Recipe, seed: int, epoch: int):
    """The member's augmented training batches of `epoch`: (x uint8 [B, 3, 32, 32], y [B])."""
    draw = draw_epoch(seed, epoch, len(res.train_y), recipe).to(res.train_x.device)
    for s in range(draw.order.shape[0]):
        idx = draw.order[s]
        yield augment(res.train_x[idx], draw.flip[s], draw.shift[s], draw.corner[s], recipe), res.train_y[idx]


def train_member(cfg: MemberConfig, data: Cifar10, recipe: Recipe, *, asym_seed: int = 0,
                 device="cpu") -> MemberResult:
    """Train one member on the resident path (module doc: data, randomness, divergence)."""
    res = resident(data, recipe, device)
    return fit(cfg, res, recipe, lambda epoch: resident_batches(res, recipe, cfg.seed, epoch),
               asym_seed=asym_seed, device=device)
