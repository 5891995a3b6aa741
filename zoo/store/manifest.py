"""A zoo's manifest: what the zoo is (seeds, families, recipe, data, schema) and what made it.

A zoo is created once and then resumed: resuming with a different zoo seed, recipe, data copy,
schema version or asym seed is refused, because the members already committed would no longer be
comparable to the new ones; so is code that builds other fixed pieces (W-Asym masks and values,
FiGLU's F) from the same asym seed (`fixed_sha256`). Resuming with other code or package versions
is allowed, and recorded.

The manifest is a few small records, each written once and never changed (`symzoo store upgrade`
of an older zoo and --new-zoo aside), so writers need no lock:

    manifest.json                       the zoo-wide record: schema version, zoo seed, recipe, data sha256
    manifest.d/family=<f>.json          one family's record: asym seed, options, fixed_sha256, P, layout
    manifest.d/writer-<utc>-<id>.json   one writer's code and package versions, replicates, data copy
    manifest.d/proposed/<name>/<id>.json   a proposal for manifest.json or family=<f>.json (transient)

`load_manifest` merges them into the one dict a single manifest.json used to be: `code_version`,
`packages`, `created_utc` and the data copy's name and path are the first writer's, `resumed_with`
lists later writers whose versions differ from the latest recorded ones, `replicates` is the most
any writer planned. Until a writer is recorded (its creator was killed first), the merged dict has
none of the first writer's fields. A zoo made before this layout keeps its manifest.json
(families inside) as it is: resuming it adds manifest.d/ records only, so no reader ever sees it
without its families.

Why no writer trains under a record that does not stay. A record is a pure function of its
settings, and all of it must agree: writers with equal settings write the same bytes (the data
copy's name and path, which differ from host to host, go in the writer record), and writers adding
different families write different files. The records a writer lacks are created in four steps: (1) write a proposal
for each under a name of one's own, (2) list each record's proposals, (3) read the record, (4)
refuse if (2) showed a proposal with other settings or (3) a record with other settings, else
write the records (3) did not find, manifest.json first; the proposals are removed after (4)
either way, so a writer that refuses writes no record. Of two writers X and Y with other settings
for a record, say Y's proposal appeared after X's; Y's listing comes later still, so it shows X's
proposal unless X had removed it, which X does only after its step (4): X refused, or the record
with X's settings exists and Y's read (3) finds it. So if X goes on, Y refuses, and the record
that stays is the one X checked. This needs only read-after-write and list consistency, which
local disks and S3 have (an NFS client may cache listings for seconds). Writers that overlap
exactly may both refuse; a rerun settles it. A writer killed between (1) and (4) leaves its
proposals behind: writers that agree with them ignore them, others are refused, naming one, until
someone deletes them (`symzoo store verify` does, once they are stale). A writer killed during (4)
leaves the records it wrote: manifest.json without some families, which a rerun adds.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import posixpath
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow.fs as pafs

from ..layout import layout
from ..families import FAMILIES, build, check_family, fixed_digest
from ..recipe import LEGACY
from . import fs as store_fs
from .schema import READABLE_VERSIONS, SCHEMA_VERSION

MANIFEST = "manifest.json"
RECORDS = "manifest.d"
PROPOSED = posixpath.join(RECORDS, "proposed")
ZOO_KEYS = ("schema_version", "zoo_seed", "recipe", "recipe_overrides", "data", "claim")  # manifest.json's
COPY_KEYS = ("name", "official", "path")  # of `data`: the copy one writer read, kept in its writer record
VERSIONS = ("code_version", "packages")
PACKAGES = ("torch", "numpy", "pyarrow", "pandas", "scipy", "scikit-learn", "matplotlib")
CLAIM = ("ResNet-8 members trained on CIFAR-10 with the paper's Table 8 hyperparameters; the input of "
         "the metanetwork (Sec. 5.3) and linear-interpolation (Sec. 5.4) studies")


class ManifestMismatch(ValueError):
    """An existing zoo was made with other settings, or another writer is creating it with other
    settings (`rival`: that writer's proposal); `differences` lists them, one line each."""

    def __init__(self, path: str, differences: list[str], rival: str | None = None):
        self.differences, self.rival = differences, rival
        if rival is None:
            head = f"the zoo at {path} was made with other settings"
            tail = ("Nothing was changed. Rerun with the zoo's settings to resume it, choose a different path for a "
                    "new zoo, or pass --new-zoo to restart this path (allowed only while it holds no members).")
        else:
            head = (f"another writer is creating the zoo at {path} with other settings right now (or was killed "
                    f"doing so: if none is running, delete {rival})")
            tail = "Nothing was trained. Rerun once the other writer has started, to resume with its settings."
        super().__init__(head + ":\n  " + "\n  ".join(differences) + "\n" + tail)


def _json(name: str, value):
    """A JSON round trip, so tuples compare equal to the lists they come back as."""
    try:
        return json.loads(json.dumps(value, sort_keys=True))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: must be JSON-serializable ({e})") from None


def _check_args(zoo_seed, families, recipe, recipe_overrides, data) -> None:
    if not isinstance(zoo_seed, int) or isinstance(zoo_seed, bool) or zoo_seed < 0:
        raise ValueError(f"zoo_seed={zoo_seed!r}: must be an int >= 0")
    if not isinstance(families, dict) or not families:
        raise ValueError(f"families={families!r}: must be a non-empty dict {{family: asym_seed}}")
    for family, seed in families.items():
        check_family(family)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"families[{family!r}]={seed!r}: the asym seed must be an int >= 0")
    for name, value in (("recipe", recipe), ("recipe_overrides", recipe_overrides), ("data", data)):
        if not isinstance(value, dict):
            raise ValueError(f"{name}={value!r}: must be a dict")
    if not isinstance(data.get("sha256"), str):
        raise ValueError(f"data={data!r}: must hold the copy's 'sha256' (zoo.Cifar10.identity)")


