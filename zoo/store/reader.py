"""Reading a zoo: member tables as pandas, weights as one [n, P] float32 array or in batches.

Every read goes through pyarrow with page checksums verified. Readers see only complete, valid
files: hidden names (".", "_") are ignored; a file that cannot be read, fails a page checksum,
or whose schema, family or zoo seed is not this zoo's, is skipped with a SkippedFileWarning
naming it (`symzoo store verify` moves it aside). A reader checks the pages it reads: members()
those of the small columns, weights() also those of the weights column it returns, and
committed_ids() (the work a resumed generate skips) every page. A member held by two files, as
after two writers raced on overlapping packs, is read once, from the file first in path order.
Rows come sorted by (member index, member id), whatever the files the members were packed into.
Files of schema v1 (a zoo not yet through `symzoo store upgrade`) read the same way.
"""
from __future__ import annotations

import os
import posixpath
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..families import build, fixed_digest
from . import fs as store_fs
from .manifest import read_manifest
from .schema import (MEMBER_COLUMNS, PARAMS, PARAMS_COLUMNS, SCHEMA_VERSION, checkpoints_schema, file_version,
                     members_schema, params_matrix, schema_problems)

TABLES = ("members", "checkpoints")
SCALAR_COLUMNS = tuple(n for n, t, _ in MEMBER_COLUMNS if t is not PARAMS)
STATUSES = ("ok", "diverged", None)  # None: every member
READ_ERRORS = (OSError, ValueError, pa.ArrowException)  # a damaged or foreign file raises one of these


class SkippedFileWarning(UserWarning):
    """A file in the zoo that readers cannot use; run `symzoo store verify` to move it aside."""


class Inspection(NamedTuple):
    table: pa.Table | None  # the requested columns, when the file is valid
    row_group_rows: tuple[int, ...]  # rows per row group
    problem: str | None  # why the file is not usable, else None


def open_parquet(fs, path: str) -> pq.ParquetFile:
    """Plain reads, not memory maps: as fast here, and a read's memory then shows in its RSS.
    Page checksums are always verified: a flipped bit must fail loudly, not return weights.
    Reads are coalesced and issued ahead (pre_buffer) only where a request has latency (object
    stores); on a local disk that only adds a copy through pyarrow's I/O threads."""
    return pq.ParquetFile(fs.open_input_file(path), page_checksum_verification=True,
                          pre_buffer=not store_fs.is_local(fs))


def _foreign(zoo: "Zoo", table: pa.Table, family: str) -> str | None:
    families = set(table.column("family").to_pylist())
    seeds = set(table.column("zoo_seed").to_pylist())
    if families - {family} or seeds - {zoo.manifest["zoo_seed"]}:
        return (f"foreign: holds families {sorted(families)} and zoo seeds {sorted(seeds)}; this folder is "
                f"family {family!r} of a zoo with seed {zoo.manifest['zoo_seed']}")
    return None


def _read(zoo: "Zoo", path: str, family: str, table: str, columns, deep: bool):
    """(table of `columns`, rows per row group) or (None, problem) for one file."""
    with open_parquet(zoo.fs, path) as pf:
        version = file_version(pf.schema_arrow) or SCHEMA_VERSION
        problems = schema_problems(pf.schema_arrow, zoo.schema(family, table, version))
        if problems:
            return None, "; ".join(problems)
        rows = tuple(pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups))
        got = pf.read(columns=list(columns), use_threads=False)
        for i in range(pf.num_row_groups if deep else 0):  # one row group in memory at a time
            pf.read_row_group(i, use_threads=False)
    return (got, rows), None


def inspect_file(zoo: "Zoo", path: str, family: str, table: str, columns=(), *, deep=False) -> Inspection:
    """Read `columns` of one file, or say why the file is unusable. `deep` reads every page,
    catching damage in pages that `columns` do not touch (all reads verify page checksums)."""
    if table == "members":
        columns = list(dict.fromkeys([*columns, "family", "zoo_seed"]))
    try:
        found, problem = _read(zoo, path, family, table, columns, deep)
    except READ_ERRORS as e:
        return Inspection(None, (), f"unreadable: {type(e).__name__}: {e}")
    if problem:
        return Inspection(None, (), problem)
    got, rows = found
    problem = _foreign(zoo, got, family) if table == "members" else None
    return Inspection(None if problem else got, rows, problem)


