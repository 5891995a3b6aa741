"""Writing a zoo: `init_zoo` (the manifest) and `commit` (one pack of one family's members).

A pack's file name is a hash of its sorted member ids, so a retried commit of the same members
(a Ray task retry) atomically replaces the same file. Checkpoints are committed before the
members file, because the members file's existence is what marks its members done.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
from dataclasses import asdict, fields

import numpy as np
import pyarrow as pa

from ..records import METRICS, MemberResult
from . import fs as store_fs
from .manifest import (ManifestMismatch, build_manifest, differences, load_manifest, remove_manifest, settle,
                       upgrade_needed)
from .reader import Zoo, open_zoo
from .schema import N_PARAMS_KEY, PARAMS, ROW_GROUP_ROWS, check_table, params_array

_STRINGS = ["member_id", "family", "status", "device", "data_sha"]


def write_options(schema: pa.Schema) -> dict:
    """Parameters are stored plain and uncompressed, without statistics: floats barely compress,
    and plain binary pages decode at memory speed (a page is then a length prefix and the bytes).
    Page checksums let every reader catch a flipped bit. Data pages v1: every Parquet reader
    (DuckDB, polars, Spark) reads them."""
    params = [f.name for f in schema if f.type == PARAMS]
    return {
        "compression": {n: "none" if n in params else "zstd" for n in schema.names},
        "use_dictionary": [n for n in schema.names if n in _STRINGS],
        "column_encoding": {n: "PLAIN" for n in params},
        "write_statistics": [n for n in schema.names if n not in params],
        "write_page_checksum": True,
        "data_page_version": "1.0",
        "row_group_size": ROW_GROUP_ROWS,
    }


def _populated(fs, root: str) -> int:
    return sum(len(store_fs.visible_parquet(fs, posixpath.join(root, t))) for t in ("members", "checkpoints"))


def init_zoo(path, *, zoo_seed: int, families: dict[str, int], recipe: dict, recipe_overrides: dict,
             data: dict, layouts: dict[str, list] | None = None, new_zoo: bool = False, filesystem=None,
             replicates: int = 1) -> Zoo:
    """Create a zoo's manifest, or check that an existing zoo can be resumed with these settings.

    Resuming requires the same schema version, zoo seed, recipe, data sha256, and asym seeds and
    layouts for the families already present (else ManifestMismatch, listing every difference;
    no record is written, also when the conflict is with a writer creating records at the same
    time). New families are added to the manifest. `layouts` (zoo.Layout.to_json()
    per family) defaults to the layout of zoo.build(family, asym_seed). new_zoo=True deletes the old
    manifest and writes a fresh one, but only while the path holds no committed member or
    checkpoint file: it never deletes results (choose another path for that), and no other writer
    may use the path meanwhile. `replicates` (k of zoo.generate) is recorded; a resume with a
    larger k records that one (LMC looks for up to k). Writers need no lock (zoo.store.manifest).
    """
    fs, root = (filesystem, os.fspath(path)) if filesystem is not None else store_fs.resolve(path)
    new = build_manifest(zoo_seed=zoo_seed, families=families, recipe=recipe, recipe_overrides=recipe_overrides,
                         data=data, layouts=layouts, replicates=replicates)
    if new_zoo:
        committed = _populated(fs, root)
        if committed:
            raise ValueError(f"new_zoo: {root} already holds {committed} committed files; refusing to start a "
                             "new zoo over them (nothing was changed): choose a different path")
        remove_manifest(fs, root)
    old = load_manifest(fs, root)
    hint = upgrade_needed(root, old) if old is not None else None
    if hint:
        raise ValueError(hint)
    lines = differences(old, new) if old is not None else []
    if lines:
        raise ManifestMismatch(root, lines)
    settle(fs, root, new, old)
    return open_zoo(path, filesystem=filesystem)


def pack_name(member_ids) -> str:
    """Same members, same name: a retried commit replaces its own earlier file."""
    digest = hashlib.sha256("\n".join(sorted(member_ids)).encode()).hexdigest()[:24]
    return f"pack-{digest}.parquet"


def _params(name: str, value, n_params: int, where: str) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype != np.float32 or value.shape != (n_params,):
        found = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
        raise ValueError(f"{name} of {where}: found {found}; expected a float32 numpy array of shape ({n_params},)")
    return value


def _column(name: str, values: list, schema: pa.Schema) -> pa.Array:
    try:
        return pa.array(values, type=schema.field(name).type)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"column {name!r}: values do not fit type {schema.field(name).type} ({e})") from None


def _member_fields(r: MemberResult, epochs_trained: int) -> dict:
    """Every value a members column can take, by name: the result's fields, its config and its
    metrics, so that a column added to the schema needs no change here."""
    return {**{f.name: getattr(r, f.name) for f in fields(r)}, **asdict(r.config), **r.metrics,
            "epochs_trained": epochs_trained}


def _n_params(schema: pa.Schema, column: str) -> int:
    return int(schema.field(column).metadata[N_PARAMS_KEY])


def members_table(results: list[MemberResult], schema: pa.Schema, epochs_trained: dict[str, int]) -> pa.Table:
    """The members rows of one pack, typed by the schema (nothing is coerced silently)."""
    rows = [_member_fields(r, epochs_trained[r.config.member_id]) for r in results]
    arrays = []
    for field in schema:
        if rows and field.name not in rows[0]:
            raise ValueError(f"column {field.name!r}: MemberResult, its config and its metrics have no such field")
        if field.type == PARAMS:
            n_params = _n_params(schema, field.name)
            arrays.append(params_array([_params(field.name, getattr(r, field.name), n_params, r.config.member_id)
                                        for r in results]))
        else:
            arrays.append(_column(field.name, [row[field.name] for row in rows], schema))
    return pa.Table.from_arrays(arrays, schema=schema)


def checkpoints_table(results: list[MemberResult], schema: pa.Schema) -> pa.Table | None:
    """The (member, epoch) rows of a pack's recorded checkpoints; None when there are none."""
    n_params = _n_params(schema, "params")
    rows = [(r.config.member_id, epoch, params, metrics)
            for r in results for epoch, (params, metrics) in sorted(r.checkpoints.items())]
    if not rows:
        return None
    for mid, epoch, _, metrics in rows:
        missing = sorted(set(METRICS) - set(metrics))
        if missing:
            raise ValueError(f"checkpoint epoch {epoch} of {mid}: metrics is missing {missing}")
    params = [_params("checkpoint params", p, n_params, f"{mid} epoch {e}") for mid, e, p, _ in rows]
    arrays = [_column("member_id", [r[0] for r in rows], schema), _column("epoch", [r[1] for r in rows], schema),
              params_array(params)]
    arrays += [_column(m, [r[3][m] for r in rows], schema) for m in METRICS]
    return pa.Table.from_arrays(arrays, schema=schema)


