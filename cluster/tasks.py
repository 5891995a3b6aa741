"""The unit of work of a sweep: train one pack, commit it to the store. Plain Python, so it runs
and tests without Ray; `cluster.sweep` wraps it as a Ray task with retries."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from zoo.members import MemberConfig
from zoo.recipe import Recipe
from zoo.store import commit
from zoo.train import train_members

FAULT_ENV = "SYMZOO_FAULT"  # test hook, see _fault_point


def _fault_point(pack_name: str) -> None:
    """Simulated failures between training and commit, for the reliability tests only.

    $SYMZOO_FAULT="once:DIR" fails each pack once, after training and before its commit, as a
    worker dying mid-pack would; a marker file in DIR records that the fault fired.
    """
    mode = os.environ.get(FAULT_ENV, "")
    if mode.startswith("once:"):
        marker = Path(mode[5:]) / pack_name.replace("/", "_")
        try:
            marker.touch(exist_ok=False)
        except FileExistsError:
            return
        raise RuntimeError(f"injected fault in pack {pack_name} ($SYMZOO_FAULT={mode})")


def train_and_commit(zoo: str, configs: list[MemberConfig], recipe: dict, *, asym_seed: int, data,
                     device: str, engine: str, pack_name: str, compile: bool = False, impl: str = "vmap") -> dict:
    """Train `configs` (one family) and commit them as one Parquet file; returns a summary."""
    if device == "cpu":
        torch.set_num_threads(1)  # one member per core beats intra-op threads on CPU
    results = train_members(configs, data, Recipe.from_dict(recipe), asym_seed=asym_seed, device=device,
                            engine=engine, pack_size=len(configs), compile=compile, impl=impl)
    _fault_point(pack_name)
    path = commit(zoo, results)
    return {
        "pack": pack_name,
        "members": len(results),
        "diverged": sum(r.status == "diverged" for r in results),
        "wall_s": sum(r.wall_time_s for r in results),
        "device": results[0].device,
        "file": path,
    }