def _skip(path: str, problem: str) -> None:
    warnings.warn(f"skipping {path}: {problem} (symzoo store verify moves it aside)", SkippedFileWarning,
                  stacklevel=4)


@dataclass(frozen=True)
class _Piece:
    """The selected rows of one row group and where they go: out[dst] = block[rows]."""
    path: str
    group: int
    rows: np.ndarray  # [k] row indices within the row group
    dst: np.ndarray  # [k] output rows, ascending


def _span(a: np.ndarray):
    """A slice for consecutive indices, so the copy below is a plain block copy; else `a`."""
    if len(a) and int(a[-1]) - int(a[0]) == len(a) - 1 and bool((np.diff(a) == 1).all()):
        return slice(int(a[0]), int(a[-1]) + 1)
    return a


def _put(out: np.ndarray, b0: int, piece: _Piece, block: np.ndarray) -> None:
    """Copy the piece's rows that fall in out's range [b0, b0 + len(out)) into place."""
    lo, hi = np.searchsorted(piece.dst, [b0, b0 + len(out)])
    out[_span(piece.dst[lo:hi] - b0)] = block[_span(piece.rows[lo:hi])]


def _threads(workers: int | None, tasks: int) -> int:
    """Threads overlap one row group's read with another's copy and checksum: every core by default."""
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise ValueError(f"workers={workers!r}: must be an int >= 1 or None (one per CPU)")
    return max(1, min(workers or os.cpu_count() or 1, tasks))


def _params_column(which: str) -> str:
    if which not in ("init", "final"):
        raise ValueError(f"which={which!r}: must be 'init' or 'final'")
    return f"params_{which}"


def _check_status(status) -> None:
    if status not in STATUSES:
        raise ValueError(f"status={status!r}: must be one of {STATUSES}")


def _locations(found: list[Inspection]) -> pd.DataFrame:
    """member_id, index, status and (file, row group, row within it) of every row of the files,
    built as one frame (a frame per file costs more than reading the columns)."""
    names = ("member_id", "index", "status")
    if not found:
        return pd.DataFrame({c: [] for c in (*names, "file", "group", "row")})
    columns = {c: pa.chunked_array([seen.table.column(c) for seen in found]).to_numpy() for c in names}
    files, groups, rows = [], [], []
    for k, seen in enumerate(found):
        sizes = np.asarray(seen.row_group_rows, dtype=np.int64)
        files.append(np.full(int(sizes.sum()), k, dtype=np.int64))
        groups.append(np.repeat(np.arange(len(sizes)), sizes))
        rows.append(np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes))
    return pd.DataFrame({**columns, "file": np.concatenate(files), "group": np.concatenate(groups),
                         "row": np.concatenate(rows)})


def _frame(table: pa.Table, n_params: int) -> pd.DataFrame:
    """A file's rows as pandas, each params value as a [P] float32 array (a view of the table)."""
    params = [c for c in table.column_names if c in PARAMS_COLUMNS + ("params",)]
    df = table.drop_columns(params).to_pandas()
    for c in params:
        df[c] = list(params_matrix(table.column(c), n_params))
    return df[table.column_names]


