"""manifest.json: what a zoo is (seeds, families, recipe, data, schema) and what made it.

`init_zoo` is the only writer. A zoo is created once and then resumed: resuming with a different
zoo seed, recipe, data copy, schema version or asym seed is refused, because the members already
committed would no longer be comparable to the new ones; so is code that builds other fixed
pieces (W-Asym masks and values, FiGLU's F) from the same asym seed (`fixed_sha256`). Resuming
with other code or package versions is allowed, and recorded: `code_version` / `packages` are
the creator's, and every resume whose versions differ from the latest recorded ones appends
them to `resumed_with`.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import posixpath
import subprocess
from pathlib import Path

from ..layout import layout
from ..families import FAMILIES, build, check_family, fixed_digest
from ..recipe import LEGACY
from . import fs as store_fs
from .schema import READABLE_VERSIONS, SCHEMA_VERSION

MANIFEST = "manifest.json"
PACKAGES = ("torch", "numpy", "pyarrow", "pandas", "scipy", "scikit-learn", "matplotlib")
CLAIM = ("ResNet-8 members trained on CIFAR-10 with the paper's Table 8 hyperparameters; the input of "
         "the metanetwork (Sec. 5.3) and linear-interpolation (Sec. 5.4) studies")


class ManifestMismatch(ValueError):
    """An existing zoo was made with other settings; `differences` lists them, one line each."""

    def __init__(self, path: str, differences: list[str]):
        self.differences = differences
        super().__init__(
            f"the zoo at {path} was made with other settings:\n  " + "\n  ".join(differences)
            + "\nNothing was changed. Rerun with the zoo's settings to resume it, choose a different path "
            "for a new zoo, or pass --new-zoo to restart this path (allowed only while it holds no members).")


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


def provenance_update(old: dict, new: dict) -> dict | None:
    """`old` with the versions of `new` appended to `resumed_with`, when they differ from the latest
    recorded ones (the creator's or the last resume's); None when nothing changed."""
    history = old.get("resumed_with", [])
    latest = history[-1] if history else old
    versions = {k: new[k] for k in ("code_version", "packages")}
    if all(latest.get(k) == v for k, v in versions.items()):
        return None
    return dict(old, resumed_with=[*history, {**versions, "utc": new["created_utc"]}])


def differences(old: dict, new: dict) -> list[str]:
    """The settings that must agree for `new` to resume the zoo of `old`, where they do not."""
    pairs = [("schema_version", old.get("schema_version"), new["schema_version"]),
             ("zoo_seed", old.get("zoo_seed"), new["zoo_seed"]),
             ("data.sha256", old.get("data", {}).get("sha256"), new["data"]["sha256"])]
    new_recipe = new["recipe"]
    predates = {k: v for k, v in LEGACY.items() if k in new_recipe}  # what fields a zoo predates meant then
    old_recipe = {**predates, **old.get("recipe", {})}
    pairs += [(f"recipe.{k}", old_recipe.get(k, "<absent>"), new_recipe.get(k, "<absent>"))
              for k in sorted(set(old_recipe) | set(new_recipe))]
    for family in [f for f in new["families"] if f in old.get("families", {})]:
        was, now = old["families"][family], new["families"][family]
        pairs += [(f"families.{family}.{k}", was.get(k), now[k]) for k in ("asym_seed", "n_params")]
        if "fixed_sha256" in was:  # zoos made before it was recorded resume without the check
            pairs.append((f"families.{family}.fixed_sha256", was["fixed_sha256"], now["fixed_sha256"]))
        if was.get("layout") != now["layout"]:
            pairs.append((f"families.{family}.layout", "tensor names/shapes/offsets", "different ones"))
    return [f"{name}: {a!r} in the zoo, {b!r} now" for name, a, b in pairs if a != b]


def load_manifest(fs, root: str) -> dict | None:
    """The manifest as stored, whatever its version; None when the zoo has none yet."""
    path = posixpath.join(root, MANIFEST)
    try:
        text = store_fs.read_bytes(fs, path)
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        raise ValueError(f"{path}: unreadable JSON ({e})") from None


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


def write_manifest(fs, root: str, manifest: dict) -> None:
    data = json.dumps(manifest, indent=2, sort_keys=True).encode()
    store_fs.atomic_write_bytes(fs, posixpath.join(root, MANIFEST), data)
