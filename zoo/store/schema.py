"""The store's one versioned schema: a members table and a checkpoints table, the same columns
and types for every family, so that a whole zoo reads as one dataset.

A parameter vector is one large_binary value: P little-endian float32 in zoo.flatten order, the
bytes of `vector.astype("<f4").tobytes()`. Plain binary columns, uncompressed, decode in pyarrow
at memory-copy speed, and a row group's values buffer is then the [rows, P] array itself
(`params_matrix`). large_binary (64-bit offsets) rather than binary, so that a whole zoo's column
(10,000 standard members: 3.1 GB) concatenates into one array. What the bytes mean is in the
field metadata (dtype, P, the layout's sha256) and the layout itself is in the manifest.

Every file carries the schema version in its Arrow metadata; a table that does not match the
zoo's schema exactly is rejected. Version 1 stored parameters as fixed_size_list<float32>[P],
whose P differs by family; such files still read (`symzoo store upgrade` rewrites them).
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..records import METRICS

SCHEMA_VERSION = 2  # bump on any change to the columns below; readers refuse other versions
READABLE_VERSIONS = (1, 2)  # 1: read, and rewritten to 2 by `symzoo store upgrade`
VERSION_KEY = b"symzoo.schema_version"
TABLE_KEY = b"symzoo.table"  # "members" | "checkpoints"
DTYPE_KEY, N_PARAMS_KEY, LAYOUT_KEY = b"symzoo.dtype", b"symzoo.n_params", b"symzoo.layout_sha256"
DTYPE = "<f4"  # numpy's name for little-endian float32: np.frombuffer(value, "<f4")
PARAMS_COLUMNS = ("params_init", "params_final")
ROW_GROUP_ROWS = 16  # members per row group: 5 MB per params column, so a row group's buffers stay in cache

PARAMS = pa.large_binary()  # a parameter vector's type (field metadata says dtype, P, layout)

MEMBER_COLUMNS = (  # (name, type, nullable), in file order; a new column is one line here
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
    ("status", pa.string(), False),  # "ok" | "diverged" (recipe.nonfinite says which sense: zoo.train)
    ("diverged_epoch", pa.int64(), True),  # 0-based epoch of the first non-finite loss or gradient; null if none
    *((m, pa.float64(), False) for m in METRICS),  # NaN where a diverged member has none
    ("wall_time_s", pa.float64(), False),
    ("device", pa.string(), False),
    ("data_sha", pa.string(), False),  # sha256 of the CIFAR-10 copy trained on
    ("params_init", PARAMS, False),  # [P] trainable entries in zoo.flatten order, before step 1
    ("params_final", PARAMS, False),  # [P] after the last step taken (non-finite if "skip" diverged it)
)

CHECKPOINT_COLUMNS = (  # keyed by (member_id, epoch)
    ("member_id", pa.string(), False),
    ("epoch", pa.int64(), False),  # the end of this epoch; 0 = initialisation
    ("params", PARAMS, False),  # [P] trainable entries at that epoch
    *((m, pa.float64(), False) for m in METRICS),
)


def layout_sha256(layout_json: list[dict]) -> str:
    """The digest of a family's layout (zoo.Layout.to_json()) as the field metadata names it."""
    return hashlib.sha256(json.dumps(layout_json, sort_keys=True).encode()).hexdigest()


def params_metadata(n_params: int, layout_json: list[dict]) -> dict[bytes, bytes]:
    return {DTYPE_KEY: DTYPE.encode(), N_PARAMS_KEY: str(n_params).encode(),
            LAYOUT_KEY: layout_sha256(layout_json).encode()}


def _v1_type(n_params: int) -> pa.DataType:
    return pa.list_(pa.float32(), n_params)


def _schema(columns, n_params: int, layout_json: list[dict], table: str, version: int) -> pa.Schema:
    if not isinstance(n_params, int) or isinstance(n_params, bool) or n_params < 1:
        raise ValueError(f"n_params={n_params!r}: must be an int >= 1")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"version={version!r}: must be one of {READABLE_VERSIONS}")
    meta = params_metadata(n_params, layout_json) if version == 2 else None
    fields = [pa.field(n, t, nullable=null) if t is not PARAMS else
              pa.field(n, PARAMS if version == 2 else _v1_type(n_params), nullable=null, metadata=meta)
              for n, t, null in columns]
    return pa.schema(fields, metadata={VERSION_KEY: str(version).encode(), TABLE_KEY: table.encode()})


def members_schema(n_params: int, layout_json: list[dict], version: int = SCHEMA_VERSION) -> pa.Schema:
    """One row per member: config, status, metrics, provenance, initial and final weights."""
    return _schema(MEMBER_COLUMNS, n_params, layout_json, "members", version)


def checkpoints_schema(n_params: int, layout_json: list[dict], version: int = SCHEMA_VERSION) -> pa.Schema:
    """One row per (member, recorded epoch): that epoch's weights and metrics."""
    return _schema(CHECKPOINT_COLUMNS, n_params, layout_json, "checkpoints", version)


