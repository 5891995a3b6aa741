"""The curves on disk, one Parquet file per evaluated chunk of pairs, and resume: which planned
pairs still lack a curve."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from zoo.store import atomic_write_parquet

from ..mli import Task
from .config import LmcConfig
from .pairs import plan_pairs, variant_tasks, variants

CURVE_SCHEMA = pa.schema([
    ("pair", pa.string()),  # "<variant>:<member a>-<member b>", the unit of resume
    ("variant", pa.string()),  # pairs.VARIANTS
    ("family", pa.string()),  # the zoo family of both members
    ("index", pa.int64()),  # their member index
    ("member_a", pa.string()),  # replicate r: alpha = 0
    ("member_b", pa.string()),  # replicate r + 1: alpha = 1 (aligned to a for standard_aligned)
    ("status", pa.string()),  # "ok" | "diverged" (either member; then alphas and losses are null)
    ("align_s", pa.float64()),  # seconds weight matching took for this pair; NaN unless aligned
    ("alphas", pa.list_(pa.float64())),  # [A]
    ("losses", pa.list_(pa.float64())),  # [A] plain test loss L(alpha)
])
COLUMNS = CURVE_SCHEMA.names


def write_curves(out: Path, rows: pd.DataFrame) -> Path:
    """Commit one variant's chunk of curve rows as `variant=<v>/part-<first pair's member a>.parquet`."""
    variant, first = rows.variant.iloc[0], rows.member_a.iloc[0]
    table = pa.Table.from_pandas(rows[COLUMNS], schema=CURVE_SCHEMA, preserve_index=False)
    rel = f"variant={variant}/part-{first}.parquet"
    atomic_write_parquet(str(out), rel, table)
    return Path(out) / rel


def read_curves(out: Path) -> pd.DataFrame:
    """Every committed curve row under `out` (files starting with "." or "_" are not committed)."""
    files = sorted(p for p in Path(out).glob("variant=*/*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in COLUMNS})
    df = pd.concat([pq.read_table(p, schema=CURVE_SCHEMA).to_pandas() for p in files], ignore_index=True)
    dup = df.pair[df.pair.duplicated()]
    if len(dup):
        raise ValueError(f"curves under {out}: pair {dup.iloc[0]!r} appears twice; remove one of its files")
    return df


def pending(z, cfg: LmcConfig, out: Path, workers: int) -> tuple[list[str], list[Task]]:
    """(the planned pairs, tasks for the ok ones without curves); diverged pairs get their row now."""
    done, planned, tasks = set(read_curves(out).pair), [], []
    for variant in variants(cfg, z.manifest):
        pairs = plan_pairs(z, cfg, variant)
        planned += list(pairs.pair)
        todo = pairs[~pairs.pair.isin(done)]
        diverged = todo[todo.status != "ok"]
        if len(diverged):
            write_curves(out, diverged.assign(align_s=float("nan"), alphas=None, losses=None))
        tasks += variant_tasks(z, cfg, todo, workers)
    return planned, tasks
