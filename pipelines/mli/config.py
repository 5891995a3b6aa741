"""MliConfig: every setting of the MLI study, declared once (the CLI flags and presets derive from it)."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

from zoo.device import check_device, resolve_device
from zoo.validate import check, check_ray_fields

from ..study import StudyConfig, check_common

CUDA_POINTS = 64  # default alphas of one member per packed CUDA forward (a whole curve of <= 64); benchmarks/mli_speed.py
# Which images L(alpha) is measured on (the package docstring says why each exists):
EVAL_DATA = ("clean", "augmented_fixed", "augmented_per_alpha")
EXECUTORS = ("local", "ray")  # MliConfig.executor: this process (or its CPU pool) | Ray tasks (cluster.mli)


@dataclass(frozen=True)
class MliConfig(StudyConfig):
    OUT_NAME = "mli"  # outputs beside the zoo when out is None (a class constant, not a field)

    zoo: str  # path of the zoo in the store (a folder made by zoo.store.init_zoo)
    out: str | None = None  # output folder; None = <zoo>/mli
    data: str | None = None  # CIFAR-10 root; None = $SYMZOO_DATA or ~/.cache/symzoo
    families: tuple[str, ...] | None = None  # subset of the zoo's families; None = all of them
    members: int | None = None  # first N members (by index) per family, diverged included, >= 1; None = all
    alphas: int = 25  # points per curve, evenly spaced in [0, 1], >= 3
    n_eval: int | None = None  # seeded subset of the recipe's train images, >= 1; None = all
    eval_seed: int = 0  # seed of that subset and of the augmentation draws, >= 0
    eval_data: str = "clean"  # clean | augmented_fixed (one copy) | augmented_per_alpha (companion-like)
    device: str = "auto"  # auto (cuda if available) | cpu | cuda | cuda:N (cuda:N with executor local only)
    workers: int | None = None  # CPU processes of executor local, >= 1; None = os.cpu_count(); CUDA uses one
    batch: int = 500  # images per forward pass, >= 1
    points: int | None = None  # alphas of one member per forward, >= 1; None = 1 on CPU, CUDA_POINTS on CUDA
    chunk: int = 16  # members per task and per curve file (the unit of resume), >= 1
    autocast: bool = False  # bf16 autocast, CUDA only; off: second differences are small
    top: int = 20  # curves per family panel in figure 5 (lowest recorded train loss), >= 1
    # local by default, as metanets: a one-machine run needs no Ray, and Ray's curves are the same
    executor: str = "local"  # "local" (this process or its CPU pool) | "ray" (each task a Ray task: cluster.mli)
    address: str | None = None  # Ray address (executor ray only); None = $RAY_ADDRESS, else Ray embedded here
    # a whole GPU per task by default, as the local path runs one task at a time on its GPU (shares not yet measured)
    gpus_per_task: float = 1.0  # GPU share of each Ray task where Ray has GPUs: (0, 1] or whole GPUs; 0 = CPU only

    def __post_init__(self):
        check_common(self, optional=("members", "n_eval", "workers", "points"),
                     lows={"alphas": 3, "eval_seed": 0, "batch": 1, "chunk": 1, "top": 1})
        check("eval_data", self.eval_data, self.eval_data in EVAL_DATA, " | ".join(EVAL_DATA))
        check_device(self.device)
        check("autocast", self.autocast, isinstance(self.autocast, bool), "a bool")
        check("autocast", self.autocast, not (self.autocast and self.device == "cpu"), "False on device cpu")
        self._check_executor()

    def _check_executor(self) -> None:
        check_ray_fields(self.executor, EXECUTORS, self.address, "gpus_per_task", self.gpus_per_task)
        local = self.executor == "local"
        check("workers", self.workers, self.workers is None or local, "unset with executor ray (one task per Ray CPU)")
        check("device", self.device, local or not self.device.startswith("cuda:"),
              "auto, cpu or cuda with executor ray (Ray gives each task its GPU)")

    def on_cpu(self) -> bool:
        """Whether the tasks run on CPU; a named device is taken at its word (a Ray worker's GPU need not be here)."""
        return (resolve_device(self.device) if self.device == "auto" else torch.device(self.device)).type == "cpu"

    def n_workers(self) -> int:
        return (self.workers or os.cpu_count() or 1) if self.on_cpu() else 1

    def n_points(self) -> int:
        return self.points or (1 if self.on_cpu() else CUDA_POINTS)


def resolved(cfg: MliConfig, device: str | None = None) -> MliConfig:
    """`cfg` on `device`, where its tasks run (None: the one cfg.device names here, the GPU when
    there is one), autocast checked against it.

    The stage runs on the resolved config, so n_workers / n_points see "cpu" or "cuda", never "auto".
    """
    device = resolve_device(cfg.device) if device is None else torch.device(device)
    check("autocast", cfg.autocast, not (cfg.autocast and device.type == "cpu"),
          f"False when device {cfg.device!r} resolves to cpu")
    return replace(cfg, device=str(device))