def _family_entry(family: str, asym_seed: int, layout_json) -> dict:
    """The fixed pieces' seed and digest, and the per-tensor layout (built from the code unless given)."""
    net = build(family, asym_seed)
    if layout_json is None:
        layout_json = layout(net).to_json()
    layout_json = _json(f"layouts[{family!r}]", layout_json)
    return {"asym_seed": asym_seed, "options": dict(FAMILIES[family].options), "fixed_sha256": fixed_digest(net),
            "n_params": sum(t["size"] for t in layout_json), "layout": layout_json}


def code_version() -> dict:
    """This package's version, and the git commit when it runs from a checkout of symzoo."""
    try:
        version = importlib.metadata.version("symzoo")
    except importlib.metadata.PackageNotFoundError:
        version = None
    root = Path(__file__).resolve().parents[2]
    commit = None
    try:
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        lines = top.stdout.split()
        if top.returncode == 0 and Path(lines[0]).resolve() == root:  # not some enclosing repository
            commit = lines[1]
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    return {"symzoo": version, "git_commit": commit}


def package_versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def build_manifest(*, zoo_seed, families, recipe, recipe_overrides, data, layouts=None, replicates: int = 1) -> dict:
    """The merged manifest a new zoo with these settings has (what `load_manifest` returns)."""
    _check_args(zoo_seed, families, recipe, recipe_overrides, data)
    layouts = layouts or {}
    unknown = sorted(set(layouts) - set(families))
    if unknown:
        raise ValueError(f"layouts has families {unknown} that are not in families {sorted(families)}")
    return {
        "schema_version": SCHEMA_VERSION,
        "zoo_seed": zoo_seed,
        "replicates": replicates,  # trainings per member index planned (zoo.members: replicate r), the most ever
        "families": {f: _family_entry(f, s, layouts.get(f)) for f, s in families.items()},
        "recipe": _json("recipe", recipe),
        "recipe_overrides": _json("recipe_overrides", recipe_overrides),
        "data": _json("data", data),
        "code_version": code_version(),
        "packages": package_versions(),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "claim": CLAIM,
    }


