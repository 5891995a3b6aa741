"""The store's one versioned schema: a members table and a checkpoints table per family.

Both tables depend on P, the family's number of trainable entries, because the parameter
columns are fixed-size float32 lists: a family's weights then decode as one flat float32 buffer
that reshapes to [n, P] without touching rows one by one. Every file carries the schema version
in its Arrow metadata; a table that does not match `members_schema(P)` exactly is rejected.
"""
from __future__ import annotations

import pyarrow as pa

from ..records import METRICS

SCHEMA_VERSION = 1  # bump on any change to the columns below; readers refuse other versions
VERSION_KEY = b"symzoo.schema_version"
TABLE_KEY = b"symzoo.table"  # "members" | "checkpoints"
PARAMS_COLUMNS = ("params_init", "params_final")
ROW_GROUP_ROWS = 128  # members per Parquet row group: the unit of parallel and streamed reads

PARAMS = None  # type placeholder: params_type(P), a fixed-size list of P float32

MEMBER_COLUMNS = (  # (name, type, nullable), in file order
    ("member_id", pa.string(), False),  # 16 hex chars, zoo.members.member_id: the primary key
    ("index", pa.int64(), False),  # member index within its family
    ("family", pa.string(), False),  # "standard" | "w_asym" | "sigma_asym"
    ("zoo_seed", pa.int64(), False),
    ("lr", pa.float64(), False),  # sampled peak AdamW learning rate
    ("weight_decay", pa.float64(), False),
    ("label_smoothing", pa.float64(), False),
    ("epochs", pa.int64(), False),  # sampled epochs (paper Table 8)
    ("epochs_trained", pa.int64(), False),  # epochs the recipe actually trained
    ("seed", pa.int64(), False),  # training seed, < 2^63
    ("status", pa.string(), False),  # "ok" | "diverged"
    ("diverged_epoch", pa.int64(), True),  # 0-based epoch of the first non-finite loss; null if ok
    *((m, pa.float64(), False) for m in METRICS),  # NaN where a diverged member has none
    ("wall_time_s", pa.float64(), False),
    ("device", pa.string(), False),
    ("data_sha", pa.string(), False),  # sha256 of the CIFAR-10 copy trained on
    ("params_init", PARAMS, False),  # [P] trainable entries in zoo.flatten order, before step 1
    ("params_final", PARAMS, False),  # [P] after the last step (last finite values if diverged)
)

CHECKPOINT_COLUMNS = (  # keyed by (member_id, epoch)
    ("member_id", pa.string(), False),
    ("epoch", pa.int64(), False),  # the end of this epoch; 0 = initialisation
    ("params", PARAMS, False),  # [P] trainable entries at that epoch
    *((m, pa.float64(), False) for m in METRICS),
)


def params_type(n_params: int) -> pa.DataType:
    return pa.list_(pa.float32(), n_params)


def _schema(columns, n_params: int, table: str) -> pa.Schema:
    if not isinstance(n_params, int) or isinstance(n_params, bool) or n_params < 1:
        raise ValueError(f"n_params={n_params!r}: must be an int >= 1")
    fields = [pa.field(n, params_type(n_params) if t is PARAMS else t, nullable=null) for n, t, null in columns]
    return pa.schema(fields, metadata={VERSION_KEY: str(SCHEMA_VERSION).encode(), TABLE_KEY: table.encode()})


def members_schema(n_params: int) -> pa.Schema:
    """One row per member: config, status, metrics, provenance, initial and final weights."""
    return _schema(MEMBER_COLUMNS, n_params, "members")


def checkpoints_schema(n_params: int) -> pa.Schema:
    """One row per (member, recorded epoch): that epoch's weights and metrics."""
    return _schema(CHECKPOINT_COLUMNS, n_params, "checkpoints")


def schema_problems(found: pa.Schema, expected: pa.Schema) -> list[str]:
    """Why `found` is not `expected`: missing, extra or mistyped columns, or another version."""
    problems = []
    for field in expected:
        if field.name not in found.names:
            problems.append(f"column {field.name!r} is missing (expected type {field.type})")
        elif not found.field(field.name).type.equals(field.type):
            problems.append(f"column {field.name!r} has type {found.field(field.name).type}; expected {field.type}")
    problems += [f"column {n!r} is not in the schema" for n in found.names if n not in expected.names]
    if not problems and found.names != expected.names:
        problems.append(f"columns are in the order {found.names}; expected {expected.names}")
    meta = found.metadata or {}
    for key in (VERSION_KEY, TABLE_KEY):
        if meta.get(key) != expected.metadata[key]:
            problems.append(f"metadata {key.decode()} is {meta.get(key)!r}; expected {expected.metadata[key]!r}")
    return problems


def check_table(table: pa.Table, expected: pa.Schema) -> None:
    """Refuse a table that drifts from the schema, or holds nulls where none are allowed."""
    problems = schema_problems(table.schema, expected)
    if not problems:
        problems = [f"column {f.name!r} holds {table.column(f.name).null_count} nulls; it is not nullable"
                    for f in expected if not f.nullable and table.column(f.name).null_count]
    if problems:
        raise ValueError("table does not match the store schema v%d: %s" % (SCHEMA_VERSION, "; ".join(problems)))
