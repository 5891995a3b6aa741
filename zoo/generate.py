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

import errno
import os
import posixpath
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .data import Cifar10, load_cifar10
from .device import resolve_device
from .families import FAMILIES, check_family
from .members import MemberConfig, sample_member
from .progress import Progress, fmt_seconds
from .recipe import Recipe
from .store import commit, init_zoo, open_zoo, pack_name
from .train import ENGINES, train_members
from .train.grouped import check_impl
from .train.packed import PACK_SIZES, auto_pack_size
from .validate import check, from_dict, is_int

EXECUTORS = ("ray", "local")
FAULT_ENV = "SYMZOO_FAULT"  # test hook, see _fault_point


@dataclass(frozen=True, kw_only=True)
class GenerateConfig:
    zoo: str  # zoo directory or pyarrow.fs URI (shared storage on a cluster)
    members: int  # planned members per family, > 0
    replicates: int = 1  # trainings per member index, >= 1: same hyperparameters, other seeds (for `symzoo lmc`)
    replicate_members: int = 0  # indices 0..N-1 get every replicate, the rest replicate 0 only; 0 = all members
    families: tuple[str, ...] = tuple(FAMILIES)  # subset of the registered families, no repeats
    zoo_seed: int = 0  # addresses every member: (zoo_seed, index) -> hyperparameters, seeds
    asym_seed: int = 0  # addresses the fixed W-Asym entries and FiGLU matrices, zoo-wide
    recipe: dict = field(default_factory=dict)  # overrides of the paper recipe (zoo.recipe.Recipe)
    data: str | None = None  # CIFAR-10 root; None = $SYMZOO_DATA or ~/.cache/symzoo
    download: bool = False  # fetch CIFAR-10 (md5-checked) if absent
    executor: str = "ray"  # "ray" (embedded, or a cluster with address) | "local" (in-process, no Ray)
    address: str | None = None  # Ray address (executor ray); None = $RAY_ADDRESS, else embedded
    pack_size: int = 0  # members trained together on a GPU, >= 1; 0 = auto (the largest of 8..128 that fits its free memory); CPU jobs hold one member
    engine: str = "auto"  # zoo.train engine: auto | resident | packed | ffcv
    compile: bool = False  # torch.compile the packed step (eager fallback); not yet measured on a GPU
    cuda_graph: bool = False  # replay the packed step as one CUDA graph; not yet measured on a GPU
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
        check("replicates", self.replicates, is_int(self.replicates) and self.replicates >= 1, "an int >= 1")
        check("replicate_members", self.replicate_members,
              is_int(self.replicate_members) and 0 <= self.replicate_members <= self.members,
              f"an int in [0, members={self.members}]")
        for name in ("zoo_seed", "asym_seed", "max_retries"):
            value = getattr(self, name)
            check(name, value, is_int(value) and value >= 0, "an int >= 0")
        check("pack_size", self.pack_size, is_int(self.pack_size) and self.pack_size >= 0, "an int >= 1, or 0 (auto)")
        check("engine", self.engine, self.engine in ENGINES, f"one of {', '.join(ENGINES)}")
        check("executor", self.executor, self.executor in EXECUTORS, f"one of {', '.join(EXECUTORS)}")
        check("address", self.address, self.address is None or self.executor == "ray",
              "unset with executor local (it runs in this process)")
        for name in ("download", "compile", "cuda_graph", "new_zoo"):
            check(name, getattr(self, name), isinstance(getattr(self, name), bool), "true or false")
        check_impl(self.packed_impl, "packed_impl", here=False)
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
        first, last = self.configs[0], self.configs[-1]
        return f"{self.family}[{_address(first)}..{_address(last)}]x{len(self.configs)}"


def _address(cfg: MemberConfig) -> str:
    """index, or index.r for a replicate r >= 1 (replicate 0 names as before)."""
    return f"{cfg.index}.{cfg.replicate}" if cfg.replicate else str(cfg.index)


@dataclass(frozen=True)
class Work:
    """What every job of a sweep shares; sent once to each worker."""

    zoo: str
    recipe: dict  # Recipe.to_dict()
    asym_seed: int
    engine: str
    compile: bool
    impl: str
    pack_size: int = 0  # 0 = auto: the worker fits packs to its GPU's free memory
    cuda_graph: bool = False


class Executor(Protocol):
    """Runs `run_job(work, job, data, device)` for every job; `on_done(job, summary)` as each
    commits. Returns the jobs that failed for good, with their errors."""

    def run(self, work: Work, jobs: list[Job], data: Cifar10, on_done) -> list[tuple[Job, BaseException]]: ...

    def device_kind(self) -> str: ...


def plan_members(zoo_seed: int, families: tuple[str, ...], members: int, replicates: int = 1,
                 replicate_members: int = 0) -> list[MemberConfig]:
    """Member indices 0..members-1 of each family; the first `replicate_members` of them (all when
    0) in replicates 0..replicates-1, the others in replicate 0."""
    many = replicate_members or members
    return [sample_member(zoo_seed, i, f, r) for f in families for i in range(members)
            for r in range(replicates if i < many else 1)]


