"""The LMC stage: run(config) -> output folder. Evaluates the curves of the pairs not yet stored
(with a progress line), then writes Table 1, Figure 3 and the manifest that records the measurement."""
from __future__ import annotations

from pathlib import Path

import torch

from zoo.progress import Progress
from zoo.store import open_zoo

from ..mli import evaluate_curves
from ..mli.metrics import alpha_grid
from ..study import recipe_images, write_claim
from .config import LmcConfig
from .curves import pending, read_curves, write_curves
from .figure import plot_figure3
from .pairs import check_replicates, replicates_of
from .table import table1, write_tables

CLAIM = ("Paper Section 5.1 (Table 1, Figure 3): asymmetric networks are more linearly mode connected than "
         "standard ones, without alignment: a lower midpoint test-loss barrier between two trained replicates.")
EVAL_STREAM = 9  # sub-stream of eval_seed that picks the n_eval subset of test images


def eval_images(manifest: dict, cfg: LmcConfig) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(x [M, 3, 32, 32] uint8, y [M], what they are): the zoo recipe's test images, un-augmented."""
    x, y, _, about = recipe_images(manifest, cfg.data, "test", cfg.n_eval, cfg.eval_seed, EVAL_STREAM)
    return torch.from_numpy(x), torch.from_numpy(y), about


def describe(about: dict, alphas: int) -> str:
    """One sentence for table1.md and the report: which loss the curves hold."""
    subset = "" if about["n_eval"] is None else f"a seeded subset (eval_seed {about['eval_seed']}) of "
    return (f"L(α): mean plain (un-smoothed) cross-entropy on {subset}the zoo recipe's test images, un-augmented, "
            f"fp32, at {alphas} evenly spaced α between two trained replicates of one member index (same "
            f"hyperparameters, other seeds): {about['n_images']} images of {about['data']}.")


def claim(out: Path, cfg: LmcConfig, manifest: dict, about: dict) -> None:
    """Write out/manifest.json; refuse an out folder whose curves were measured differently."""
    measurement = {"zoo_seed": manifest["zoo_seed"], "replicates": replicates_of(manifest), "alphas": cfg.alphas,
                   "align_iter": cfg.align_iter, "loss": "test, plain cross-entropy", "precision": "fp32", **about}
    write_claim(out, stage="lmc", claim=CLAIM, measurement=measurement, cfg=cfg)


def _out_dir(cfg: LmcConfig) -> Path:
    if cfg.out is None and "://" in cfg.zoo:
        raise ValueError(f"out=None: the zoo {cfg.zoo!r} is not a local folder; give a local --out")
    out = cfg.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    return out


def evaluate_tasks(tasks, x, y, cfg: LmcConfig, out: Path, *, planned: int) -> None:
    """Evaluate every task with the MLI evaluator and commit its curves as soon as it is done."""
    if not tasks:
        return
    evaluation, alphas = cfg.evaluation(), alpha_grid(cfg.alphas)
    todo = sum(len(t.rows) for t in tasks)
    progress = Progress(planned, desc="symzoo lmc", unit="pairs", done=planned - todo)
    try:
        for task, losses in evaluate_curves(tasks, x, y, evaluation):
            path = write_curves(out, task.rows.assign(alphas=[alphas] * len(losses), losses=list(losses)))
            progress.update(len(losses), f"{task.rows.variant.iloc[0]}: {len(losses)} curves -> {path.name}")
    finally:
        progress.close()


def run(cfg: LmcConfig) -> Path:
    """Evaluate the curves not yet stored, then write Table 1 and Figure 3; returns the out folder."""
    z = open_zoo(cfg.zoo)
    check_replicates(cfg, z.manifest)  # before any image is read
    out = _out_dir(cfg)
    x, y, about = eval_images(z.manifest, cfg)
    claim(out, cfg, z.manifest, about)
    planned, tasks = pending(z, cfg, out, cfg.evaluation().n_workers())
    evaluate_tasks(tasks, x, y, cfg, out, planned=len(planned))
    curves = read_curves(out)
    curves = curves[curves.pair.isin(planned)].reset_index(drop=True)
    write_tables(table1(curves), out, describe(about, cfg.alphas))
    plot_figure3(curves, out / "figure3.png", data=z.manifest.get("data"))
    return out