def file_version(schema: pa.Schema) -> int | None:
    """The schema version a file says it has, if it is one this code reads."""
    text = (schema.metadata or {}).get(VERSION_KEY, b"")
    return int(text) if text.isdigit() and int(text) in READABLE_VERSIONS else None


def schema_problems(found: pa.Schema, expected: pa.Schema) -> list[str]:
    """Why `found` is not `expected`: missing, extra or mistyped columns, another version, or
    params whose field metadata describes another dtype, P or layout."""
    problems = []
    for field in expected:
        if field.name not in found.names:
            problems.append(f"column {field.name!r} is missing (expected type {field.type})")
        elif not found.field(field.name).type.equals(field.type):
            problems.append(f"column {field.name!r} has type {found.field(field.name).type}; expected {field.type}")
        elif field.metadata and found.field(field.name).metadata != field.metadata:
            problems.append(f"column {field.name!r} has field metadata {found.field(field.name).metadata}; "
                            f"expected {field.metadata}")
    problems += [f"column {n!r} is not in the schema" for n in found.names if n not in expected.names]
    if not problems and found.names != expected.names:
        problems.append(f"columns are in the order {found.names}; expected {expected.names}")
    meta = found.metadata or {}
    for key in (VERSION_KEY, TABLE_KEY):
        if meta.get(key) != expected.metadata[key]:
            problems.append(f"metadata {key.decode()} is {meta.get(key)!r}; expected {expected.metadata[key]!r}")
    return problems


def check_table(table: pa.Table, expected: pa.Schema) -> None:
    """Refuse a table that drifts from the schema, holds nulls where none are allowed, or holds a
    params value that is not P float32."""
    problems = schema_problems(table.schema, expected)
    if not problems:
        problems = [f"column {f.name!r} holds {table.column(f.name).null_count} nulls; it is not nullable"
                    for f in expected if not f.nullable and table.column(f.name).null_count]
    for f in expected if not problems else ():
        if f.type == PARAMS:
            n_bytes = 4 * int(f.metadata[N_PARAMS_KEY])
            sizes = set(pc.binary_length(table.column(f.name)).to_pylist())
            if sizes - {n_bytes}:
                problems.append(f"column {f.name!r} holds values of {sorted(sizes)} bytes; expected {n_bytes}")
    if problems:
        version = int(expected.metadata[VERSION_KEY])
        raise ValueError("table does not match the store schema v%d: %s" % (version, "; ".join(problems)))


def params_array(vectors: list[np.ndarray]) -> pa.LargeBinaryArray:
    """[P] float32 vectors -> one large_binary value each, built from one buffer (no per-row copy)."""
    wrong = sorted({f"{v.dtype} {v.shape}" for v in vectors if v.dtype != np.float32 or v.ndim != 1})
    if wrong:
        raise ValueError(f"params vectors of {wrong}: must be 1-D float32 (nothing is cast silently)")
    flat = np.concatenate(vectors).astype(DTYPE, copy=False) if vectors else np.empty(0, DTYPE)
    sizes = np.array([v.size * 4 for v in vectors], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return pa.LargeBinaryArray.from_buffers(PARAMS, len(vectors), [None, pa.py_buffer(offsets), pa.py_buffer(flat)])


def params_matrix(column, n_params: int) -> np.ndarray:
    """A params column (v2 large_binary, or v1 fixed-size list) -> [rows, P] float32.

    A single v2 chunk is a zero-copy view of its values buffer (read-only); otherwise the rows are
    copied once into a new array. ValueError when a value is not P float32.
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    blocks = [_chunk_matrix(c, n_params) for c in chunks if len(c)]
    if len(blocks) == 1:
        return blocks[0]
    return np.concatenate(blocks) if blocks else np.empty((0, n_params), np.float32)


def _chunk_matrix(chunk: pa.Array, n_params: int) -> np.ndarray:
    if pa.types.is_fixed_size_list(chunk.type):  # schema v1
        if chunk.type.list_size != n_params or chunk.null_count:
            raise ValueError(f"a v1 params column of type {chunk.type}: expected {n_params} values per row, no nulls")
        return chunk.flatten().to_numpy().reshape(-1, n_params)
    if chunk.type != PARAMS or chunk.null_count:
        raise ValueError(f"a params column of type {chunk.type} with {chunk.null_count} nulls: expected {PARAMS}, "
                         "no nulls")
    _, offsets, values = chunk.buffers()
    ends = np.frombuffer(offsets, np.int64, count=len(chunk) + 1, offset=8 * chunk.offset)
    if np.any(np.diff(ends) != 4 * n_params):
        raise ValueError(f"params values of {sorted(set(np.diff(ends).tolist()))} bytes: expected {4 * n_params}")
    return np.frombuffer(values, DTYPE, count=len(chunk) * n_params, offset=int(ends[0])).reshape(-1, n_params)
