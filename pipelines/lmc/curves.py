"""The curves on disk, one Parquet file per evaluated chunk of pairs, and resume: which planned
pairs still lack a curve."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa


from ..mli import Task
from ..study import read_parts, write_part
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
    return write_part(out, rows, partition="variant", first="member_a", columns=COLUMNS, schema=CURVE_SCHEMA)


def read_curves(out: Path) -> pd.DataFrame:
    """Every committed curve row under `out`, one per (variant, pair)."""
    return read_parts(out, partition="variant", key="pair", columns=COLUMNS, schema=CURVE_SCHEMA)


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
