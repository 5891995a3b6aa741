"""Reading a zoo: member tables as pandas, weights as one [n, P] float32 array or in batches.

Readers see only complete, valid files: hidden names (".", "_") are ignored; a file that cannot
be read, or whose schema, family or zoo seed is not this zoo's, is skipped with a
SkippedFileWarning naming it (`symzoo store verify` moves it aside). A member held by two files,
as after two writers raced on overlapping packs, is read once, from the file first in path order.
Rows come sorted by (member index, member id), whatever the files the members were packed into.
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
from . import pages
from .manifest import read_manifest
from .schema import MEMBER_COLUMNS, PARAMS, PARAMS_COLUMNS, checkpoints_schema, members_schema, schema_problems

TABLES = ("members", "checkpoints")
SCALAR_COLUMNS = tuple(n for n, t, _ in MEMBER_COLUMNS if t is not PARAMS)
STATUSES = ("ok", "diverged", None)  # None: every member


class SkippedFileWarning(UserWarning):
    """A file in the zoo that readers cannot use; run `symzoo store verify` to move it aside."""


class Inspection(NamedTuple):
    table: pa.Table | None  # the requested columns, when the file is valid
    row_group_rows: tuple[int, ...]  # rows per row group
    problem: str | None  # why the file is not usable, else None


def open_parquet(fs, path: str, *, verify_checksums: bool = False) -> pq.ParquetFile:
    """Plain reads, not memory maps: as fast here, and a read's memory then shows in its RSS."""
    return pq.ParquetFile(fs.open_input_file(path), page_checksum_verification=verify_checksums)


def _foreign(zoo: "Zoo", table: pa.Table, family: str) -> str | None:
    families = set(table.column("family").to_pylist())
    seeds = set(table.column("zoo_seed").to_pylist())
    if families - {family} or seeds - {zoo.manifest["zoo_seed"]}:
        return (f"foreign: holds families {sorted(families)} and zoo seeds {sorted(seeds)}; this folder is "
                f"family {family!r} of a zoo with seed {zoo.manifest['zoo_seed']}")
    return None


def inspect_file(zoo: "Zoo", path: str, family: str, table: str, columns=(), *, deep=False) -> Inspection:
    """Read `columns` of one file, or say why the file is unusable. `deep` reads every page and
    verifies page checksums, catching corruption that the footer and small columns do not show."""
    if table == "members":
        columns = list(dict.fromkeys([*columns, "family", "zoo_seed"]))
    try:
        with open_parquet(zoo.fs, path, verify_checksums=deep) as pf:
            problems = schema_problems(pf.schema_arrow, zoo.schema(family, table))
            if problems:
                return Inspection(None, (), "; ".join(problems))
            rows = tuple(pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups))
            got = pf.read(columns=list(columns), use_threads=False)
            for i in range(pf.num_row_groups if deep else 0):
                pf.read_row_group(i, use_threads=False)
    except (OSError, ValueError, pa.ArrowException) as e:
        return Inspection(None, (), f"unreadable: {type(e).__name__}: {e}")
    problem = _foreign(zoo, got, family) if table == "members" else None
    return Inspection(None if problem else got, rows, problem)


@dataclass(frozen=True)
class _Part:
    """The selected rows of one row group, and where they go in the output."""
    path: str
    row_group: int
    rows: np.ndarray  # [k] row indices within the row group
    dst: np.ndarray  # [k] output positions
    group_rows: int  # rows in the row group

    @property
    def whole(self) -> bool:
        """Every row of the group, to consecutive output rows: it can be read in place."""
        return len(self.rows) == self.group_rows and _is_range(self.rows) and _is_range(self.dst)


def _is_range(a: np.ndarray) -> bool:
    return len(a) > 0 and int(a[-1]) - int(a[0]) == len(a) - 1 and bool((np.diff(a) == 1).all())


def _place(out: np.ndarray, dst: np.ndarray, block: np.ndarray, rows: np.ndarray) -> None:
    """out[dst] = block[rows], as plain slice copies in the usual case of consecutive members."""
    src = block if len(rows) == len(block) and _is_range(rows) else block[rows]
    if _is_range(dst):
        out[dst[0] : dst[0] + len(dst)] = src
    else:
        out[dst] = src


def _threads(workers: int | None, tasks: int) -> int:
    """Threads overlap one row group's I/O with another's copy, and pyarrow's fallback decode of
    a list column (about 1 GB/s per core) scales with them: use every core by default."""
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers={workers!r}: must be an int >= 1 or None (one per CPU)")
    return max(1, min(workers or os.cpu_count() or 1, tasks))


