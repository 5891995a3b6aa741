"""L(alpha) of (member, alpha) points: the images it is measured on, the interpolation, packed or
one-at-a-time forwards, and executor local (this process, or the process pool of the CPU path);
executor ray is cluster.mli, which runs the same Evaluator in Ray tasks."""
from __future__ import annotations

import contextlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from multiprocessing import get_context
from typing import Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from zoo.device import resolve_device
from zoo.families import fixed_digest
from zoo.recipe import Recipe
from zoo.train.augment import augment, draw_epoch
from zoo.train.evaluate import evaluate_flat, normalize, smoothed_ce
from zoo.train.vmap import packed_forward, stack_params

from ..study import recipe_images
from .config import MliConfig
from .metrics import alpha_grid

# ---------------------------------------------------------------------------------------------
# The images L(alpha) is measured on

EVAL_STREAM = 7  # sub-stream of eval_seed that picks the n_eval subset
ALPHA_STREAM = 8  # sub-stream of eval_seed that keys a member's per-alpha augmentation


def augmented_copy(x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented copy of (x [M, 3, 32, 32] uint8, y [M]): the training engine's draws and ops,
    with the whole set as one batch of epoch 0 of training seed `seed`."""
    draw = draw_epoch(seed, 0, len(y), replace(recipe, batch_size=len(y)))
    order = draw.order[0]
    return augment(x[order], draw.flip[0], draw.shift[0], draw.corner[0], recipe), y[order]


@dataclass(frozen=True)
class AlphaDraws:
    """A fresh augmentation of the eval set per (member, alpha) point, addressed: the draws are a
    pure function of (eval_seed, member index, alpha index). Member i of every family sees the
    same images at alpha_j, so families are compared paired, as their hyperparameters are."""

    recipe: Recipe  # the zoo's recipe: which ops (flip, translate, Cutout) and their sizes
    seed: int  # eval_seed
    members: tuple[int, ...]  # member index of each curve of the task, in its row order

    def draw(self, member: int, alpha: int, n: int) -> tuple[torch.Tensor, ...]:
        """(flip [n], shift [n, 2], corner [n, 2]) for image j of the set, of curve `member` at alpha index `alpha`.

        The training engine's draws with the whole set as one batch; image j takes the draws of
        position j (the data order is not used: a mean over the set does not depend on it)."""
        key = np.random.SeedSequence([self.seed, ALPHA_STREAM, self.members[member]]).generate_state(1)[0]
        d = draw_epoch(int(key), alpha, n, replace(self.recipe, batch_size=n))
        return d.flip[0], d.shift[0], d.corner[0]

    def view(self, x: torch.Tensor, member: int, alpha: int) -> torch.Tensor:
        """x [M, 3, 32, 32] uint8 as curve `member` sees it at alpha index `alpha`."""
        return augment(x, *(t.to(x.device) for t in self.draw(member, alpha, len(x))), self.recipe)


def eval_set(manifest: dict, cfg: MliConfig) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(x [M, 3, 32, 32] uint8, y [M], what they are): the zoo recipe's train images, as configured.

    For augmented_per_alpha the images are returned clean; AlphaDraws augments them per point."""
    x, y, recipe, about = recipe_images(manifest, cfg.data, "train", cfg.n_eval, cfg.eval_seed, EVAL_STREAM)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    if cfg.eval_data == "augmented_fixed":
        x, y = augmented_copy(x, y, recipe, cfg.eval_seed)
    return x, y, {**about, "eval_data": cfg.eval_data}


HOW = {  # eval_data -> how the images are shown, for describe()
    "clean": "un-augmented",
    "augmented_fixed": "one fixed augmented copy (the training augmentation, seed {seed}) shared by every point",
    "augmented_per_alpha": ("a fresh draw of the training augmentation per (member, alpha), addressed by "
                            "(eval_seed {seed}, member index, alpha index), as the companion code's augmenting loader"),
}


def describe(about: dict, alphas: int) -> str:
    """One sentence for table4.md and the report: which loss the curves hold."""
    how = HOW[eval_data_of(about)].format(seed=about["eval_seed"])
    subset = "" if about["n_eval"] is None else f"a seeded subset (eval_seed {about['eval_seed']}) of "
    return (f"L(α): mean training loss with each member's label smoothing, at {alphas} evenly spaced α, on "
            f"{subset}the zoo recipe's training images, {how} (eval_data: {eval_data_of(about)}): "
            f"{about['n_images']} images of {about['data']}.")


def eval_data_of(about: dict) -> str:
    """The eval_data of a measurement record; records written before eval_data hold `augmented` (a bool)."""
    if "eval_data" in about:
        return about["eval_data"]
    return "augmented_fixed" if about.get("augmented") else "clean"


# ---------------------------------------------------------------------------------------------
# Interpolation and forwards

def interpolate(theta0: torch.Tensor, theta_t: torch.Tensor, alphas: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """theta0, theta_t [N, P], alphas [A], rows [R] in 0..N*A-1 -> [R, P].

    Row r is member r // A at alpha r % A. At alpha 0 and 1 the result is exactly theta0 / theta_t.
    """
    n_alpha = len(alphas)
    m, a = rows // n_alpha, alphas.to(theta0)[rows % n_alpha].unsqueeze(1)
    return (1 - a) * theta0[m] + a * theta_t[m]


@torch.no_grad()
def single_loss(net: nn.Module, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, smoothing: float,
                *, batch: int = 500) -> float:
    """Mean smoothed cross-entropy of one [P] vector on x [M, 3, 32, 32] uint8, y [M]: a plain forward."""
    zoo.unflatten(net, flat)
    device = next(net.parameters()).device
    total = 0.0
    for start in range(0, len(y), batch):
        logits = net(normalize(x[start : start + batch].to(device)))
        yb = y[start : start + batch].to(device)
        total += F.cross_entropy(logits.float(), yb, label_smoothing=smoothing, reduction="sum").item()
    return total / len(y)


@torch.no_grad()
def packed_views_loss(net: nn.Module, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, smoothing: torch.Tensor,
                      draws: list[tuple[torch.Tensor, ...]], recipe: Recipe, *, batch: int = 500,
                      autocast: bool = False) -> torch.Tensor:
    """flat [R, P], each row on its own augmentation of x [M, 3, 32, 32] (draws[r]: flip [M], shift
    [M, 2], corner [M, 2]) -> [R] float64 mean smoothed loss; augmented batch by batch, so the R
    views never exist at once."""
    device, r = flat.device, flat.shape[0]
    params = stack_params(net.to(device), flat)
    flip, shift, corner = (torch.stack([d[k] for d in draws]).to(device) for k in range(3))  # [R, M], [R, M, 2] x2
    total = torch.zeros(r, dtype=torch.float64, device=device)
    for start in range(0, len(y), batch):
        xb, yb, sl = x[start : start + batch].to(device), y[start : start + batch].to(device), slice(start, start + batch)
        views = augment(xb.repeat(r, 1, 1, 1), flip[:, sl].flatten(), shift[:, sl].flatten(0, 1),
                        corner[:, sl].flatten(0, 1), recipe)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = packed_forward(net, params, normalize(views).view(r, len(yb), *xb.shape[1:]))
        total += smoothed_ce(logits, yb, smoothing.to(device)).sum(1).double()
    return (total / len(y)).cpu()


def _rows_loss(net, flat, rows, n_alpha, smoothing, x, y, views: AlphaDraws | None, *, batch, autocast) -> torch.Tensor:
    """[R] losses of rows (member r // n_alpha at alpha index r % n_alpha) whose vectors are flat [R, P]."""
    if views is not None:
        points = [(int(r) // n_alpha, int(r) % n_alpha) for r in rows]
        if len(rows) > 1:
            draws = [views.draw(m, a, len(y)) for m, a in points]
            return packed_views_loss(net, flat, x, y, smoothing, draws, views.recipe, batch=batch, autocast=autocast)
        x = views.view(x, *points[0])
    if len(rows) == 1:
        return torch.tensor([single_loss(net, flat[0], x, y, float(smoothing[0]), batch=batch)], dtype=torch.float64)
    return evaluate_flat(net, flat, x, y, smoothing, batch=batch, autocast=autocast)["loss"].double()


def curve_losses(net: nn.Module, theta0: torch.Tensor, theta_t: torch.Tensor, smoothing: torch.Tensor,
                 alphas: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, points: int, batch: int = 500,
                 autocast: bool = False, views: AlphaDraws | None = None) -> torch.Tensor:
    """theta0, theta_t [N, P], smoothing [N], alphas [A] -> L [N, A] (float64, CPU).

    A packed forward holds `points` consecutive alphas of one member (the rest at the curve's end),
    never rows of two members: a forward's shape and rows move its result in the last bits, so each
    member's curve is a function of the member and the settings alone, however its task is cut and
    whoever shares it. With points == 1 each row is a plain forward of `net`, faster on CPU than a
    vmap of one. With `views` every row sees its own augmentation of x (augmented_per_alpha).
    """
    n_alpha = len(alphas)
    net.to(theta0.device)
    out = torch.empty(theta0.shape[0], n_alpha, dtype=torch.float64)
    for m in range(theta0.shape[0]):
        for start in range(0, n_alpha, points):
            rows = torch.arange(start, min(start + points, n_alpha), device=theta0.device) + m * n_alpha
            flat, s = interpolate(theta0, theta_t, alphas, rows), smoothing.to(theta0.device)[rows // n_alpha]
            out[m, start : start + len(rows)] = _rows_loss(net, flat, rows, n_alpha, s, x, y, views, batch=batch,
                                                           autocast=autocast)
    return out


# ---------------------------------------------------------------------------------------------
# Evaluation of tasks: in this process (CUDA, or one CPU worker) or one process per CPU core

@dataclass(frozen=True)
class Task:
    family: str
    asym_seed: int  # the zoo's seed of this family's fixed pieces
    rows: pd.DataFrame  # member_id, family, index, status, train_loss_recorded, label_smoothing
    theta0: np.ndarray  # [n, P] float32 initial trainable entries
    theta_t: np.ndarray  # [n, P] float32 trained entries
    fixed_sha256: str | None = None  # the zoo's digest of the family's fixed pieces; None: not recorded, not checked

    @property
    def name(self) -> str:
        """family[first index..last index]xN, as generate names its jobs."""
        index = self.rows["index"]
        return f"{self.family}[{index.iloc[0]}..{index.iloc[-1]}]x{len(index)}"


class Evaluator:
    """Holds the evaluation images on the device and one network per (family, asym_seed).

    `recipe` (the zoo's) gives the augmentation ops of augmented_per_alpha; `cfg` is resolved."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, cfg: MliConfig, recipe: Recipe | None = None):
        self.device, self.cfg, self.recipe, self.nets = torch.device(cfg.device), cfg, recipe, {}
        self.x, self.y = x.to(self.device), y.to(self.device)
        self.alphas = torch.tensor(alpha_grid(cfg.alphas), device=self.device)

    def __call__(self, task: Task) -> np.ndarray:
        """The task's curves, L [n, A]."""
        key = (task.family, task.asym_seed, task.fixed_sha256)
        if key not in self.nets:
            self.nets[key] = network(task).to(self.device)
        t0, tt = (torch.as_tensor(a, device=self.device) for a in (task.theta0, task.theta_t))
        s = torch.as_tensor(task.rows.label_smoothing.to_numpy(dtype=np.float32), device=self.device)
        with self._precision():
            losses = curve_losses(self.nets[key], t0, tt, s, self.alphas, self.x, self.y, points=self.cfg.n_points(),
                                  batch=self.cfg.batch, autocast=self.cfg.autocast, views=self._views(task))
        return losses.numpy()

    def _views(self, task: Task) -> AlphaDraws | None:
        if self.cfg.eval_data != "augmented_per_alpha":
            return None
        if self.recipe is None:
            raise ValueError("eval_data='augmented_per_alpha': the Evaluator needs the zoo's recipe")
        return AlphaDraws(self.recipe, self.cfg.eval_seed, tuple(int(i) for i in task.rows["index"]))

    def _precision(self):
        """fp32 means fp32 on CUDA: cuDNN would otherwise run convolutions in TF32 (10-bit mantissa)."""
        if self.device.type != "cuda" or self.cfg.autocast:
            return contextlib.nullcontext()
        return torch.backends.cudnn.flags(enabled=True, benchmark=False, allow_tf32=False)


def network(task: Task) -> nn.Module:
    """The task's family network, built here (a pool or Ray worker may run other package versions
    than the driver) and checked against the zoo's digest of its fixed pieces."""
    net = zoo.build(task.family, task.asym_seed)
    digest = fixed_digest(net)
    if task.fixed_sha256 not in (None, digest):
        raise ValueError(f"family={task.family!r}: this worker builds fixed pieces (masks, fixed values, F) from "
                         f"asym_seed={task.asym_seed} whose sha256 is {digest[:12]}..., but the zoo's are "
                         f"{task.fixed_sha256[:12]}...; give the workers the package versions the zoo was made with")
    return net


_WORKER: dict = {}  # a pool worker's Evaluator


def _init_worker(x: np.ndarray, y: np.ndarray, cfg: MliConfig, recipe: Recipe | None) -> None:
    torch.set_num_threads(1)  # one process per core: threads would only contend
    _WORKER["evaluate"] = Evaluator(torch.from_numpy(x), torch.from_numpy(y), cfg, recipe)


def _work(task: Task) -> np.ndarray:
    return _WORKER["evaluate"](task)


def evaluate_curves(tasks: list[Task], x: torch.Tensor, y: torch.Tensor, cfg: MliConfig, recipe: Recipe | None = None):
    """Yield (task, L [n, A]) as tasks finish: in this process (CUDA, one worker) or a spawn pool."""
    workers = min(cfg.n_workers(), len(tasks))
    if workers <= 1:
        evaluate = Evaluator(x, y, cfg, recipe)
        for t in tasks:
            yield t, evaluate(t)
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(x.numpy(), y.numpy(), cfg, recipe)) as pool:
        futures = {pool.submit(_work, t): t for t in tasks}
        for f in as_completed(futures):
            yield futures[f], f.result()


class Executor(Protocol):
    """Evaluates tasks: `LocalMliExecutor` here, or cluster.mli.RayMliExecutor (each task a Ray task)."""

    def device(self, asked: str) -> str: ...  # where the tasks run, for cfg.device `asked`

    def slots(self, cfg: MliConfig) -> int: ...  # tasks evaluated at once, for `cfg` resolved

    def run(self, tasks: list[Task], x: torch.Tensor, y: torch.Tensor, cfg: MliConfig, recipe: Recipe | None,
            on_done) -> None: ...  # on_done(task, L [n, A]) in this process as each task finishes


class LocalMliExecutor:
    """Executor local: the tasks in this process (CUDA, or one CPU worker) or in a spawn pool of
    `workers` CPU processes."""

    def device(self, asked: str) -> str:
        """Where the tasks run: the device `asked` names on this machine."""
        return str(resolve_device(asked))

    def slots(self, cfg: MliConfig) -> int:
        """Tasks evaluated at once (`cfg` resolved)."""
        return cfg.n_workers()

    def run(self, tasks: list[Task], x: torch.Tensor, y: torch.Tensor, cfg: MliConfig, recipe: Recipe | None,
            on_done) -> None:
        """`on_done(task, L [n, A])` in this process as each task finishes; the first error stops the run."""
        for task, losses in evaluate_curves(tasks, x, y, cfg, recipe):
            on_done(task, losses)