def plan_jobs(todo: list[MemberConfig], *, pack_size: int, epochs_of) -> list[Job]:
    """Group by (family, trained epochs), then cut into jobs of at most `pack_size` members.

    `epochs_of(cfg)` gives the epochs a member actually trains (the recipe may override them).
    pack_size 1 is the CPU layout: one member per core.
    """
    check("pack_size", pack_size, is_int(pack_size) and pack_size >= 1, "an int >= 1")
    groups: dict[tuple[str, int], list[MemberConfig]] = defaultdict(list)
    for cfg in sorted(todo, key=lambda c: (c.family, c.index, c.replicate)):
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
    """Train `job` and commit it as one Parquet file; returns a summary.

    "raced" counts members whose pack another writer (a concurrent generate) committed while this
    one trained them: the commit still replaces that file atomically, the training was twice.
    """
    if device == "cpu":
        torch.set_num_threads(1)  # one member per core beats intra-op threads on CPU; results match Ray's
    recipe = Recipe.from_dict(work.recipe)
    results = train_members(list(job.configs), data, recipe, asym_seed=work.asym_seed, device=device,
                            engine=work.engine, pack_size=_pack_size(work, job, recipe, data, device),
                            compile=work.compile, impl=work.impl, cuda_graph=work.cuda_graph)
    _fault_point(job.name, "trained")
    raced = _committed_elsewhere(work.zoo, job)
    path, commit_retries = _commit(work.zoo, job.name, results)
    return {"job": job.name, "members": len(results), "diverged": sum(r.status == "diverged" for r in results),
            "wall_s": sum(r.wall_time_s for r in results), "device": results[0].device, "file": path,
            "raced": raced, "commit_retries": commit_retries}


COMMIT_TRIES = 4  # attempts of one commit on transient I/O; the trained results stay in memory meanwhile
TRANSIENT_ERRNOS = {errno.EIO, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED,
                    errno.EPIPE, errno.EAGAIN, errno.EBUSY, errno.ESTALE, errno.EHOSTUNREACH, errno.ENETUNREACH,
                    errno.ENETDOWN, errno.EINTR}
# pyarrow's S3/GCS errors are OSErrors without errno; these words mark the ones a retry can fix
TRANSIENT_WORDS = ("timeout", "timed out", "connection", "network", "throttl", "slow down", "slowdown",
                   "service unavailable", "internal error", "try again")


def is_transient(e: BaseException) -> bool:
    """An I/O failure a retry can fix (a reset connection, an NFS hiccup, S3 throttling); a full
    disk, a missing permission or a bad value is not, and retrying it only repeats the work."""
    if not isinstance(e, OSError):
        return False
    if e.errno is not None:
        return e.errno in TRANSIENT_ERRNOS
    return any(w in str(e).lower() for w in TRANSIENT_WORDS)


def _commit(zoo: str, job_name: str, results) -> tuple[str, int]:
    """Commit, retrying only the commit on transient I/O: a retry never retrains. Returns (file, retries)."""
    for attempt in range(COMMIT_TRIES):
        try:
            _fault_point(job_name, "commit")
            return commit(zoo, results), attempt
        except OSError as e:
            if not is_transient(e) or attempt == COMMIT_TRIES - 1:
                raise
            time.sleep(min(2 ** attempt, 10))
    raise AssertionError("unreachable")


def _committed_elsewhere(zoo: str, job: Job) -> int:
    """Members of `job` whose pack file is already in the store and readable: committed by another
    writer since this run planned (a plan only holds members the store lacked)."""
    store = open_zoo(zoo)
    path = posixpath.join(store.folder(job.family), pack_name([c.member_id for c in job.configs]))
    try:
        with store.fs.open_input_file(path) as f:
            return pq.ParquetFile(f).metadata.num_rows
    except (OSError, pa.ArrowException):
        return 0  # absent, or a damaged file that this commit replaces


def _fault_point(job_name: str, stage: str) -> None:
    """Simulated failures, for the reliability tests only: $SYMZOO_FAULT="MODE:DIR".

    once:DIR    the worker process dies once per job, after training, before the commit (Ray only:
                under the local executor the whole run dies)
    enospc:DIR  every commit attempt fails with a full disk
    flaky:DIR   the first commit attempt of each job fails with a reset connection
    Each firing leaves a file in DIR, so a test counts them.
    """
    mode, _, folder = os.environ.get(FAULT_ENV, "").partition(":")
    if (mode, stage) not in {("once", "trained"), ("enospc", "commit"), ("flaky", "commit")}:
        return
    first = not any(p.name.startswith(f"{mode}-{job_name}-") for p in Path(folder).iterdir())  # names hold [ ]
    Path(folder, f"{mode}-{job_name}-{os.getpid()}-{time.time_ns()}").touch()
    if mode == "once" and first:
        os._exit(17)
    if mode == "enospc":
        raise OSError(errno.ENOSPC, "No space left on device (injected)", f"{FAULT_ENV}={mode}")
    if mode == "flaky" and first:
        raise ConnectionResetError(errno.ECONNRESET, f"connection reset (injected, {FAULT_ENV}={mode})")