def _params_column(which: str) -> str:
    if which not in ("init", "final"):
        raise ValueError(f"which={which!r}: must be 'init' or 'final'")
    return f"params_{which}"


def _check_status(status) -> None:
    if status not in STATUSES:
        raise ValueError(f"status={status!r}: must be one of {STATUSES}")


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

    def schema(self, family: str, table: str = "members") -> pa.Schema:
        if table not in TABLES:
            raise ValueError(f"table={table!r}: must be one of {TABLES}")
        make = members_schema if table == "members" else checkpoints_schema
        return make(self.n_params(family))

    def folder(self, family: str, table: str = "members") -> str:
        self._family(family)
        return posixpath.join(self.root, table, f"family={family}")

    def files(self, family: str, table: str = "members") -> list[str]:
        """The visible .parquet files of one family's table, in path order (valid or not)."""
        return store_fs.visible_parquet(self.fs, self.folder(family, table))

    def _valid_tables(self, family: str, table: str, columns) -> list[tuple[str, Inspection]]:
        found = []
        for path in self.files(family, table):
            seen = inspect_file(self, path, family, table, columns)
            if seen.problem:
                warnings.warn(f"skipping {path}: {seen.problem} (symzoo store verify moves it aside)",
                              SkippedFileWarning, stacklevel=3)
            else:
                found.append((path, seen))
        return found

    def committed_ids(self, family: str) -> set[str]:
        """Members whose results are committed: the work a resumed sweep skips."""
        return {i for _, seen in self._valid_tables(family, "members", ["member_id"])
                for i in seen.table.column("member_id").to_pylist()}

    def _family_frame(self, family: str, columns: list[str]) -> pd.DataFrame:
        tables = [seen.table.select(columns) for _, seen in self._valid_tables(family, "members", columns)]
        if not tables:
            return self.schema(family).empty_table().select(columns).to_pandas()
        df = pa.concat_tables(tables).to_pandas().drop_duplicates("member_id", keep="first")
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

    def _plan(self, family: str, status) -> tuple[list[_Part], np.ndarray]:
        """Which row of which row group holds each selected member, and its output position."""
        _check_status(status)
        rows, seen_ids = [], set()
        for path, seen in self._valid_tables(family, "members", ["member_id", "index", "status"]):
            starts = np.cumsum((0,) + seen.row_group_rows)
            t = seen.table.to_pydict()
            for r, (mid, index, st) in enumerate(zip(t["member_id"], t["index"], t["status"])):
                if mid not in seen_ids and (status is None or st == status):
                    g = int(np.searchsorted(starts, r, side="right")) - 1
                    rows.append((index, mid, path, g, r - starts[g], seen.row_group_rows[g]))
                seen_ids.add(mid)
        rows.sort(key=lambda row: row[:2])
        table = pd.DataFrame(rows, columns=["index", "member_id", "path", "group", "row", "group_rows"])
        table["dst"] = np.arange(len(table))
        parts = [_Part(p, int(g), grp["row"].to_numpy(np.int64), grp["dst"].to_numpy(np.int64), int(n))
                 for (p, g, n), grp in table.groupby(["path", "group", "group_rows"], sort=False)]
        parts.sort(key=lambda part: int(part.dst[0]))
        return parts, table["member_id"].to_numpy(dtype=object)

    def _read_block(self, part: _Part, column: str, n_params: int, into: np.ndarray | None = None):
        """The row group's params [group_rows, P] float32, written into `into` when given; None
        (with a warning) if its pages are damaged. The store's own files take the direct page
        reader (zoo.store.pages); others are decoded by pyarrow."""
        block = into if into is not None else np.empty((part.group_rows, n_params), dtype=np.float32)
        try:
            with self.fs.open_input_file(part.path) as source:
                meta = pq.ParquetFile(source).metadata.row_group(part.row_group)
                leaf = next(meta.column(i) for i in range(meta.num_columns)
                            if meta.column(i).path_in_schema.split(".")[0] == column)
                if not pages.copy_plain_floats(source, leaf, block.reshape(-1)):
                    chunked = pq.ParquetFile(source).read_row_group(part.row_group, columns=[column], use_threads=False)
                    block[:] = chunked.column(0).combine_chunks().flatten().to_numpy().reshape(-1, n_params)
            return block
        except (OSError, ValueError, pa.ArrowException, StopIteration) as e:
            warnings.warn(f"skipping {part.path} row group {part.row_group}: {e}", SkippedFileWarning, stacklevel=3)
            return None

    def _fill(self, out: np.ndarray, part: _Part, column: str) -> bool:
        if part.whole:  # the usual case: decode straight into the output rows
            return self._read_block(part, column, out.shape[1], into=out[part.dst[0] : part.dst[-1] + 1]) is not None
        block = self._read_block(part, column, out.shape[1])
        if block is not None:
            _place(out, part.dst, block, part.rows)
        return block is not None

    def weights(self, family: str, which: str = "final", status: str | None = "ok",
                workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(params [n, P] float32, member ids [n]) of one family, rows sorted by member index.

        The array is allocated once and each row group is decoded straight into its rows, by
        `workers` threads (default: one per CPU), so peak memory is about the array itself.
        """
        column = _params_column(which)
        parts, ids = self._plan(family, status)
        out = np.empty((len(ids), self.n_params(family)), dtype=np.float32)
        with ThreadPoolExecutor(_threads(workers, len(parts))) as pool:
            done = list(pool.map(lambda part: self._fill(out, part, column), parts))
        if not all(done):  # rare: a file damaged after its small columns were read; drop its rows
            keep = np.ones(len(ids), dtype=bool)
            for part, ok in zip(parts, done):
                keep[part.dst] &= ok
            out, ids = out[keep], ids[keep]
        return out, ids

    def _batch_piece(self, out: np.ndarray, b0: int, part: _Part, cached, column: str):
        """Put the part's rows that fall in out's range [b0, b0 + len(out)) in place. Returns (ok,
        the part's block when later batches still need rows of it)."""
        b1 = b0 + len(out)
        if cached is None and part.whole and part.dst[0] >= b0 and part.dst[-1] < b1:
            view = out[part.dst[0] - b0 : part.dst[-1] - b0 + 1]
            return self._read_block(part, column, out.shape[1], into=view) is not None, None
        block = cached if cached is not None else self._read_block(part, column, out.shape[1])
        if block is None:
            return False, None
        lo, hi = np.searchsorted(part.dst, [b0, b1])  # dst ascends within a part
        _place(out, part.dst[lo:hi] - b0, block, part.rows[lo:hi])
        return True, (block if part.dst[-1] >= b1 else None)

    def iter_weights(self, family: str, which: str = "final", status: str | None = "ok", batch_size: int = 1024,
                     workers: int | None = None):
        """Yield (params [<= batch_size, P] float32, member ids) in the order of `weights`, holding
        one batch and the row groups that straddle batches: for zoos larger than memory."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: must be an int >= 1")
        column, n_params = _params_column(which), self.n_params(family)
        parts, ids = self._plan(family, status)
        cache: dict[int, np.ndarray] = {}
        with ThreadPoolExecutor(_threads(workers, len(parts))) as pool:
            for b0 in range(0, len(ids), batch_size):
                out = np.empty((min(batch_size, len(ids) - b0), n_params), dtype=np.float32)
                needed = [i for i, part in enumerate(parts) if part.dst[0] < b0 + len(out) and part.dst[-1] >= b0]
                results = list(pool.map(lambda i: self._batch_piece(out, b0, parts[i], cache.get(i), column), needed))
                got = np.zeros(len(out), dtype=bool)
                for i, (ok, _) in zip(needed, results):
                    lo, hi = np.searchsorted(parts[i].dst, [b0, b0 + len(out)])
                    got[parts[i].dst[lo:hi] - b0] = ok
                cache = {i: block for i, (_, block) in zip(needed, results) if block is not None}
                yield (out if got.all() else out[got]), ids[b0 : b0 + len(out)][got]

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
        arrays. Rows of members whose members file is not committed are left out."""
        names = self.schema(family, "checkpoints").names
        columns = list(names if columns is None else columns)
        unknown = [c for c in columns if c not in names]
        if unknown:
            raise ValueError(f"columns={unknown}: unknown; allowed: {names}")
        read = list(dict.fromkeys(["member_id", "epoch", *columns]))
        tables = [seen.table for _, seen in self._valid_tables(family, "checkpoints", read)]
        if not tables:
            return self.schema(family, "checkpoints").empty_table().select(columns).to_pandas()
        df = pa.concat_tables(tables).to_pandas().drop_duplicates(["member_id", "epoch"], keep="first")
        df = df[df["member_id"].isin(self.committed_ids(family))]
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
