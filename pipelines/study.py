"""What the interpolation studies (`pipelines.mli`, `pipelines.lmc`) share: config checks, the
zoo recipe's images, curve files partitioned by one column, the output manifest and the command."""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import zoo
from zoo.families import check_family
from zoo.recipe import Recipe
from zoo.store import atomic_write_parquet
from zoo.store.fs import atomic_write_bytes
from zoo.store.manifest import code_version, package_versions
from zoo.validate import check, is_int


def check_common(cfg, *, optional: tuple[str, ...], lows: dict[str, int]) -> None:
    """Paths kept as strings (the config goes to JSON), known families, `optional` None or >= 1,
    `lows` ints at or above their bound."""
    for name in ("zoo", "out", "data"):
        v = getattr(cfg, name)
        ok = (v is None and name != "zoo") or (isinstance(v, (str, os.PathLike)) and os.fspath(v) != "")
        check(name, v, ok, "a non-empty path" + ("" if name == "zoo" else " or None"))
        object.__setattr__(cfg, name, None if v is None else os.fspath(v))
    if cfg.families is not None:
        object.__setattr__(cfg, "families", tuple(check_family(f) for f in cfg.families))
    for name in optional:
        v = getattr(cfg, name)
        check(name, v, v is None or (is_int(v) and v >= 1), "None or an int >= 1")
    for name, low in lows.items():
        v = getattr(cfg, name)
        check(name, v, is_int(v) and v >= low, f"an int >= {low}")


def recipe_images(manifest: dict, data_root, split: str, n_eval: int | None, eval_seed: int, stream: int):
    """(x [M, 3, 32, 32] uint8 numpy, y [M], recipe, about): the zoo recipe's `split` images
    ("train" | "test"), or a subset of `n_eval` of them picked by (eval_seed, stream)."""
    data = zoo.load_cifar10(data_root)
    want = manifest["data"]["sha256"]
    if data.identity["sha256"] != want:
        raise ValueError(f"data={data_root!r}: holds {data.identity['name']} (sha256 {data.identity['sha256']}); "
                         f"the zoo was trained on sha256 {want} ({manifest['data'].get('name')})")
    recipe = Recipe.recorded(manifest["recipe"])
    subset = recipe.apply_subset(data)
    x, y = getattr(subset, f"{split}_x"), getattr(subset, f"{split}_y")
    if n_eval is not None:
        check("n_eval", n_eval, n_eval <= len(y), f"<= {len(y)}, the recipe's {split} images")
        keep = np.sort(np.random.default_rng([eval_seed, stream]).permutation(len(y))[:n_eval])
        x, y = x[keep], y[keep]
    about = {"data": data.identity["name"], "data_sha256": want, f"recipe_n_{split}": getattr(recipe, f"n_{split}"),
             "recipe_subset_seed": recipe.subset_seed, "n_images": len(y), "n_eval": n_eval, "eval_seed": eval_seed}
    return np.ascontiguousarray(x), np.ascontiguousarray(y), recipe, about


def write_part(out: Path, rows: pd.DataFrame, *, partition: str, first: str, columns, schema: pa.Schema) -> Path:
    """Commit curve rows as `<partition>=<value>/part-<rows[first][0]>.parquet` (atomically)."""
    rel = f"{partition}={rows[partition].iloc[0]}/part-{rows[first].iloc[0]}.parquet"
    atomic_write_parquet(str(out), rel, pa.Table.from_pandas(rows[list(columns)], schema=schema, preserve_index=False))
    return Path(out) / rel


def read_parts(out: Path, *, partition: str, key: str, columns, schema: pa.Schema) -> pd.DataFrame:
    """Every committed curve row under `out` (files starting with "." or "_" are not committed);
    a `key` seen twice is an error that names it."""
    files = sorted(p for p in Path(out).glob(f"{partition}=*/*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in columns})
    df = pd.concat([pq.read_table(p, schema=schema).to_pandas() for p in files], ignore_index=True)
    dup = df[key][df[key].duplicated()]
    if len(dup):
        raise ValueError(f"curves under {out}: {key} {dup.iloc[0]!r} appears twice; remove one of its files")
    return df


def write_claim(out: Path, *, stage: str, claim: str, measurement: dict, cfg, stored=lambda old: old) -> None:
    """Write out/manifest.json; refuse an out folder whose curves were measured differently
    (`stored` maps an older manifest's measurement onto today's keys)."""
    path = out / "manifest.json"
    if path.exists():
        old = stored(json.loads(path.read_text())["measurement"])
        diff = {k: (old.get(k), v) for k, v in measurement.items() if old.get(k) != v}
        if diff:
            raise ValueError(f"out={str(out)!r}: its curves were measured otherwise, {{setting: (stored, asked)}} "
                             f"= {diff}; choose another --out")
    doc = {"stage": stage, "claim": claim, "measurement": measurement, "config": asdict(cfg),
           "code": code_version(), "packages": package_versions()}
    atomic_write_bytes(str(out), "manifest.json", json.dumps(doc, indent=2).encode())


NOT_FLAGS = ("zoo", "data")  # options of their own: --zoo is required, --data is shared by every command


def register_command(sub, name: str, cls, *, help: str, description: str, run) -> None:
    """`symzoo NAME --zoo PATH [--data DIR] [flags of cls]`: a study over a zoo; flags from `cls`."""
    from .data_cmd import add_data_option
    from .options import add_config_flags

    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("--zoo", required=True, metavar="PATH", help="the zoo (made by `symzoo generate`)")
    add_data_option(p)
    add_config_flags(p, cls, skip=NOT_FLAGS, title=f"{name} settings ({cls.__name__}'s defaults unless given)")
    p.set_defaults(func=run)


def config_from(args, cls):
    """cls's defaults with the command line's zoo, data and flags on top."""
    from .options import given

    return cls(zoo=args.zoo, data=args.data, **given(args, cls, skip=NOT_FLAGS))


class StudyConfig:
    """Mixin of a study's frozen config: from a mapping, and where its outputs go."""

    OUT_NAME = ""  # the output folder's name beside the zoo, when `out` is None

    @classmethod
    def from_dict(cls, d: dict):
        from zoo.validate import from_dict

        return from_dict(cls, d, cls.__name__)

    def out_dir(self) -> Path:
        return Path(self.out) if self.out is not None else Path(self.zoo) / self.OUT_NAME
