"""The MLI stage: run(config) -> output folder. Evaluates the curves not yet stored (with a
progress line), then writes Table 4, Figure 5 and the manifest that records the measurement.

An executor evaluates the tasks: `LocalMliExecutor` (executor local: this process or its CPU pool)
or `cluster.mli.RayMliExecutor` (executor ray: each task a Ray task). Either way this process alone
writes the out folder, each task's curves as the task arrives, so a kill loses only the tasks in
flight."""
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
from .evaluate import Executor, LocalMliExecutor, Task, describe, eval_data_of, eval_set
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


def executor_for(cfg: MliConfig) -> Executor:
    """The executor `cfg` names, ready to run: Ray connects (and checks its address) here, before any write."""
    if cfg.executor == "local":
        return LocalMliExecutor()
    from cluster.mli import RayMliExecutor  # Ray is imported only for executor ray

    return RayMliExecutor(cfg.address, gpus_per_task=cfg.gpus_per_task)


def evaluate_tasks(tasks: list[Task], x, y, cfg: MliConfig, recipe: Recipe, out: Path, *, selected: int,
                   executor: Executor) -> None:
    """Evaluate every task and commit its curves as soon as it is done (the unit of resume)."""
    if not tasks:
        return
    alphas = alpha_grid(cfg.alphas)
    todo = sum(len(t.rows) for t in tasks)
    progress = Progress(selected, desc="symzoo mli", unit="members", done=selected - todo)

    def on_done(task: Task, losses) -> None:
        path = write_curves(out, curve_rows(task, losses, alphas))
        progress.update(len(losses), f"{task.family}: {len(losses)} curves -> {path.name}")

    try:
        executor.run(tasks, x, y, cfg, recipe, on_done)
    finally:
        progress.close()


def run(cfg: MliConfig, executor: Executor | None = None) -> Path:
    """Evaluate the curves not yet stored, then write Table 4 and Figure 5; returns the out folder.
    `executor` None = the one cfg.executor names. An out on an object store is written through a
    local stand-in folder (returned) and uploaded."""
    executor = executor or executor_for(cfg)
    cfg = resolved(cfg, executor.device(cfg.device))
    with local_folder(cfg.out if cfg.out is not None else cfg.zoo.rstrip("/") + "/mli") as out:
        return _run(replace(cfg, out=str(out)), executor)


def _run(cfg: MliConfig, executor: Executor) -> Path:
    z = open_zoo(cfg.zoo)
    out = _out_dir(cfg)
    x, y, about = eval_set(z.manifest, cfg)
    claim(out, cfg, z.manifest, about)
    selected, tasks = pending(z, cfg, out, executor.slots(cfg))
    evaluate_tasks(tasks, x, y, cfg, Recipe.recorded(z.manifest["recipe"]), out, selected=len(selected),
                   executor=executor)
    curves = read_curves(out)
    curves = curves[curves.member_id.isin(selected)].reset_index(drop=True)
    write_tables(table4(curves), out, describe(about, cfg.alphas))
    plot_figure5(curves, out / "figure5.png", top=cfg.top, data=z.manifest.get("data"))
    return out