def _pack_size(work: Work, job: Job, recipe: Recipe, data: Cifar10, device: str) -> int:
    """The job's size, or with pack_size 0 on a GPU the largest compiled size that fits its free memory."""
    if work.pack_size or not device.startswith("cuda"):
        return len(job.configs)
    sizes = tuple(n for n in PACK_SIZES if n <= len(job.configs)) or (len(job.configs),)
    return auto_pack_size(device, job.family, recipe.batch_size, sizes, impl=work.impl, n_train=len(data.train_y),
                          dtype=recipe.autocast_dtype(torch.device(device)))


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


class ClusterUnreachable(ValueError):
    """The executor could not reach or join its Ray cluster; raised before anything is written."""


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
    try:
        init_zoo(cfg.zoo, zoo_seed=cfg.zoo_seed, families={f: cfg.asym_seed for f in cfg.families},
                 recipe=recipe.to_dict(), recipe_overrides=recipe.overrides(), data=data.identity, new_zoo=cfg.new_zoo,
                 replicates=cfg.replicates)
    except OSError as e:
        if e.filename is None and e.errno is not None:  # a failed write names no path; the user needs it
            e.filename = f"{posixpath.join(cfg.zoo, 'manifest.json')} or {posixpath.join(cfg.zoo, 'manifest.d')}/"
        raise
    planned = plan_members(cfg.zoo_seed, cfg.families, cfg.members, cfg.replicates, cfg.replicate_members)
    todo = remaining(planned, cfg.zoo, cfg.families)
    log(f"zoo {cfg.zoo}: {len(planned)} planned, {len(planned) - len(todo)} already committed, {len(todo)} to train")
    if not todo:
        return cfg.zoo
    gpu = executor.device_kind() == "gpu"
    job_size = (cfg.pack_size or max(PACK_SIZES)) if gpu else 1
    jobs = plan_jobs(todo, pack_size=job_size, epochs_of=recipe.member_epochs)
    work = Work(zoo=cfg.zoo, recipe=recipe.to_dict(), asym_seed=cfg.asym_seed, engine=cfg.engine,
                compile=cfg.compile, impl=cfg.packed_impl, pack_size=cfg.pack_size, cuda_graph=cfg.cuda_graph)
    log(f"{len(jobs)} jobs on {'GPU' if gpu else 'CPU'} ({type(executor).__name__})")
    _execute(executor, work, jobs, data, total=len(planned), already=len(planned) - len(todo))
    return cfg.zoo


def _execute(executor: Executor, work: Work, jobs: list[Job], data: Cifar10, *, total: int, already: int) -> None:
    progress = Progress(total, desc="symzoo generate", unit="members", done=already)
    counts = {"diverged": 0, "raced": 0, "commit_retries": 0}

    def on_done(job: Job, summary: dict) -> None:
        for key in counts:
            counts[key] += summary.get(key, 0)
        if summary.get("commit_retries"):
            log(f"{job.name}: commit retried {summary['commit_retries']}x on transient I/O (not retrained)")
        progress.update(summary["members"], f"{job.name}: {summary['members']} members, {summary['diverged']} "
                                            f"diverged, {summary['wall_s']:.1f}s on {summary['device']}")

    try:
        failed = executor.run(work, jobs, data, on_done)
    finally:
        progress.close()
    _report(progress, total, counts, failed)


def _report(progress: Progress, total: int, counts: dict, failed: list[tuple[Job, BaseException]]) -> None:
    wall = time.monotonic() - progress.start
    log(f"trained {progress.new} members in {fmt_seconds(wall)} ({progress.rate_per_hour():.0f} members/h); "
        f"{progress.done}/{total} committed; {counts['diverged']} diverged")
    if counts["raced"]:
        log(f"{counts['raced']} of the {progress.new} members trained here had meanwhile been committed by another "
            "writer (a concurrent generate on this zoo): trained twice, stored once")
    for job, e in failed:
        log(f"FAILED {job.name}: {type(e).__name__}: {e}")
    if failed:
        names = ", ".join(job.name for job, _ in failed)
        raise SweepFailed(f"{len(failed)} job(s) failed: {names}; {_advice(failed)}")


def _advice(failed: list[tuple[Job, BaseException]]) -> str:
    """What to do: a full disk is freed first; anything else, rerun (only uncommitted work runs)."""
    full = [e for _, e in failed if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)]
    if full:
        where = getattr(full[0], "filename", None) or "the zoo's storage"
        return f"No space left on device ({where}): free space there, then rerun the same command"
    return "rerun the same command to retry them"


def log(msg: str) -> None:
    print(f"symzoo generate: {msg}", file=sys.stderr, flush=True)
