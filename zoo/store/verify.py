"""`verify`: find the files a zoo's readers would skip, say why, and move them aside.

A file is bad when it cannot be read in full (truncated, zero bytes, a damaged page caught by its
checksum), when its schema is not this zoo's, when it holds another family or zoo seed, or when
it sits outside a family=<f> folder of the manifest. Bad files go to <zoo>/_quarantine/, which
readers, pyarrow.dataset and the DuckDB glob <zoo>/members/*/*.parquet all ignore; their members
count as not done, so the next generate trains them again. Hidden temporary files older than
`stale_temp_s` are leftovers of crashed commits and are deleted, in members/, checkpoints/ and
among the manifest's records. So are proposals under manifest.d/proposed/ as old: writers killed
while creating a record leave them behind (a live writer removes its own within seconds), and
they refuse every writer with other settings.
"""
from __future__ import annotations

import datetime
import posixpath
from collections import Counter
from dataclasses import asdict, dataclass, field

import pyarrow.fs as pafs

from . import fs as store_fs
from .manifest import MANIFEST, PROPOSED, RECORDS
from .reader import TABLES, Zoo, inspect_file, open_zoo

QUARANTINE = "_quarantine"


@dataclass
class VerifyReport:
    zoo: str  # the zoo's path or URI
    files_checked: int = 0  # visible .parquet files under members/ and checkpoints/
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    moved: list[tuple[str, str]] = field(default_factory=list)  # (from, to)
    stale_temps: list[str] = field(default_factory=list)  # hidden temporaries of crashed commits (deleted if move)
    stale_proposals: list[str] = field(default_factory=list)  # manifest proposals of killed writers (deleted if move)
    duplicates: dict[str, list[str]] = field(default_factory=dict)  # member_id -> the valid files holding it
    members: dict[str, dict[str, int]] = field(default_factory=dict)  # family -> {status: distinct members}

    @property
    def clean(self) -> bool:
        """No bad files. Duplicates are not damage: symzoo's readers keep one row per member."""
        return not self.bad

    def to_dict(self) -> dict:
        return dict(asdict(self), clean=self.clean)

    def summary(self) -> str:
        lines = [f"{self.zoo}: {self.files_checked} files checked, {len(self.bad)} bad, "
                 f"{len(self.duplicates)} members in more than one file, {len(self.stale_temps)} stale temp files, "
                 f"{len(self.stale_proposals)} stale manifest proposals"]
        lines += [f"  bad: {path}: {reason}" for path, reason in self.bad]
        lines += [f"  stale proposal: {path}" for path in self.stale_proposals]
        lines += [f"  moved: {src} -> {dst}" for src, dst in self.moved]
        lines += [f"  duplicate: {mid} in {', '.join(paths)}" for mid, paths in sorted(self.duplicates.items())]
        lines += [f"  {family}: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no members")
                  for family, counts in self.members.items()]
        return "\n".join(lines)


def _family_of(zoo: Zoo, rel: str) -> str | None:
    parts = rel.split("/")
    family = parts[0].removeprefix("family=")
    return family if len(parts) == 2 and parts[0].startswith("family=") and family in zoo.families else None


def _quarantine(zoo: Zoo, table: str, rel: str, src: str) -> str:
    """Move a bad file under _quarantine/, never over an earlier one."""
    dst = posixpath.join(zoo.root, QUARANTINE, table, rel)
    base, n = dst, 0
    while zoo.fs.get_file_info(dst).type != pafs.FileType.NotFound:
        n += 1
        dst = f"{base}.{n}"
    zoo.fs.create_dir(posixpath.dirname(dst), recursive=True)
    zoo.fs.move(src, dst)
    return dst


def _is_stale(info, stale_temp_s: float) -> bool:
    if info.mtime is None:
        return False  # no clock to judge by: it may belong to a commit in progress
    age = datetime.datetime.now(datetime.timezone.utc) - info.mtime.astimezone(datetime.timezone.utc)
    return age.total_seconds() > stale_temp_s


def _inspect(zoo: Zoo, table: str, rel: str, path: str, deep: bool):
    """(family, problem or None, inspection) of one visible file."""
    family = _family_of(zoo, rel)
    if family is None:
        return None, f"not in a family=<f> folder of this zoo's families {zoo.families}", None
    columns = ["member_id", "status"] if table == "members" else ["member_id"]
    seen = inspect_file(zoo, path, family, table, columns, deep=deep)
    return family, seen.problem, seen


def _is_stale_temp(info, rel: str, stale_temp_s: float) -> bool:
    name = posixpath.basename(rel)
    return name.startswith(".") and name.endswith(store_fs.TEMP_SUFFIX) and _is_stale(info, stale_temp_s)


def _manifest_leftovers(zoo: Zoo, stale_temp_s: float) -> tuple[list[str], list[str]]:
    """(stale temp files, stale proposals) of the manifest's records: manifest.json and manifest.d/."""
    at_root = zoo.fs.get_file_info(pafs.FileSelector(zoo.root))
    infos = [i for i in at_root if i.type == pafs.FileType.File and i.base_name.startswith(f".{MANIFEST}.")]
    temps, proposals = [], []
    for info in infos + store_fs.list_files(zoo.fs, posixpath.join(zoo.root, RECORDS)):
        rel = posixpath.relpath(info.path, zoo.root)
        if _is_stale_temp(info, rel, stale_temp_s):
            temps.append(info.path)
        elif rel.startswith(PROPOSED + "/") and rel.endswith(".json") and _is_stale(info, stale_temp_s):
            proposals.append(info.path)
    return temps, proposals


def verify(path, *, move: bool = True, deep: bool = True, stale_temp_s: float = 3600.0,
           filesystem=None) -> VerifyReport:
    """Check every file of a zoo; with `move`, put bad ones in _quarantine/ and delete stale temps
    and stale manifest proposals.

    deep: read every page with checksum verification (reads the whole zoo); else only footers,
    schemas and the small columns, which catches truncated, empty and foreign files.
    """
    zoo = open_zoo(path, filesystem=filesystem)
    report = VerifyReport(zoo.path)
    held: dict[str, dict] = {f: {} for f in zoo.families}  # family -> member_id -> (status, [files])
    for table in TABLES:
        base = posixpath.join(zoo.root, table)
        for info in store_fs.list_files(zoo.fs, base):
            rel = posixpath.relpath(info.path, base)
            if _is_stale_temp(info, rel, stale_temp_s):
                report.stale_temps.append(info.path)
                if move:
                    zoo.fs.delete_file(info.path)
                continue
            if not rel.endswith(".parquet") or store_fs.is_hidden(rel):
                continue
            report.files_checked += 1
            family, problem, seen = _inspect(zoo, table, rel, info.path, deep)
            if problem:
                report.bad.append((info.path, problem))
                if move:
                    report.moved.append((info.path, _quarantine(zoo, table, rel, info.path)))
            elif table == "members":
                for mid, status in zip(seen.table["member_id"].to_pylist(), seen.table["status"].to_pylist()):
                    held[family].setdefault(mid, (status, []))[1].append(info.path)
    temps, report.stale_proposals = _manifest_leftovers(zoo, stale_temp_s)
    report.stale_temps += temps
    if move:
        for leftover in temps + report.stale_proposals:
            zoo.fs.delete_file(leftover)
    for family, members in held.items():
        report.members[family] = dict(Counter(status for status, _ in members.values()))
        report.duplicates.update({mid: paths for mid, (_, paths) in members.items() if len(paths) > 1})
    return report