def _check_current(zoo: Zoo) -> None:
    """Files of one schema version per zoo: an older zoo is upgraded before it grows."""
    hint = upgrade_needed(zoo.path, zoo.manifest)
    if hint:
        raise ValueError(hint)


def _check_pack(zoo: Zoo, results) -> str:
    """The pack's family, after checking that every result belongs in this zoo."""
    if not isinstance(results, (list, tuple)) or not results or not all(isinstance(r, MemberResult) for r in results):
        raise ValueError("results: must be a non-empty list of zoo.records.MemberResult")
    families = sorted({r.config.family for r in results})
    if len(families) != 1:
        raise ValueError(f"results: one family per commit; found {families}")
    zoo._family(families[0])
    _check_current(zoo)
    ids = [r.config.member_id for r in results]
    if len(set(ids)) != len(ids):
        raise ValueError(f"results: member ids repeat within the pack: {sorted({i for i in ids if ids.count(i) > 1})}")
    for r in results:
        if r.config.zoo_seed != zoo.manifest["zoo_seed"]:
            raise ValueError(f"member {r.config.member_id}: zoo_seed={r.config.zoo_seed}; this zoo's is "
                             f"{zoo.manifest['zoo_seed']}")
        if r.data_sha != zoo.manifest["data"]["sha256"]:
            raise ValueError(f"member {r.config.member_id}: data_sha={r.data_sha!r}; this zoo was trained on "
                             f"{zoo.manifest['data']['sha256']!r}")
    return families[0]


def _epochs_trained(zoo: Zoo, results, given: dict[str, int] | None) -> dict[str, int]:
    """What the recipe trained: given per member, else the manifest recipe's "epochs" override,
    else each member's sampled epochs."""
    if given is not None:
        missing = [r.config.member_id for r in results if r.config.member_id not in given]
        if missing:
            raise ValueError(f"epochs_trained: no entry for members {missing}")
        return given
    override = zoo.manifest["recipe"].get("epochs")
    return {r.config.member_id: override if override is not None else r.config.epochs for r in results}


def commit_tables(zoo: Zoo, family: str, members: pa.Table, checkpoints: pa.Table | None = None) -> str:
    """Commit one pack given as tables: schema-checked, checkpoints first, then members."""
    _check_current(zoo)
    check_table(members, zoo.schema(family, "members"))
    if set(members.column("family").to_pylist()) != {family}:
        raise ValueError(f"members: column 'family' must hold only {family!r}")
    name = pack_name(members.column("member_id").to_pylist())
    if checkpoints is not None:
        check_table(checkpoints, zoo.schema(family, "checkpoints"))
        store_fs.atomic_write_parquet(zoo.fs, posixpath.join(zoo.folder(family, "checkpoints"), name),
                                      checkpoints, **write_options(checkpoints.schema))
    path = posixpath.join(zoo.folder(family, "members"), name)
    return store_fs.atomic_write_parquet(zoo.fs, path, members, **write_options(members.schema))


def commit(zoo, results: list[MemberResult], *, epochs_trained: dict[str, int] | None = None) -> str:
    """Commit the results of one family's members as one file; returns its path.

    zoo: a Zoo, or the path/URI of an initialised zoo. epochs_trained: member_id -> epochs
    actually trained, when the manifest's recipe "epochs" override does not say it.
    """
    zoo = zoo if isinstance(zoo, Zoo) else open_zoo(zoo)
    family = _check_pack(zoo, results)
    members = members_table(results, zoo.schema(family, "members"), _epochs_trained(zoo, results, epochs_trained))
    checkpoints = checkpoints_table(results, zoo.schema(family, "checkpoints"))
    return commit_tables(zoo, family, members, checkpoints)
