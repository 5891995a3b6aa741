"""The Ray Tune executor of `symzoo metanets`: each run a Tune trial, embedded or on a cluster.

The stage (metanets.stage) plans the runs and hands over those without a record, one wave at a
time (all selection runs, then all final runs); each becomes a trial of one Tune experiment with
{"cpu": 1, "gpu": gpus_per_trial} (no GPU where Ray has none). A trial loads its family from the
zoo, trains with the stage's own `Trainer`, so its record is the one the in-process path writes,
and reports each epoch's train loss and val/test R^2 and tau to Tune, whose loggers write them
to <out>/tune/<wave>-<time>/<run>/ (progress.csv, result.json, TensorBoard events where
tensorboardX is installed).

Tune's experiment state is not a source of truth, and `Tuner.restore` is never called: a rerun
plans the same runs, and only those without a record become trials. So on a cluster the zoo and
the metanets output folder must be on storage every node reads and writes (NFS); a trial writes
its record there itself.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import sys
from contextlib import redirect_stdout
from pathlib import Path

import ray
import torch
from ray import tune

from metanets.loader import open_store
from metanets.stage import Families, MetanetConfig, Run, Trainer
from zoo.device import resolve_device

from .executor import cause_of, cluster_address, connect

CPUS_PER_TRIAL = 1  # one torch thread per trial: parallelism comes from trials, as generate's one member per core


class TuneExecutor:
    """Runs as Tune trials; Ray connects (and its address is checked) when this is built, before any write."""

    def __init__(self, address: str | None, *, gpus_per_trial: float):
        connect(cluster_address(address))
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        self.resources = {"cpu": CPUS_PER_TRIAL, "gpu": gpus_per_trial if has_gpus else 0}

    def run(self, config: MetanetConfig, runs: list[Run], on_done) -> None:
        """One Tune experiment with a trial per run; raises after it if any trial failed."""
        config = _absolute(config)  # a trial runs in its own folder, maybe on another node
        runs = {r.key: dataclasses.replace(r, path=os.path.abspath(r.path)) for r in runs}
        trainable = tune.with_resources(tune.with_parameters(_trial, config=config, runs=runs), self.resources)
        storage = config.out_dir() / "tune"
        tuner = tune.Tuner(
            trainable,
            param_space={"run": tune.grid_search([_params(r) for r in runs.values()])},
            # a reused actor keeps its family's data and features for the next trial of the same row
            tune_config=tune.TuneConfig(trial_name_creator=_namer(runs), trial_dirname_creator=_namer(runs),
                                        reuse_actors=True),
            run_config=tune.RunConfig(name=_experiment_name(storage, next(iter(runs.values())).phase),
                                      storage_path=str(storage), verbose=0, callbacks=[_Done(runs, on_done)]),
        )
        with redirect_stdout(sys.stderr):  # Tune's banners; stdout is the command's result (Table 3)
            grid = tuner.fit()
        _raise_failures(grid, runs)


def _absolute(config: MetanetConfig) -> MetanetConfig:
    """The config with absolute local paths (URIs as they are): Tune runs a trial in its own folder."""
    zoo = config.zoo if "://" in config.zoo else os.path.abspath(config.zoo)
    return dataclasses.replace(config, zoo=zoo, out=str(config.out_dir().resolve()))


def _params(run: Run) -> dict:
    """What a trial's params.json shows; `key` finds the run."""
    return {"family": run.family, "row": run.row.name, "phase": run.phase, "index": run.index, "lr": run.lr,
            "seed": run.seed, "key": run.key}


def _namer(runs: dict[str, Run]):
    """Trial names and folders after the run's record file, e.g. standard-statnn-final-1-lr0.01-3f2a9c01b2."""
    def name(trial) -> str:
        run = runs[trial.config["run"]["key"]]
        return f"{run.family}-{run.row.folder}-{Path(run.path).stem}"
    return name


def _experiment_name(storage: Path, phase: str) -> str:
    """<wave>-<UTC time>, a new folder per experiment: an old experiment's files are never mixed in."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    name, n = f"{phase}-{stamp}", 1
    while (storage / name).exists():
        name, n = f"{phase}-{stamp}-{n}", n + 1
    return name


_TRAINER: list[Trainer] = []  # this worker's Trainer, kept while Tune reuses the actor for the next trial


def _trainer(config: MetanetConfig) -> Trainer:
    if not _TRAINER or _TRAINER[0].config != config:
        _TRAINER[:] = []  # the old one's data goes before the new one's comes
        _TRAINER.append(Trainer(config, Families(config, open_store(config.zoo)), resolve_device(config.device)))
    return _TRAINER[0]


def _trial(params: dict, *, config: MetanetConfig, runs: dict[str, Run]) -> None:
    """A Tune function trainable: train one run, report every epoch, write its record."""
    torch.set_num_threads(CPUS_PER_TRIAL)

    def report(epoch: int, scores: dict) -> None:
        tune.report({"epoch": epoch + 1, **scores})

    _trainer(config).train(runs[params["run"]["key"]], on_epoch=report)


class _Done(tune.Callback):
    """Tells the stage, in the driver, as each trial completes (its record is written by then)."""

    def __init__(self, runs: dict[str, Run], on_done):
        self.runs, self.on_done = runs, on_done

    def __getstate__(self):
        # Tune pickles its run config into tuner.pkl, for a Tuner.restore that the stage never does;
        # `on_done` (the stage's progress, an open stream) stays out of it
        return {"runs": self.runs, "on_done": None}

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.on_done(self.runs[trial.config["run"]["key"]])


def _raise_failures(grid, runs: dict[str, Run]) -> None:
    failed = [(runs[r.config["run"]["key"]], cause_of(r.error)) for r in grid if r.error is not None]
    if failed:
        run, error = failed[0]
        first = (str(error).strip().splitlines() or [""])[-1][:300]
        raise RuntimeError(f"{len(failed)} of {len(runs)} metanet runs failed as Tune trials; first: {run.name}: "
                           f"{type(error).__name__}: {first} (its trial folder has the traceback)")
