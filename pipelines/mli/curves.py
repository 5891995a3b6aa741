"""The curves on disk (one Parquet file per evaluated chunk of members) and resume: which
selected members still lack a curve, as evaluation tasks."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import zoo
from zoo.members import first_replicates
from zoo.store import atomic_write_parquet
from zoo.validate import check

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
    family, first = rows.family.iloc[0], rows.member_id.iloc[0]
    table = pa.Table.from_pandas(rows[list(CURVE_COLUMNS)], schema=CURVE_SCHEMA, preserve_index=False)
    rel = f"family={family}/part-{first}.parquet"
    atomic_write_parquet(str(out), rel, table)
    return Path(out) / rel


def read_curves(out: Path) -> pd.DataFrame:
    """Every committed curve row under `out` (files starting with "." or "_" are not committed)."""
    files = sorted(p for p in Path(out).glob("family=*/*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in CURVE_COLUMNS})
    df = pd.concat([pq.read_table(p, schema=CURVE_SCHEMA).to_pandas() for p in files], ignore_index=True)
    dup = df.member_id[df.member_id.duplicated()]
    if len(dup):
        raise ValueError(f"curves under {out}: member {dup.iloc[0]!r} appears twice; remove one of its files")
    return df


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


def family_tasks(z, family: str, todo: pd.DataFrame, cfg: MliConfig) -> list[Task]:
    """Chunks of the ok members still to do, balanced over the workers."""
    ok = todo[todo.status == "ok"].reset_index(drop=True)
    if ok.empty:
        return []
    theta0, theta_t = _weights(z, family, "init", ok.member_id), _weights(z, family, "final", ok.member_id)
    size = min(cfg.chunk, math.ceil(len(ok) / cfg.n_workers()))
    z.network(family)  # refuses code that builds other fixed pieces than the zoo's members were trained with
    seed = z.manifest["families"][family]["asym_seed"]
    return [Task(family, seed, ok.iloc[s : s + size].reset_index(drop=True), theta0[s : s + size], theta_t[s : s + size])
            for s in range(0, len(ok), size)]


def run_families(cfg: MliConfig, manifest: dict) -> list[str]:
    """The families to study: cfg.families (each must be the zoo's) or all of the zoo's, in zoo.FAMILIES order."""
    have = list(manifest["families"])
    for f in cfg.families or ():
        check("families", cfg.families, f in have, f"families of this zoo: {have}")
    return [f for f in zoo.FAMILIES if f in (cfg.families or have)]


def pending(z, cfg: MliConfig, out: Path) -> tuple[list[str], list[Task]]:
    """(ids of the selected members, tasks for those without curves); diverged ones get their row now."""
    done, selected, tasks = set(read_curves(out).member_id), [], []
    for fam in run_families(cfg, z.manifest):
        m = select_members(z, fam, cfg.members)
        selected += list(m.member_id)
        todo = m[~m.member_id.isin(done)]
        diverged = todo[todo.status != "ok"]
        if len(diverged):
            write_curves(out, diverged.assign(alphas=None, losses=None))
        tasks += family_tasks(z, fam, todo, cfg)
    return selected, tasks
