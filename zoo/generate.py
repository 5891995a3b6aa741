"""`symzoo generate` without Ray: plan a zoo, subtract what the store holds, cut the rest into
jobs, and hand them to an executor.

The store is the source of truth: planned members minus committed members is the work, so a
rerun after any interruption trains only what is missing. A job is the unit of work and of
commit: members of one family and one trained-epoch count, trained together (one packed step on
a GPU, one member per job on CPU) and committed as one Parquet file. Jobs are a pure function of
the remaining set, so a retried job commits under the same name.

Two executors run the jobs: `LocalExecutor` here (in-process, for one GPU box without Ray and
for debugging) and `cluster.executor.RayExecutor` (embedded Ray or a cluster, with retries).
"""
from __future__ import annotations

import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from .data import Cifar10, load_cifar10
from .device import resolve_device
from .families import FAMILIES, check_family
from .members import MemberConfig, sample_member
from .progress import Progress, fmt_seconds
from .recipe import Recipe
from .store import commit, init_zoo, open_zoo
from .train import ENGINES, train_members
from .train.grouped import check_impl
from .validate import check, from_dict, is_int

EXECUTORS = ("ray", "local")
FAULT_ENV = "SYMZOO_FAULT"  # test hook, see _fault_point


@dataclass(frozen=True, kw_only=True)
class GenerateConfig:
    zoo: str  # zoo directory or pyarrow.fs URI (shared storage on a cluster)
    members: int  # planned members per family, > 0
    families: tuple[str, ...] = tuple(FAMILIES)  # subset of the registered families, no repeats
    zoo_seed: int = 0  # addresses every member: (zoo_seed, index) -> hyperparameters, seeds
    asym_seed: int = 0  # addresses the fixed W-Asym entries and FiGLU matrices, zoo-wide
    recipe: dict = field(default_factory=dict)  # overrides of the paper recipe (zoo.recipe.Recipe)
    data: str | None = None  # CIFAR-10 root; None = $SYMZOO_DATA or ~/.cache/symzoo
    download: bool = False  # fetch CIFAR-10 (md5-checked) if absent
    executor: str = "ray"  # "ray" (embedded, or a cluster with address) | "local" (in-process, no Ray)
    address: str | None = None  # Ray address (executor ray); None = $RAY_ADDRESS, else embedded
    pack_size: int = 64  # members trained together per GPU job, >= 1; CPU jobs hold one member
    engine: str = "auto"  # zoo.train engine: auto | resident | packed | ffcv
    compile: bool = False  # torch.compile the packed step (eager fallback); not yet measured on a GPU
    packed_impl: str = "vmap"  # packed forward, zoo.train.grouped.IMPLS
    max_retries: int = 3  # retries of a job after a worker or node died or transient I/O failed, >= 0
    new_zoo: bool = False  # a fresh manifest at `zoo` (refused where members are committed)

    def __post_init__(self):
        check("zoo", self.zoo, isinstance(self.zoo, str) and bool(self.zoo), "a non-empty path or URI")
        check("members", self.members, is_int(self.members) and self.members > 0, "an int > 0")
        families = self.families
        check("families", families, isinstance(families, (list, tuple)) and bool(families),
              f"a non-empty list of {', '.join(FAMILIES)}")
        for f in families:
            check_family(f)
        check("families", list(families), len(set(families)) == len(families), "a list without repeats")
        object.__setattr__(self, "families", tuple(families))
        for name in ("zoo_seed", "asym_seed", "max_retries"):
            value = getattr(self, name)
            check(name, value, is_int(value) and value >= 0, "an int >= 0")
        check("pack_size", self.pack_size, is_int(self.pack_size) and self.pack_size >= 1, "an int >= 1")
        check("engine", self.engine, self.engine in ENGINES, f"one of {', '.join(ENGINES)}")
        check("executor", self.executor, self.executor in EXECUTORS, f"one of {', '.join(EXECUTORS)}")
        check("address", self.address, self.address is None or self.executor == "ray",
              "unset with executor local (it runs in this process)")
        for name in ("download", "compile", "new_zoo"):
            check(name, getattr(self, name), isinstance(getattr(self, name), bool), "true or false")
        check_impl(self.packed_impl, "packed_impl")
        Recipe.from_dict(self.recipe)

    @classmethod
    def from_dict(cls, d: dict) -> GenerateConfig:
        return from_dict(cls, d, "generate config")


