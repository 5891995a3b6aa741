"""LmcConfig: every setting of the linear mode connectivity study, declared once (the CLI flags
and presets derive from it)."""
from __future__ import annotations

from dataclasses import dataclass

from zoo.device import check_device
from zoo.validate import check, is_int

from ..study import StudyConfig, check_common

from ..mli import MliConfig, resolved


@dataclass(frozen=True)
class LmcConfig(StudyConfig):
    OUT_NAME = "lmc"  # outputs beside the zoo when out is None (a class constant, not a field)

    zoo: str  # path of the zoo in the store; it needs replicates >= 2 (GenerateConfig.replicates)
    out: str | None = None  # output folder; None = <zoo>/lmc
    data: str | None = None  # CIFAR-10 root; None = $SYMZOO_DATA or ~/.cache/symzoo
    families: tuple[str, ...] | None = None  # subset of the zoo's families; None = all of them
    pairs: int | None = None  # member indices per family whose replicates are paired (first N by index), >= 1; None = all
    alphas: int = 25  # points per curve, evenly spaced in [0, 1], odd and >= 3 (alpha = 1/2 on the grid)
    n_eval: int | None = None  # seeded subset of the recipe's test images, >= 1; None = all of them
    eval_seed: int = 0  # seed of that subset, >= 0
    align: bool = True  # also standard pairs aligned by weight matching (the "standard_aligned" row)
    align_iter: int = 100  # weight matching's coordinate-descent passes, >= 1 (zoo.align max_iter)
    device: str = "auto"  # auto (cuda if available) | cpu | cuda | cuda:N
    workers: int | None = None  # CPU processes, >= 1; None = os.cpu_count(); CUDA uses one
    batch: int = 500  # images per forward pass, >= 1
    points: int | None = None  # alphas of one pair per forward (at most all of them), >= 1; None = 1 on CPU, 64 on CUDA
    chunk: int = 16  # pairs per task and per curve file (the unit of resume), >= 1

    def __post_init__(self):
        check_common(self, optional=("pairs", "n_eval", "workers", "points"),
                     lows={"eval_seed": 0, "align_iter": 1, "batch": 1, "chunk": 1})
        # the barrier reads L(1/2) off the grid, so 1/2 must be a grid point
        check("alphas", self.alphas, is_int(self.alphas) and self.alphas >= 3 and self.alphas % 2 == 1,
              "an odd int >= 3")
        check("align", self.align, isinstance(self.align, bool), "a bool")
        check_device(self.device)


    def evaluation(self) -> MliConfig:
        """The MLI evaluator's settings for these curves, resolved: un-augmented images, fp32, no
        smoothing (each task's rows carry label_smoothing 0)."""
        return resolved(MliConfig(zoo=self.zoo, data=self.data, alphas=self.alphas, device=self.device,
                                  workers=self.workers, batch=self.batch, points=self.points, chunk=self.chunk))
