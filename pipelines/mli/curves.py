"""The curves on disk (one Parquet file per evaluated chunk of members) and resume: which
selected members still lack a curve, as evaluation tasks."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

import zoo
from zoo.members import first_replicates
from zoo.validate import check

from ..study import read_parts, write_part
from .config import MliConfig
from .evaluate import Task

CURVE_COLUMNS = ("member_id", "family", "index", "status", "alphas", "losses", "train_loss_recorded")
CURVE_SCHEMA = pa.schema([
    ("member_id", pa.string()),
    ("family", pa.string()),
    ("index", pa.int64()),
    ("status", pa.string()),  # "ok" | "diverged" (then alphas and losses are null)
    ("alphas", pa.list_(pa.float64())),  # [A]
    ("losses", pa.list_(pa.float64())),  # [A] L(alpha)
    ("train_loss_recorded", pa.float64()),  # the store's train_loss of the member
])
MEMBER_COLUMNS = ["member_id", "index", "family", "status", "label_smoothing", "train_loss"]


def write_curves(out: Path, rows: pd.DataFrame) -> Path:
    """Commit the curve rows of one family's chunk as `family=<f>/part-<first member id>.parquet`."""
    return write_part(out, rows, partition="family", first="member_id", columns=CURVE_COLUMNS, schema=CURVE_SCHEMA)


def read_curves(out: Path) -> pd.DataFrame:
    """Every committed curve row under `out`, one per member."""
    return read_parts(out, partition="family", key="member_id", columns=CURVE_COLUMNS, schema=CURVE_SCHEMA)


def curve_rows(task: Task, losses: np.ndarray, alphas: np.ndarray) -> pd.DataFrame:
    """The task's members with their curves, L [n, A] on `alphas` [A], as curve rows."""
    return task.rows.assign(alphas=[alphas] * len(task.rows), losses=list(losses))


def select_members(z, family: str, limit: int | None) -> pd.DataFrame:
    """The family's first `limit` members by index (all when None), diverged ones included; replicate 0
    of each index only (replicates r >= 1 are LMC's)."""
    m = z.members(columns=MEMBER_COLUMNS, family=family).sort_values("index", kind="stable")
    if z.manifest.get("replicates", 1) > 1:
        m = m[first_replicates(z.manifest["zoo_seed"], m.family, m["index"], m.member_id)]
    m = m.head(limit) if limit is not None else m
    return m.rename(columns={"train_loss": "train_loss_recorded"}).reset_index(drop=True)


def _weights(z, family: str, which: str, ids: pd.Series) -> np.ndarray:
    """[len(ids), P] float32 weights of those (ok) members, in the order of `ids`."""
    arr, stored = z.weights(family, which=which, status="ok")
    pos = {m: i for i, m in enumerate(stored)}
    return np.ascontiguousarray(arr[[pos[m] for m in ids]])


def family_tasks(z, family: str, todo: pd.DataFrame, cfg: MliConfig, slots: int) -> list[Task]:
    """Chunks of the ok members still to do, at most `chunk` each, balanced over the executor's
    `slots`. Where they are cut moves no curve: a packed forward never holds two members' rows."""
    ok = todo[todo.status == "ok"].reset_index(drop=True)
    if ok.empty:
        return []
    theta0, theta_t = _weights(z, family, "init", ok.member_id), _weights(z, family, "final", ok.member_id)
    size = min(cfg.chunk, math.ceil(len(ok) / slots))
    z.network(family)  # refuses code that builds other fixed pieces than the zoo's members were trained with
    entry = z.manifest["families"][family]  # the workers check their own build against its fixed_sha256
    return [Task(family, entry["asym_seed"], ok.iloc[s : s + size].reset_index(drop=True), theta0[s : s + size],
                 theta_t[s : s + size], entry.get("fixed_sha256")) for s in range(0, len(ok), size)]


def run_families(cfg: MliConfig, manifest: dict) -> list[str]:
    """The families to study: cfg.families (each must be the zoo's) or all of the zoo's, in zoo.FAMILIES order."""
    have = list(manifest["families"])
    for f in cfg.families or ():
        check("families", cfg.families, f in have, f"families of this zoo: {have}")
    return [f for f in zoo.FAMILIES if f in (cfg.families or have)]


def pending(z, cfg: MliConfig, out: Path, slots: int) -> tuple[list[str], list[Task]]:
    """(ids of the selected members, tasks for those without curves, cut for `slots` tasks at once);
    diverged ones get their row now."""
    done, selected, tasks = set(read_curves(out).member_id), [], []
    for fam in run_families(cfg, z.manifest):
        m = select_members(z, fam, cfg.members)
        selected += list(m.member_id)
        todo = m[~m.member_id.isin(done)]
        diverged = todo[todo.status != "ok"]
        if len(diverged):
            write_curves(out, diverged.assign(alphas=None, losses=None))
        tasks += family_tasks(z, fam, todo, cfg, slots)
    return selected, tasks