@dataclass(frozen=True)
class Job:
    """Members of one family and one trained-epoch count, trained together and committed as one file."""

    family: str
    configs: tuple[MemberConfig, ...]

    @property
    def name(self) -> str:
        return f"{self.family}[{self.configs[0].index}..{self.configs[-1].index}]x{len(self.configs)}"


@dataclass(frozen=True)
class Work:
    """What every job of a sweep shares; sent once to each worker."""

    zoo: str
    recipe: dict  # Recipe.to_dict()
    asym_seed: int
    engine: str
    compile: bool
    impl: str


class Executor(Protocol):
    """Runs `run_job(work, job, data, device)` for every job; `on_done(job, summary)` as each
    commits. Returns the jobs that failed for good, with their errors."""

    def run(self, work: Work, jobs: list[Job], data: Cifar10, on_done) -> list[tuple[Job, BaseException]]: ...

    def device_kind(self) -> str: ...


def plan_members(zoo_seed: int, families: tuple[str, ...], members: int) -> list[MemberConfig]:
    """Member indices 0..members-1 of each family."""
    return [sample_member(zoo_seed, i, f) for f in families for i in range(members)]


def plan_jobs(todo: list[MemberConfig], *, pack_size: int, epochs_of) -> list[Job]:
    """Group by (family, trained epochs), then cut into jobs of at most `pack_size` members.

    `epochs_of(cfg)` gives the epochs a member actually trains (the recipe may override them).
    pack_size 1 is the CPU layout: one member per core.
    """
    check("pack_size", pack_size, is_int(pack_size) and pack_size >= 1, "an int >= 1")
    groups: dict[tuple[str, int], list[MemberConfig]] = defaultdict(list)
    for cfg in sorted(todo, key=lambda c: (c.family, c.index)):
        groups[(cfg.family, epochs_of(cfg))].append(cfg)
    jobs = [Job(family, tuple(cfgs[i : i + pack_size]))
            for (family, _), cfgs in sorted(groups.items()) for i in range(0, len(cfgs), pack_size)]
    # longest jobs first: the tail of the sweep is then made of short ones
    return sorted(jobs, key=lambda j: -epochs_of(j.configs[0]) * len(j.configs))


def remaining(planned: list[MemberConfig], zoo: str, families) -> list[MemberConfig]:
    """The resume rule: planned members whose ids the store has not committed (readable files only)."""
    store = open_zoo(zoo)
    done = set().union(*(store.committed_ids(f) for f in families))
    return [c for c in planned if c.member_id not in done]


def run_job(work: Work, job: Job, data: Cifar10, device: str) -> dict:
    """Train `job` and commit it as one Parquet file; returns a summary."""
    if device == "cpu":
        torch.set_num_threads(1)  # one member per core beats intra-op threads on CPU; results match Ray's
    results = train_members(list(job.configs), data, Recipe.from_dict(work.recipe), asym_seed=work.asym_seed,
                            device=device, engine=work.engine, pack_size=len(job.configs), compile=work.compile,
                            impl=work.impl)
    _fault_point(job.name)
    path = commit(work.zoo, results)
    return {"job": job.name, "members": len(results), "diverged": sum(r.status == "diverged" for r in results),
            "wall_s": sum(r.wall_time_s for r in results), "device": results[0].device, "file": path}


def _fault_point(job_name: str) -> None:
    """Simulated failures between training and commit, for the reliability tests only.

    $SYMZOO_FAULT="once:DIR" fails each job once, after training and before its commit, as a
    worker dying mid-job would; a marker file in DIR records that the fault fired.
    """
    mode = os.environ.get(FAULT_ENV, "")
    if mode.startswith("once:"):
        marker = Path(mode[5:]) / job_name.replace("/", "_")
        try:
            marker.touch(exist_ok=False)
        except FileExistsError:
            return
        raise RuntimeError(f"injected fault in job {job_name} ($SYMZOO_FAULT={mode})")


