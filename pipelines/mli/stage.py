"""The MLI stage: run(config) -> output folder. Evaluates the curves not yet stored (with a
progress line), then writes Table 4, Figure 5 and the manifest that records the measurement."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from zoo.progress import Progress
from zoo.recipe import Recipe
from zoo.store import open_zoo
from zoo.store.fs import local_folder

from ..study import write_claim
from .config import MliConfig, resolved
from .curves import curve_rows, pending, read_curves, write_curves
from .evaluate import Task, describe, eval_data_of, eval_set, evaluate_curves
from .figure import plot_figure5
from .metrics import alpha_grid, table4
from .table import write_tables

CLAIM = ("Paper Section 5.4 (Table 4, Figure 5): the training loss along the line from each member's "
         "initialisation to its trained weights is more monotonic and convex for asymmetric networks.")


def claim(out: Path, cfg: MliConfig, manifest: dict, about: dict) -> None:
    """Write out/manifest.json; refuse an out folder whose curves were measured differently."""
    measurement = {"zoo_seed": manifest["zoo_seed"], "alphas": cfg.alphas,
                   "precision": "bf16 autocast" if cfg.autocast else "fp32", **about}
    write_claim(out, stage="mli", claim=CLAIM, measurement=measurement, cfg=cfg, stored=_today)


def _today(old: dict) -> dict:
    """A stored measurement in today's keys: the `augmented` bool became `eval_data`."""
    return {**{k: v for k, v in old.items() if k != "augmented"}, "eval_data": eval_data_of(old)}


def _out_dir(cfg: MliConfig) -> Path:
    out = cfg.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    return out


def evaluate_tasks(tasks: list[Task], x, y, cfg: MliConfig, recipe: Recipe, out: Path, *, selected: int) -> None:
    """Evaluate every task and commit its curves as soon as it is done (the unit of resume)."""
    if not tasks:
        return
    alphas = alpha_grid(cfg.alphas)
    todo = sum(len(t.rows) for t in tasks)
    progress = Progress(selected, desc="symzoo mli", unit="members", done=selected - todo)
    try:
        for task, losses in evaluate_curves(tasks, x, y, cfg, recipe):
            path = write_curves(out, curve_rows(task, losses, alphas))
            progress.update(len(losses), f"{task.family}: {len(losses)} curves -> {path.name}")
    finally:
        progress.close()


def run(cfg: MliConfig) -> Path:
    """Evaluate the curves not yet stored, then write Table 4 and Figure 5; returns the out folder.
    An out on an object store is written through a local stand-in folder (returned) and uploaded."""
    with local_folder(cfg.out if cfg.out is not None else cfg.zoo.rstrip("/") + "/mli") as out:
        return _run(replace(resolved(cfg), out=str(out)))


def _run(cfg: MliConfig) -> Path:
    z = open_zoo(cfg.zoo)
    out = _out_dir(cfg)
    x, y, about = eval_set(z.manifest, cfg)
    claim(out, cfg, z.manifest, about)
    selected, tasks = pending(z, cfg, out)
    evaluate_tasks(tasks, x, y, cfg, Recipe.from_dict(z.manifest["recipe"]), out, selected=len(selected))
    curves = read_curves(out)
    curves = curves[curves.member_id.isin(selected)].reset_index(drop=True)
    write_tables(table4(curves), out, describe(about, cfg.alphas))
    plot_figure5(curves, out / "figure5.png", top=cfg.top, data=z.manifest.get("data"))
    return out