def _lines(pairs, held: str) -> list[str]:
    return [f"{name}: {a!r} {held}, {b!r} now" for name, a, b in pairs if a != b]


def zoo_differences(old: dict, new: dict, held: str = "in the zoo") -> list[str]:
    """The zoo-wide settings that must agree for `new` to resume the zoo of `old`, where they do not."""
    pairs = [("schema_version", old.get("schema_version"), new["schema_version"]),
             ("zoo_seed", old.get("zoo_seed"), new["zoo_seed"]),
             ("data.sha256", old.get("data", {}).get("sha256"), new["data"]["sha256"])]
    new_recipe = new["recipe"]
    predates = {k: v for k, v in LEGACY.items() if k in new_recipe}  # what fields a zoo predates meant then
    old_recipe = {**predates, **old.get("recipe", {})}
    pairs += [(f"recipe.{k}", old_recipe.get(k, "<absent>"), new_recipe.get(k, "<absent>"))
              for k in sorted(set(old_recipe) | set(new_recipe))]
    return _lines(pairs, held)


def family_differences(family: str, was: dict, now: dict, held: str = "in the zoo") -> list[str]:
    """What must agree between a family's stored record `was` and `now`, where it does not."""
    pairs = [(f"families.{family}.{k}", was.get(k), now[k]) for k in ("asym_seed", "n_params")]
    if "fixed_sha256" in was:  # zoos made before it was recorded resume without the check
        pairs.append((f"families.{family}.fixed_sha256", was["fixed_sha256"], now["fixed_sha256"]))
    if was.get("layout") != now["layout"]:
        pairs.append((f"families.{family}.layout", "tensor names/shapes/offsets", "different ones"))
    return _lines(pairs, held)


def differences(old: dict, new: dict) -> list[str]:
    """Every setting that must agree for `new` to resume the zoo of `old` (merged manifests), where it does not."""
    shared = [f for f in new["families"] if f in old.get("families", {})]
    return zoo_differences(old, new) + [line for f in shared
                                        for line in family_differences(f, old["families"][f], new["families"][f])]


def record_differences(stored: dict, mine: dict, held: str, prefix: str = "") -> list[str]:
    """Every leaf where two records differ: what a writer about to write `mine` next to `stored`
    (or a rival proposal) checks beyond the settings above, so equal settings mean equal bytes."""
    lines = []
    for k in sorted(set(stored) | set(mine)):
        a, b = stored.get(k, "<absent>"), mine.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            lines += record_differences(a, b, held, f"{prefix}{k}.")
        elif k == "layout" and a != b:
            lines.append(f"{prefix}layout: tensor names/shapes/offsets {held}, different ones now")
        elif a != b:
            lines.append(f"{prefix}{k}: {a!r} {held}, {b!r} now")
    return lines


def _dumps(record: dict) -> bytes:
    return json.dumps(record, indent=2, sort_keys=True).encode()


def _read_json(fs, path: str) -> dict | None:
    """The JSON file at `path`; None when there is none."""
    try:
        text = store_fs.read_bytes(fs, path)
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        raise ValueError(f"{path}: unreadable JSON ({e})") from None


def _files(fs, folder: str) -> list[str]:
    """The visible files directly in `folder`, in name order; [] if it does not exist."""
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and not store_fs.is_hidden(i.base_name))


def load_record(fs, root: str) -> dict | None:
    """manifest.json as stored: the zoo-wide record (with the families too, in a zoo made before
    manifest.d/); None when the zoo has none yet."""
    return _read_json(fs, posixpath.join(root, MANIFEST))


def _history(record: dict, writers: list[dict]) -> list[dict]:
    """Every recorded writer's {code_version, packages, utc}, the creator first."""
    first = [{**{k: record[k] for k in VERSIONS}, "utc": record.get("created_utc")}] if "code_version" in record else []
    return first + record.get("resumed_with", []) + [{k: w.get(k) for k in (*VERSIONS, "utc")} for w in writers]


