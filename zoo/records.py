"""What training produces for one member: the unit that the weight store commits."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .members import MemberConfig

STATUSES = ("ok", "diverged")
# A member below this test accuracy "ended at chance": finite loss, ~10% on 10 classes (seen at lr > ~0.37).
# Not 0.10 or 0.11: a net that predicts one class scores that class's share of the test images, and on
# a seeded subset of 256 (the smoke preset) the ten shares spread about 0.10 +- 0.02, the largest near 0.14.
AT_CHANCE_ACC = 0.15
METRICS = (  # recorded for every member: all NaN for a "diverged" one; an "ok" one's losses may overflow
    "train_acc",  # fraction correct on the un-augmented training set (or its recipe subset)
    "train_loss",  # mean cross-entropy with the member's label smoothing
    "train_loss_plain",  # mean cross-entropy without label smoothing
    "test_acc",
    "test_loss",
    "test_loss_plain",
)


@dataclass
class MemberResult:
    config: MemberConfig  # hyperparameters, seeds and member id
    status: str  # "ok" | "diverged": a non-finite step ("freeze") or final weights ("skip"), zoo.train
    diverged_epoch: int | None  # 0-based epoch of the first non-finite loss or gradient; None if none
    metrics: dict[str, float]  # keys: METRICS
    params_init: np.ndarray  # [P] float32, zoo.flatten order, before the first step
    params_final: np.ndarray  # [P] float32 after the last step taken ("skip": may be non-finite)
    wall_time_s: float  # this member's share of training wall time
    device: str  # e.g. "cpu", "cuda:0 (NVIDIA H200)"
    data_sha: str  # Cifar10.identity["sha256"] of the data trained on
    checkpoints: dict[int, tuple[np.ndarray, dict[str, float]]] = field(default_factory=dict)
    # epoch -> (params [P] float32, metrics) at the end of that epoch; epoch 0 = initialisation

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r}: must be one of {STATUSES}")
        missing = set(METRICS) - set(self.metrics)
        if missing:
            raise ValueError(f"metrics is missing {sorted(missing)}")
