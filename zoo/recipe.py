"""The training recipe every member shares, as one frozen config (the paper's companion code,
github.com/cptq/asymmetric-networks, of FFCV's CIFAR example lineage).

A member's own hyperparameters (lr, weight decay, label smoothing, epochs, seed) live in its
`MemberConfig`; the `Recipe` holds what is common to a whole zoo: batch size, schedule shape,
augmentation, data subset, checkpoints and precision. The defaults are the paper's; `overrides()`
names whatever a run changed, so reports can say so.

Learning-rate schedule (FFCV CIFAR example lineage): per iteration, the factor rises linearly from
0 at step 0 to 1 at the peak epoch and falls linearly to 0 at the member's last epoch; step k
trains with the factor at time k / steps_per_epoch (in epochs), so the very first step has lr 0 as
in the companion code. The peak is at min(warmup_epochs, epochs / 2): a member trained for fewer
than 2 * warmup_epochs epochs (a short test or smoke run) gets a symmetric triangle instead of a
schedule that never comes down.

Non-finite steps (`nonfinite`): the companion trains in fp16 under a GradScaler, which skips any
step whose unscaled gradient holds inf or NaN (parameters, AdamW moments and step count stay as
they were; the lr schedule moves on), and the paper counts a member as diverged only when its
final weights are NaN. "skip" is that policy, member by member; "freeze" (symzoo's before the
option) stops a member at its first non-finite loss or gradient. What each records: `zoo.train`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from .validate import check as _check
from .validate import from_dict, is_int as _is_int
from .data import Cifar10
from .families import INITS, init_weights
from .members import MemberConfig

PRECISIONS = ("auto", "fp32", "bf16")
NONFINITE = ("skip", "freeze")  # what a non-finite step does to a member (module doc)
# What a field meant in zoos recorded before it existed: such a zoo resumes and reads as it was made.
LEGACY = {"init": "kaiming_normal", "nonfinite": "freeze"}
IMAGE_SIDE = 32  # CIFAR-10 images are 32 x 32


@dataclass(frozen=True, kw_only=True)
class Recipe:
    batch_size: int = 512  # images per optimizer step per member; the train tail is dropped
    warmup_epochs: float = 5.0  # epoch of the lr peak (>= 0); capped at epochs / 2
    epochs: int | None = None  # override every member's sampled epoch count (>= 1); None = sampled
    n_train: int | None = None  # seeded random subset of the training set (images); None = all
    n_test: int | None = None  # seeded random subset of the test set (images); None = all
    subset_seed: int = 0  # seed of that subset (>= 0)
    flip: bool = True  # random horizontal flip with probability 1/2
    translate: int = 2  # max random shift in px per axis (0..16), padding filled with the mean
    cutout: int = 4  # side in px of the Cutout square filled with the mean (0..32; 0 = off)
    checkpoints: tuple[int, ...] = ()  # epochs at whose end params + metrics are recorded; 0 = init
    precision: str = "auto"  # "auto" (bf16 autocast on cuda, fp32 on cpu) | "fp32" | "bf16"
    init: str = "companion"  # trainable-weight init, zoo.families.init_weights: "companion" | "kaiming_normal"
    nonfinite: str = "skip"  # a step with a non-finite loss or gradient: "skip" it (GradScaler) | "freeze" the member

    def __post_init__(self):
        _check("batch_size", self.batch_size, _is_int(self.batch_size) and self.batch_size >= 1, "an int >= 1")
        _check("warmup_epochs", self.warmup_epochs,
               isinstance(self.warmup_epochs, (int, float)) and not isinstance(self.warmup_epochs, bool)
               and 0 <= self.warmup_epochs < float("inf"),
               "a finite number >= 0")
        for name in ("epochs", "n_train", "n_test"):
            v = getattr(self, name)
            _check(name, v, v is None or (_is_int(v) and v >= 1), "None or an int >= 1")
        _check("subset_seed", self.subset_seed, _is_int(self.subset_seed) and self.subset_seed >= 0, "an int >= 0")
        _check("flip", self.flip, isinstance(self.flip, bool), "a bool")
        _check("translate", self.translate, _is_int(self.translate) and 0 <= self.translate <= 16, "an int in 0..16")
        _check("cutout", self.cutout, _is_int(self.cutout) and 0 <= self.cutout <= IMAGE_SIDE, "an int in 0..32")
        _check("precision", self.precision, self.precision in PRECISIONS, f"one of {PRECISIONS}")
        _check("init", self.init, self.init in INITS, f"one of {INITS}")
        _check("nonfinite", self.nonfinite, self.nonfinite in NONFINITE, f"one of {NONFINITE}")
        object.__setattr__(self, "checkpoints", _checkpoints(self.checkpoints))

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        return from_dict(cls, d, "recipe")

    @classmethod
    def recorded(cls, d: dict) -> "Recipe":
        """The recipe a zoo's manifest records; a field the zoo predates reads as it was then (LEGACY)."""
        return cls.from_dict({**LEGACY, **d})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["checkpoints"] = list(self.checkpoints)
        return d

    def overrides(self) -> dict:
        """The fields that differ from the paper's recipe (the defaults)."""
        paper = Recipe().to_dict()
        return {k: v for k, v in self.to_dict().items() if v != paper[k]}

    def init_weights(self, net, cfg: MemberConfig):
        """`net` given the member's initialisation under this recipe's scheme."""
        return init_weights(net, cfg.seed, self.init, cfg.family)

    def member_epochs(self, cfg: MemberConfig) -> int:
        """Epochs the member actually trains: the recipe's override, else its sampled count."""
        return self.epochs if self.epochs is not None else cfg.epochs

    def apply_subset(self, data: Cifar10) -> Cifar10:
        """The recipe's seeded subset of `data`; idempotent (a subset of the right size is kept)."""
        if self.n_train is None and self.n_test is None:
            return data
        return data.subset(self.n_train, self.n_test, self.subset_seed)

    def steps_per_epoch(self, n_train: int) -> int:
        if n_train < self.batch_size:
            raise ValueError(f"batch_size={self.batch_size}: larger than the {n_train} training images "
                             "(drop_last would leave no step); lower batch_size or raise n_train")
        return n_train // self.batch_size

    def lr_factors(self, epochs: int, steps_per_epoch: int) -> np.ndarray:
        """[epochs * steps_per_epoch] multipliers of the member's lr, one per step (module doc)."""
        peak = min(float(self.warmup_epochs), epochs / 2)
        t = np.arange(epochs * steps_per_epoch) / steps_per_epoch  # in epochs
        rise = t / peak if peak > 0 else np.ones_like(t)
        return np.where(t < peak, rise, (epochs - t) / (epochs - peak))

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """bf16 when the recipe (or "auto" on cuda) asks for mixed precision, else None (fp32)."""
        if self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda"):
            return torch.bfloat16
        return None


def _checkpoints(value) -> tuple[int, ...]:
    ok = isinstance(value, (tuple, list)) and all(_is_int(e) and e >= 0 for e in value)
    _check("checkpoints", value, ok, "a list of ints >= 0 (epochs; 0 = initialisation)")
    return tuple(sorted({int(e) for e in value}))