class LocalExecutor:
    """Jobs one after another in this process, on the GPU if there is one. No retries: a failed
    job is reported and the next rerun trains it."""

    def __init__(self):
        self.device = str(resolve_device("auto"))

    def device_kind(self) -> str:
        return "gpu" if self.device.startswith("cuda") else "cpu"

    def run(self, work: Work, jobs: list[Job], data: Cifar10, on_done) -> list[tuple[Job, BaseException]]:
        failed = []
        threads = torch.get_num_threads()
        try:
            for job in jobs:
                try:
                    on_done(job, run_job(work, job, data, self.device))
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:  # noqa: BLE001  the job failed; the others still run
                    failed.append((job, e))
        finally:
            torch.set_num_threads(threads)
        return failed


class SweepFailed(RuntimeError):
    """Some jobs failed for good; what did commit stays, a rerun retries the rest."""


def run(cfg: GenerateConfig, executor: Executor | None = None) -> str:
    """Train every planned member not yet in the store; returns the zoo path.

    `executor` must be ready (connected) before this is called, so that a bad cluster address
    fails before anything is written; None = a LocalExecutor.
    """
    executor = executor or LocalExecutor()
    recipe = Recipe.from_dict(cfg.recipe)
    data = recipe.apply_subset(load_cifar10(cfg.data, download=cfg.download))
    init_zoo(cfg.zoo, zoo_seed=cfg.zoo_seed, families={f: cfg.asym_seed for f in cfg.families},
             recipe=recipe.to_dict(), recipe_overrides=recipe.overrides(), data=data.identity, new_zoo=cfg.new_zoo)
    planned = plan_members(cfg.zoo_seed, cfg.families, cfg.members)
    todo = remaining(planned, cfg.zoo, cfg.families)
    log(f"zoo {cfg.zoo}: {len(planned)} planned, {len(planned) - len(todo)} already committed, {len(todo)} to train")
    if not todo:
        return cfg.zoo
    gpu = executor.device_kind() == "gpu"
    jobs = plan_jobs(todo, pack_size=cfg.pack_size if gpu else 1, epochs_of=recipe.member_epochs)
    work = Work(zoo=cfg.zoo, recipe=recipe.to_dict(), asym_seed=cfg.asym_seed, engine=cfg.engine,
                compile=cfg.compile, impl=cfg.packed_impl)
    log(f"{len(jobs)} jobs on {'GPU' if gpu else 'CPU'} ({type(executor).__name__})")
    _execute(executor, work, jobs, data, total=len(planned), already=len(planned) - len(todo))
    return cfg.zoo


def _execute(executor: Executor, work: Work, jobs: list[Job], data: Cifar10, *, total: int, already: int) -> None:
    progress = Progress(total, desc="symzoo generate", unit="members", done=already)
    diverged = [0]

    def on_done(job: Job, summary: dict) -> None:
        diverged[0] += summary["diverged"]
        progress.update(summary["members"], f"{job.name}: {summary['members']} members, {summary['diverged']} "
                                            f"diverged, {summary['wall_s']:.1f}s on {summary['device']}")

    try:
        failed = executor.run(work, jobs, data, on_done)
    finally:
        progress.close()
    wall = time.monotonic() - progress.start
    log(f"trained {progress.new} members in {fmt_seconds(wall)} ({progress.rate_per_hour():.0f} members/h); "
        f"{progress.done}/{total} committed; {diverged[0]} diverged")
    for job, e in failed:
        log(f"FAILED {job.name}: {type(e).__name__}: {e}")
    if failed:
        names = ", ".join(job.name for job, _ in failed)
        raise SweepFailed(f"{len(failed)} job(s) failed: {names}; rerun the same command to retry them")


def log(msg: str) -> None:
    print(f"symzoo generate: {msg}", file=sys.stderr, flush=True)