def _merge(record: dict, families: dict, writers: list[dict]) -> dict:
    """The one dict readers get: manifest.json with the families and writers of manifest.d/ folded in."""
    merged = dict(record, families={**record.get("families", {}), **families})
    creator = writers[0] if writers and "code_version" not in record else {}  # else manifest.json names its copy
    if "data" in record:
        merged["data"] = {**record["data"], **creator.get("data", {})}
    merged["replicates"] = max([record.get("replicates", 1)] + [w.get("replicates", 1) for w in writers])
    history = _history(record, writers)
    if not history:
        return merged  # no writer recorded yet (its first one was killed before it could)
    merged.update({k: history[0][k] for k in VERSIONS}, created_utc=history[0]["utc"])
    resumed = []
    for entry in history[1:]:
        if any(entry[k] != (resumed[-1] if resumed else history[0])[k] for k in VERSIONS):
            resumed.append(entry)
    merged.pop("resumed_with", None)
    return dict(merged, resumed_with=resumed) if resumed else merged


def _family_order(family: str):
    return (list(FAMILIES).index(family) if family in FAMILIES else len(FAMILIES), family)


def load_manifest(fs, root: str) -> dict | None:
    """The zoo's manifest, merged from its records, whatever its version; None when it has none yet."""
    record = load_record(fs, root)
    if record is None:
        return None
    families, writers = {}, []
    for path in _files(fs, posixpath.join(root, RECORDS)):
        name = posixpath.basename(path)
        if name.startswith("family=") and name.endswith(".json"):
            families[name.removeprefix("family=").removesuffix(".json")] = _read_json(fs, path)
        elif name.startswith("writer-") and name.endswith(".json"):
            writers.append(_read_json(fs, path))
    families = {f: families[f] for f in sorted(families, key=_family_order) if families[f] is not None}
    return _merge(record, families, [w for w in writers if w is not None])


def read_manifest(fs, root: str) -> dict:
    """The manifest of a zoo this code can read."""
    manifest = load_manifest(fs, root)
    if manifest is None:
        raise FileNotFoundError(f"{root}: no {MANIFEST}, so not a symzoo zoo (symzoo generate creates one)")
    version = manifest.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"{root}/{MANIFEST}: schema_version={version!r}; this code reads versions {READABLE_VERSIONS}")
    return manifest


def upgrade_needed(root: str, manifest: dict) -> str | None:
    """The one line that tells a writer to upgrade an older zoo first; None for a current one."""
    version = manifest.get("schema_version")
    if version in READABLE_VERSIONS and version != SCHEMA_VERSION:
        return (f"{root} is a schema v{version} zoo, which this code reads but does not add to: run "
                f"`symzoo store upgrade {root}` (rewrites it to v{SCHEMA_VERSION} in place, resumable), then rerun")
    return None


def write_manifest(fs, root: str, record: dict) -> None:
    """Replace manifest.json: for `symzoo store upgrade` of a zoo made before manifest.d/, which no
    generate adds to meanwhile (it refuses older schema versions)."""
    store_fs.atomic_write_bytes(fs, posixpath.join(root, MANIFEST), _dumps(record))


def remove_manifest(fs, root: str) -> None:
    """Delete every record, the families first (--new-zoo, on a path without members)."""
    fs.delete_dir_contents(posixpath.join(root, RECORDS), missing_dir_ok=True)
    store_fs.remove_quietly(fs, posixpath.join(root, MANIFEST))


def _zoo_record(new: dict) -> dict:
    """manifest.json's content for the settings of `new`: nothing that differs from host to host."""
    shared = {k: new[k] for k in ZOO_KEYS}
    return dict(shared, data={k: v for k, v in new["data"].items() if k not in COPY_KEYS})


