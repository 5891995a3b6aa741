"""`upgrade`: rewrite a schema v1 zoo as v2 in place, file by file.

Each v1 file is read whole and converted (a params row's P float32 become one large_binary value,
byte for byte). The new file is written to memory, read back with page checksums verified and
compared with the v1 table: every scalar, and every params byte. Only then is it committed
atomically under the same name, so the rename itself replaces the v1 file: at every instant a
pack is one complete file, v1 or v2, and readers take either. A kill at any point therefore
leaves a readable zoo (at worst a hidden temporary file, which `verify` deletes once stale), and
a rerun converts only the files still at v1. The manifest says version 2 last, once every file
is v2, so a zoo whose manifest says 2 holds v2 files only. Files that do not read at all
(damaged, foreign) are left where they are and listed: `verify` moves them aside.
"""
from __future__ import annotations

import datetime
import hashlib
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import fs as store_fs
from .manifest import load_record, write_manifest
from .reader import READ_ERRORS, TABLES, Zoo, open_parquet, open_zoo
from .schema import PARAMS, SCHEMA_VERSION, check_table, file_version, params_array, params_matrix, schema_problems
from .writer import write_options


@dataclass
class UpgradeReport:
    zoo: str  # the zoo's path or URI
    rewritten: list[str] = field(default_factory=list)  # files this run converted to v2
    current: int = 0  # files that were v2 already (converted by an earlier, interrupted run)
    left: list[tuple[str, str]] = field(default_factory=list)  # (path, why): unreadable, left for `verify`
    rows_checked: int = 0  # rows (members, checkpoints) whose bytes were compared, old with new
    manifest_version: int = 0  # the manifest's schema version after this run

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"{self.zoo}: {len(self.rewritten)} files rewritten to schema v{SCHEMA_VERSION}, {self.current} "
                 f"already v{SCHEMA_VERSION}, {len(self.left)} left as they are; {self.rows_checked} rows compared "
                 f"byte for byte; manifest schema_version {self.manifest_version}"]
        lines += [f"  left: {path}: {why} (symzoo store verify moves it aside)" for path, why in self.left]
        return "\n".join(lines)


def convert(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A v1 table as `schema` (v2): params rows become large_binary values of the same bytes."""
    arrays = []
    for f in schema:
        column = table.column(f.name)
        if f.type == PARAMS:
            n_params = column.type.list_size
            arrays.append(params_array(list(params_matrix(column, n_params))))
        else:
            arrays.append(column.combine_chunks())
    converted = pa.Table.from_arrays(arrays, schema=schema)
    check_table(converted, schema)
    return converted


def _bits(column, n_params: int) -> np.ndarray:
    return params_matrix(column, n_params).view(np.uint32)  # bitwise: NaN compares equal to itself


def differences(old: pa.Table, new: pa.Table, schema: pa.Schema) -> list[str]:
    """Columns whose values differ between a v1 table and its v2 rewrite (bitwise for params)."""
    found = []
    for f in schema:
        if f.type == PARAMS:
            n_params = old.column(f.name).type.list_size
            same = np.array_equal(_bits(old.column(f.name), n_params), _bits(new.column(f.name), n_params))
        else:
            same = old.select([f.name]).to_pandas().equals(new.select([f.name]).to_pandas())
        if not same:
            found.append(f.name)
    return found


def _serialise(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **write_options(table.schema))
    return sink.getvalue()


def _rewrite(zoo: Zoo, path: str, family: str, table_name: str) -> int:
    """Convert one v1 file, check it, commit it over the old one; returns its rows."""
    with open_parquet(zoo.fs, path) as pf:
        problems = schema_problems(pf.schema_arrow, zoo.schema(family, table_name, 1))
        if problems:
            raise ValueError("; ".join(problems))
        old = pf.read(use_threads=False)
    schema = zoo.schema(family, table_name)
    data = _serialise(convert(old, schema))
    new = pq.read_table(pa.BufferReader(data), page_checksum_verification=True)
    changed = differences(old, new, schema)
    if changed or schema_problems(new.schema, schema):
        raise ValueError(f"the v2 rewrite differs from the file in columns {changed}; nothing was replaced")
    store_fs.atomic_write_bytes(zoo.fs, path, data)
    if hashlib.sha256(store_fs.read_bytes(zoo.fs, path)).digest() != hashlib.sha256(data).digest():
        raise OSError(f"{path}: the committed file's bytes differ from those written and checked")
    return old.num_rows


def _version_of(zoo: Zoo, path: str) -> int | None:
    with open_parquet(zoo.fs, path) as pf:
        return file_version(pf.schema_arrow)


def _upgrade_file(zoo: Zoo, report: UpgradeReport, path: str, family: str, table_name: str) -> None:
    try:
        if _version_of(zoo, path) == SCHEMA_VERSION:
            report.current += 1
            return
        report.rows_checked += _rewrite(zoo, path, family, table_name)
        report.rewritten.append(path)
    except READ_ERRORS as e:
        report.left.append((path, f"{type(e).__name__}: {e}"))


def _mark_upgraded(zoo: Zoo) -> int:
    """Record version 2 in manifest.json; returns the version it now says. Only zoos made before
    manifest.d/ are older than v2, and generate refuses to add to them, so no other writer changes
    the file meanwhile (another upgrade writes the same)."""
    record = load_record(zoo.fs, zoo.root)
    if record["schema_version"] != SCHEMA_VERSION:
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        upgraded = {"from": record["schema_version"], "utc": stamp}
        write_manifest(zoo.fs, zoo.root, dict(record, schema_version=SCHEMA_VERSION, upgraded=upgraded))
    return SCHEMA_VERSION


def upgrade(path, *, filesystem=None) -> UpgradeReport:
    """Rewrite every v1 members and checkpoints file of a zoo as v2, then the manifest. Resumable:
    rerun after any interruption. The manifest stays at v1 while a file is left unconverted
    (unreadable ones: run `symzoo store verify`, which moves them aside, then rerun)."""
    zoo = open_zoo(path, filesystem=filesystem)
    report = UpgradeReport(zoo.path, manifest_version=zoo.version)
    for table_name in TABLES:
        for family in zoo.families:
            for file in zoo.files(family, table_name):
                _upgrade_file(zoo, report, file, family, table_name)
    if not report.left:
        report.manifest_version = _mark_upgraded(zoo)
    return report