class Zoo:
    """An opened zoo. `path` is what was opened; `fs` and `root` locate it; `manifest` is its dict."""

    def __init__(self, fs, root: str, manifest: dict, path: str):
        self.fs, self.root, self.manifest, self.path = fs, root, manifest, path

    def __repr__(self) -> str:
        return f"Zoo({self.path!r}, zoo_seed={self.manifest['zoo_seed']}, families={self.families})"

    @property
    def families(self) -> list[str]:
        return list(self.manifest["families"])

    def _family(self, family: str) -> dict:
        if family not in self.manifest["families"]:
            raise ValueError(f"family={family!r}: not in this zoo, which has {self.families}")
        return self.manifest["families"][family]

    def n_params(self, family: str) -> int:
        return int(self._family(family)["n_params"])

    def network(self, family: str) -> torch.nn.Module:
        """The family's network with this zoo's fixed pieces (`zoo.build(family, asym_seed)`), checked
        against the manifest's digest of them; load a member into it with `zoo.unflatten`."""
        entry = self._family(family)
        net = build(family, entry["asym_seed"])
        digest = fixed_digest(net)
        if entry.get("fixed_sha256", digest) != digest:
            raise ValueError(
                f"family={family!r}: this code builds fixed pieces (masks, fixed values, F) from asym_seed="
                f"{entry['asym_seed']} whose sha256 is {digest[:12]}..., but the zoo's are {entry['fixed_sha256'][:12]}...; "
                f"its members only make sense with those. The zoo was made with {self.manifest.get('packages')}")
        return net

    def layout(self, family: str) -> list[dict]:
        """Per-tensor {"name", "shape", "offset", "size"} in flat order (zoo.Layout.to_json)."""
        return self._family(family)["layout"]

    @property
    def version(self) -> int:
        """The schema version of the zoo's manifest: 1 until `symzoo store upgrade` rewrites it."""
        return int(self.manifest["schema_version"])

    def schema(self, family: str, table: str = "members", version: int = SCHEMA_VERSION) -> pa.Schema:
        if table not in TABLES:
            raise ValueError(f"table={table!r}: must be one of {TABLES}")
        make = members_schema if table == "members" else checkpoints_schema
        return make(self.n_params(family), self.layout(family), version)

    def folder(self, family: str, table: str = "members") -> str:
        self._family(family)
        return posixpath.join(self.root, table, f"family={family}")

    def files(self, family: str, table: str = "members") -> list[str]:
        """The visible .parquet files of one family's table, in path order (valid or not)."""
        return store_fs.visible_parquet(self.fs, self.folder(family, table))

    def _valid_tables(self, family: str, table: str, columns, deep: bool = False) -> list[tuple[str, Inspection]]:
        paths = self.files(family, table)
        with ThreadPoolExecutor(_threads(None, len(paths))) as pool:
            seen = list(pool.map(lambda path: inspect_file(self, path, family, table, columns, deep=deep), paths))
        for path, found in zip(paths, seen):
            if found.problem:
                _skip(path, found.problem)  # here, not in a worker thread: warnings filters are global
        return [(path, found) for path, found in zip(paths, seen) if not found.problem]

    def committed_ids(self, family: str) -> set[str]:
        """Members whose results are committed and intact: the work a resumed generate skips. Every
        page of every file is checked, so the members of a damaged file are trained again."""
        return {i for _, seen in self._valid_tables(family, "members", ["member_id"], deep=True)
                for i in seen.table.column("member_id").to_pylist()}

    def _family_frame(self, family: str, columns: list[str]) -> pd.DataFrame:
        frames = [_frame(seen.table.select(columns), self.n_params(family))
                  for _, seen in self._valid_tables(family, "members", columns)]
        if not frames:
            return _frame(self.schema(family).empty_table().select(columns), self.n_params(family))
        df = pd.concat(frames, ignore_index=True).drop_duplicates("member_id", keep="first")
        return df.sort_values(["index", "member_id"], kind="stable")

    def members(self, columns=None, where: str | None = None, family: str | None = None) -> pd.DataFrame:
        """One row per committed member, sorted by (family as in the manifest, index).

        columns: names to return (default: every column but params_init / params_final, which
        come as one numpy array per row when asked for). where: a pandas `DataFrame.query`
        string evaluated after deduplication, e.g. "status == 'ok' and test_acc > 0.5"; it may
        use any non-params column, asked for or not.
        """
        columns = list(SCALAR_COLUMNS if columns is None else columns)
        unknown = [c for c in columns if c not in SCALAR_COLUMNS + PARAMS_COLUMNS]
        if unknown:
            raise ValueError(f"columns={unknown}: unknown; allowed: {list(SCALAR_COLUMNS + PARAMS_COLUMNS)}")
        families = self.families if family is None else [family]
        read = list(SCALAR_COLUMNS) + [c for c in PARAMS_COLUMNS if c in columns]
        df = pd.concat([self._family_frame(f, read) for f in families], ignore_index=True)
        if where is not None:
            try:
                df = df.query(where)
            except (NameError, SyntaxError, TypeError, ValueError, KeyError) as e:
                raise ValueError(f"where={where!r}: not a valid query on {list(SCALAR_COLUMNS)} ({e})") from None
        return df[columns].reset_index(drop=True)

    def _plan(self, family: str, status) -> tuple[list[_Piece], pd.DataFrame]:
        """Which row of which row group holds each selected member: the pieces to read, and one
        row per output row (member_id, path)."""
        _check_status(status)
        valid = self._valid_tables(family, "members", ["member_id", "index", "status"])
        paths = [path for path, _ in valid]
        table = _locations([seen for _, seen in valid]).drop_duplicates("member_id", keep="first")
        table = table[table["status"] == status] if status is not None else table
        table = table.sort_values(["index", "member_id"], kind="stable").reset_index(drop=True)
        table["dst"], table["path"] = np.arange(len(table)), np.array(paths, dtype=object)[table["file"]]
        file, group, row = (table[c].to_numpy(np.int64) for c in ("file", "group", "row"))
        order = np.lexsort((table["dst"].to_numpy(), group, file))  # by row group, then output row
        cuts = np.flatnonzero(np.diff(file[order]) | np.diff(group[order])) + 1
        pieces = [_Piece(paths[file[at[0]]], int(group[at[0]]), row[at], at)  # a row group's dst rows are `at`
                  for at in np.split(order, cuts) if len(at)]
        return sorted(pieces, key=lambda piece: int(piece.dst[0])), table[["member_id", "path"]]

    def _read_group(self, piece: _Piece, column: str, n_params: int) -> tuple[np.ndarray | None, str | None]:
        """(the row group's params [rows, P] float32, read-only, None) or (None, why not)."""
        try:
            with open_parquet(self.fs, piece.path) as pf:
                chunk = pf.read_row_group(piece.group, columns=[column], use_threads=False).column(0)
            return params_matrix(chunk, n_params), None
        except READ_ERRORS as e:
            return None, f"row group {piece.group}: {type(e).__name__}: {e}"

    def _gather(self, pool, out: np.ndarray, b0: int, pieces: list[_Piece], column: str, cache: dict):
        """Fill out's rows [b0, b0 + len(out)) from the pieces that reach them, in `pool`'s threads.
        Returns {path: problem} of files that failed, and the blocks later rows still need."""
        b1 = b0 + len(out)
        todo = [p for p in pieces if p.dst[0] < b1 and p.dst[-1] >= b0]

        def one(piece: _Piece):
            key = (piece.path, piece.group)
            block, problem = (cache[key], None) if key in cache else self._read_group(piece, column, out.shape[1])
            if block is not None:
                _put(out, b0, piece, block)
            return key, (block if piece.dst[-1] >= b1 else None), problem  # drop it as soon as it is copied

        done = list(pool.map(one, todo))
        problems = {path: why for (path, _), _, why in done if why}
        return problems, {key: block for key, block, _ in done if block is not None}

    def weights(self, family: str, which: str = "final", status: str | None = "ok",
                workers: int | None = None, align_to: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(params [n, P] float32, member ids [n]) of one family, rows sorted by member index.

        The array is allocated once and each row group is copied straight into its rows, by
        `workers` threads (default: one per CPU), so peak memory is about the array itself. A
        file whose pages fail their checksum is left out, with a warning naming it.
        `align_to`: a member id among the rows; every row is then permuted onto it by weight
        matching (`zoo.align`; symmetric families only, about 0.02-0.6 s per member on a CPU).
        """
        out, ids = self._weights(family, which, status, workers)
        if align_to is None:
            return out, ids
        hit = np.flatnonzero(ids == align_to)
        if not len(hit):
            raise ValueError(f"align_to={align_to!r}: not among the {len(ids)} {family} members read "
                             f"(which={which!r}, status={status!r})")
        from ..alignment import align

        return align(out, out[hit[0]].copy(), family), ids

    def _weights(self, family: str, which: str, status: str | None, workers: int | None):
        column = _params_column(which)
        pieces, rows = self._plan(family, status)
        out = np.empty((len(rows), self.n_params(family)), dtype=np.float32)
        with ThreadPoolExecutor(_threads(workers, len(pieces))) as pool:
            problems, _ = self._gather(pool, out, 0, pieces, column, {})
        ids = rows["member_id"].to_numpy(dtype=object)
        if problems:  # rare: damage in pages that the small columns do not share; drop the file
            for path, why in problems.items():
                _skip(path, why)
            keep = ~rows["path"].isin(problems).to_numpy()
            out, ids = out[keep], ids[keep]
        return out, ids

    def iter_weights(self, family: str, which: str = "final", status: str | None = "ok", batch_size: int = 1024,
                     workers: int | None = None):
        """Yield (params [<= batch_size, P] float32, member ids) in the order of `weights`, holding
        one batch and the row groups that straddle batches: for zoos larger than memory. A file
        found damaged is left out from then on (with a warning); rows already yielded from it
        passed their checksums."""
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: must be an int >= 1")
        column, n_params = _params_column(which), self.n_params(family)
        pieces, rows = self._plan(family, status)
        cache, bad = {}, set()
        with ThreadPoolExecutor(_threads(workers, len(pieces))) as pool:
            for b0 in range(0, len(rows), batch_size):
                batch = rows.iloc[b0 : b0 + batch_size]
                out = np.empty((len(batch), n_params), dtype=np.float32)
                live = [p for p in pieces if p.path not in bad]
                problems, cache = self._gather(pool, out, b0, live, column, cache)
                for path, why in problems.items():
                    _skip(path, why)
                bad |= set(problems)
                keep = ~batch["path"].isin(bad).to_numpy()
                yield (out if keep.all() else out[keep]), batch["member_id"].to_numpy(dtype=object)[keep]

    def torch_dataset(self, family: str, which: str = "final", target: str = "test_acc",
                      status: str | None = "ok") -> "WeightDataset":
        """A map-style torch Dataset of (flat params [P] float32, target float32) per member."""
        numeric = [n for n, t, _ in MEMBER_COLUMNS if t is not PARAMS and pa.types.is_floating(t)]
        if target not in numeric:
            raise ValueError(f"target={target!r}: must be one of {numeric}")
        params, ids = self.weights(family, which, status)
        frame = self.members(["member_id", target], family=family).set_index("member_id")
        targets = frame[target].reindex(ids).to_numpy(np.float32)
        return WeightDataset(params, targets, ids)

    def checkpoints(self, family: str, columns=None) -> pd.DataFrame:
        """Recorded checkpoints of committed members: one row per (member_id, epoch), params as
        arrays. Rows of members whose members file is not readable are left out."""
        names = self.schema(family, "checkpoints").names
        columns = list(names if columns is None else columns)
        unknown = [c for c in columns if c not in names]
        if unknown:
            raise ValueError(f"columns={unknown}: unknown; allowed: {names}")
        read = list(dict.fromkeys(["member_id", "epoch", *columns]))
        n_params = self.n_params(family)
        frames = [_frame(seen.table, n_params) for _, seen in self._valid_tables(family, "checkpoints", read)]
        if not frames:
            return _frame(self.schema(family, "checkpoints").empty_table().select(columns), n_params)
        df = pd.concat(frames, ignore_index=True).drop_duplicates(["member_id", "epoch"], keep="first")
        members = {i for _, seen in self._valid_tables(family, "members", ["member_id"])
                   for i in seen.table.column("member_id").to_pylist()}
        df = df[df["member_id"].isin(members)]
        return df.sort_values(["member_id", "epoch"])[columns].reset_index(drop=True)


class WeightDataset(torch.utils.data.Dataset):
    """(params [P] float32 tensor, target float32 tensor) per member; `member_ids` in row order."""

    def __init__(self, params: np.ndarray, targets: np.ndarray, member_ids: np.ndarray):
        self.params = torch.from_numpy(params)  # [n, P], shares memory with the array
        self.targets = torch.from_numpy(targets)  # [n]
        self.member_ids = member_ids

    def __len__(self) -> int:
        return len(self.member_ids)

    def __getitem__(self, i: int):
        return self.params[i], self.targets[i]


def open_zoo(path, *, filesystem=None) -> Zoo:
    """Open a zoo: a local folder or a URI (file://, s3://, gs://, ...). Pass a configured
    pyarrow FileSystem as `filesystem` to use it with `path` as the path on it."""
    fs, root = (filesystem, os.fspath(path)) if filesystem is not None else store_fs.resolve(path)
    shown = os.fspath(path) if "://" in os.fspath(path) else root
    return Zoo(fs, root, read_manifest(fs, root), shown)