def _wanted(new: dict, old: dict | None) -> list[tuple[str, dict, Callable]]:
    """(name, record, compare) of each record `old` lacks for `new`, manifest.json first;
    `compare(stored, held) -> lines` names the settings first, else any other difference."""
    wanted = []
    if old is None:
        record = _zoo_record(new)
        wanted.append((MANIFEST, record, lambda stored, held: zoo_differences(stored, new, held)
                       or record_differences(stored, record, held)))
    for family, entry in new["families"].items():
        if family not in (old or {}).get("families", {}):
            entry = _json(f"families[{family!r}]", entry)
            wanted.append((posixpath.join(RECORDS, f"family={family}.json"), entry,
                           lambda stored, held, f=family, e=entry: family_differences(f, stored, e, held)
                           or record_differences(stored, e, held, f"families.{f}.")))
    return wanted


def _proposals(root: str, name: str) -> str:
    return posixpath.join(root, PROPOSED, posixpath.basename(name).removesuffix(".json"))


def _must_write(fs, root: str, name: str, mine: str, compare) -> bool:
    """Steps (2)-(4) for one record, short of writing it: whether it is still missing; raises
    ManifestMismatch if a rival proposal or the stored record has other settings."""
    proposals = {p: _read_json(fs, p) for p in _files(fs, _proposals(root, name)) if p != mine}
    rivals = {p: compare(r, "in the other writer's") for p, r in proposals.items() if r is not None}
    rivals = {p: lines for p, lines in rivals.items() if lines}  # a proposal gone meanwhile: its writer is done
    stored = _read_json(fs, posixpath.join(root, name))  # after the listing: see the module doc
    if stored is None and rivals:
        path, lines = next(iter(rivals.items()))
        raise ManifestMismatch(root, lines, rival=path)
    lines = compare(stored, "in the zoo") if stored is not None else []
    if lines:
        raise ManifestMismatch(root, lines)
    return stored is None


def _create(fs, root: str, wanted: list) -> None:
    """Steps (1)-(4) for every record in `wanted` at once: all of them, or none and ManifestMismatch."""
    mine = []
    try:
        for name, record, _ in wanted:  # step (1); named first, as a failed write may still leave it
            mine.append(posixpath.join(_proposals(root, name), f"{uuid.uuid4().hex}.json"))
            store_fs.atomic_write_bytes(fs, mine[-1], _dumps(record))
        missing = [(name, record) for (name, record, compare), proposal in zip(wanted, mine)
                   if _must_write(fs, root, name, proposal, compare)]
        for name, record in missing:
            store_fs.atomic_write_bytes(fs, posixpath.join(root, name), _dumps(record))
    finally:
        for proposal in mine:
            store_fs.remove_quietly(fs, proposal)


def _is_news(old: dict | None, new: dict) -> bool:
    """Whether this writer must be recorded: it creates the zoo, plans more replicates, or runs other
    versions than the latest recorded ones."""
    if old is None:
        return True
    latest = (old.get("resumed_with") or [old])[-1]
    return any(latest.get(k) != new[k] for k in VERSIONS) or new["replicates"] > old.get("replicates", 1)


def _record_writer(fs, root: str, new: dict) -> None:
    """Append-only: a name of its own, sorted by time."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    record = {**{k: new[k] for k in VERSIONS}, "utc": new["created_utc"], "replicates": new["replicates"],
              "data": {k: new["data"][k] for k in COPY_KEYS if k in new["data"]}}
    store_fs.atomic_write_bytes(fs, posixpath.join(root, RECORDS, f"writer-{stamp}-{uuid.uuid4().hex[:12]}.json"),
                                _dumps(record))


def settle(fs, root: str, new: dict, old: dict | None) -> None:
    """Create the records that `old` (the zoo's merged manifest, None for a new zoo) lacks for the
    settings of `new` (build_manifest), or raise ManifestMismatch having written none; then record
    this writer if it is news."""
    wanted = _wanted(new, old)
    if wanted:
        _create(fs, root, wanted)  # a record another writer created meanwhile is checked there, not written
    if _is_news(old, new):
        _record_writer(fs, root, new)
