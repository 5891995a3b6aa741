"""`symzoo generate`: plan a zoo, subtract what the store holds, train the rest on Ray.

Without an address Ray starts embedded on this machine (every core or GPU, dashboard off). With
`address` (or $RAY_ADDRESS) the same call drives an existing cluster. Ray tasks, not Tune trials:
resume comes from the store, which is the only source of truth, so Tune's experiment state would
be a second one that can disagree (a `Tuner.restore` after a driver kill re-ran finished trials),
and a task costs milliseconds where an un-reused trial costs seconds.
"""
from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass, field

import ray

from zoo.data import load_cifar10
from zoo.train.grouped import check_impl
from zoo.families import FAMILIES
from zoo.recipe import Recipe
from zoo.train import ENGINES
from zoo.store import init_zoo, open_zoo

from .plan import make_packs, plan_members
from .tasks import train_and_commit


class SweepFailed(RuntimeError):
    """Some packs failed after their retries; what did commit stays, a rerun retries the rest."""


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    zoo: str  # zoo directory or pyarrow.fs URI (shared storage on a cluster)
    members: int  # planned members per family, > 0
    families: tuple[str, ...] = tuple(FAMILIES)  # subset of standard, w_asym, sigma_asym
    zoo_seed: int = 0  # addresses every member: (zoo_seed, index) -> hyperparameters, seeds
    asym_seed: int = 0  # addresses the fixed W-Asym entries and FiGLU matrices, zoo-wide
    recipe: dict = field(default_factory=dict)  # overrides of the paper recipe (zoo.recipe.Recipe)
    data: str | None = None  # CIFAR-10 root; None = $SYMZOO_DATA or ~/.cache/symzoo
    download: bool = False  # fetch CIFAR-10 (md5-checked) if absent
    address: str | None = None  # Ray address; None = $RAY_ADDRESS, else embedded
    pack_size: int = 64  # members trained together per GPU task; CPU tasks hold one member
    engine: str = "auto"  # zoo.train engine: auto | resident | packed | ffcv
    compile: bool = False  # torch.compile the packed step (eager fallback); not yet measured on a GPU
    packed_impl: str = "vmap"  # packed forward, zoo.train.grouped.IMPLS: vmap | grouped | grouped_cl
    max_retries: int = 3  # Ray retries of a failed pack (worker death or exception)
    new_zoo: bool = False  # a fresh manifest at `zoo` (refused where members are committed)

    def __post_init__(self):
        plan_members(self.zoo_seed, self.families, self.members)  # validates families, members
        if self.pack_size < 1:
            raise ValueError(f"pack_size={self.pack_size!r}: must be >= 1")
        if self.engine not in ENGINES:
            raise ValueError(f"engine={self.engine!r}: must be one of {', '.join(ENGINES)}")
        check_impl(self.packed_impl, "packed_impl")
        Recipe.from_dict(self.recipe)


def run(cfg: SweepConfig) -> str:
    """Train every planned member not yet in the store; returns the zoo path."""
    address = cluster_address(cfg.address)  # a head that does not answer is an error before any write
    recipe = Recipe.from_dict(cfg.recipe)
    data = recipe.apply_subset(load_cifar10(cfg.data, download=cfg.download))
    init_zoo(cfg.zoo, zoo_seed=cfg.zoo_seed, families={f: cfg.asym_seed for f in cfg.families},
             recipe=recipe.to_dict(), recipe_overrides=recipe.overrides(), data=data.identity, new_zoo=cfg.new_zoo)
    planned = plan_members(cfg.zoo_seed, cfg.families, cfg.members)
    store = open_zoo(cfg.zoo)
    done = set().union(*(store.committed_ids(f) for f in cfg.families))
    todo = [c for c in planned if c.member_id not in done]
    log(f"zoo {cfg.zoo}: {len(planned)} planned, {len(planned) - len(todo)} already committed, {len(todo)} to train")
    if todo:
        _run_packs(cfg, address, recipe, data, todo, total=len(planned), already=len(planned) - len(todo))
    return cfg.zoo


def cluster_address(address: str | None) -> str | None:
    """`address`, else $RAY_ADDRESS, else None (embedded); a host:port must answer."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "auto" and not address.startswith("ray://"):
        _check_reachable(address)
    return address


def connect(address: str | None) -> None:
    """Ray at `address` as `cluster_address` resolved (and checked) it; None starts it embedded."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=True, configure_logging=False)
    else:
        ray.init(include_dashboard=False, num_cpus=os.cpu_count(), configure_logging=False)


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise ValueError(f"address={address!r}: no Ray head answers there ({e}); start one with "
                         "`ray start --head`, or leave --address out to run Ray embedded") from e


def _run_packs(cfg, address, recipe, data, todo, *, total: int, already: int) -> None:
    connect(address)
    resources = ray.cluster_resources()
    gpus = resources.get("GPU", 0) > 0
    packs = make_packs(todo, pack_size=cfg.pack_size if gpus else 1, epochs_of=recipe.member_epochs)
    task = ray.remote(train_and_commit).options(
        num_gpus=1 if gpus else 0, num_cpus=1, max_retries=cfg.max_retries, retry_exceptions=True)
    data_ref = ray.put(data)
    pending = {task.remote(cfg.zoo, list(p.configs), recipe.to_dict(), asym_seed=cfg.asym_seed, data=data_ref,
                           device="cuda" if gpus else "cpu", engine=cfg.engine, pack_name=p.name,
                           compile=cfg.compile, impl=cfg.packed_impl): p
               for p in packs}
    log(f"{len(packs)} packs on {'GPU' if gpus else 'CPU'} ({resources.get('CPU', 0):.0f} CPUs, "
        f"{resources.get('GPU', 0):.0f} GPUs)")
    progress = Progress(total=total, already=already)
    failed = []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        pack = pending.pop(ready[0])
        try:
            summary = ray.get(ready[0])
        except Exception as e:  # retries exhausted: report, let the others finish
            failed.append(pack)
            log(f"FAILED {pack.name} after {cfg.max_retries} retries: {type(e).__name__}: {e}")
            continue
        progress.update(summary)
    log(progress.summary())
    if failed:
        names = ", ".join(p.name for p in failed)
        raise SweepFailed(f"{len(failed)} pack(s) failed: {names}; rerun the same command to retry them")


class Progress:
    """Members done out of planned, members per hour, ETA and diverged counts, one line a pack."""

    def __init__(self, *, total: int, already: int):
        self.total, self.done, self.new, self.diverged = total, already, 0, 0
        self.start = time.monotonic()

    def update(self, s: dict) -> None:
        self.done += s["members"]
        self.new += s["members"]
        self.diverged += s["diverged"]
        rate = self.new / max(time.monotonic() - self.start, 1e-9) * 3600
        eta = (self.total - self.done) / rate * 3600 if rate else float("inf")
        log(f"[{self.done}/{self.total} {100 * self.done / self.total:5.1f}%] {s['pack']}: "
            f"{s['members']} members, {s['diverged']} diverged, {s['wall_s']:.1f}s on {s['device']} | "
            f"{rate:.0f} members/h, ETA {_fmt(eta)}, diverged so far {self.diverged}")

    def summary(self) -> str:
        wall = time.monotonic() - self.start
        return (f"trained {self.new} members in {_fmt(wall)} ({self.new / max(wall, 1e-9) * 3600:.0f} members/h); "
                f"{self.done}/{self.total} committed; {self.diverged} diverged")


def _fmt(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    h, rem = divmod(int(seconds), 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def log(msg: str) -> None:
    print(f"symzoo generate: {msg}", file=sys.stderr, flush=True)
