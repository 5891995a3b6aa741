"""The metanetwork stage (paper Section 5.3, Table 3, Appendix E.3) on any zoo in the store.

For each family and metanetwork: one run per learning rate in `lrs` (same seed, so only the rate
differs), the rate with the best validation R^2 is chosen, then `runs` fresh runs at that rate
give the reported mean ± std. Selection runs are not reused as final runs, so the reported runs
are not the ones the rate was picked on. With a single rate in `lrs` the selection is skipped.

Preprocessing (`inputs`, `targets`; metanets.data). The config's defaults, standardized inputs
and targets, are symzoo's; the companion code feeds raw weights and test_acc / 100, which the
`paper`, `gpu`, `demo` and `cpu` presets follow. `other_inputs` names metanetworks that are also
trained with the other `inputs` choice, each an extra Table 3 row such as "mlp (standardized
inputs)": same seeds, so each extra run is paired with a main run that differs only in its inputs,
and its own learning-rate selection, since the preprocessing moves the best rate. The paper is
not consistent on the MLP's rate: Table 9 gives 1e-4 on standard nets, while the companion's
final_mlp.sh trains it at 1e-2; both are in the grid, and the selection decides here.

Where things go: `out` (default `<zoo>/metanets`) holds
    runs/<family>/<row>/<phase>-<index>-lr<lr>-<key>.json   one record per run (resume unit); <row>
                     is the metanet, or e.g. mlp-standardized-inputs for an extra row
    runs.json        every run of this configuration: seed, lr, chosen lr, preprocessing, per-epoch curves
    table3.md, table3.csv, table3.tex, scatter.png, manifest.json
Resume: a run's key hashes what determines its result (zoo fingerprint, family, metanet, phase,
index, lr, seed, training settings, split fractions, target, weights, preprocessing, the
metanet's options except memory-only ones); a run whose record file exists with that key is read
back instead of trained. Records are written atomically. Progress, one line per run (a bar on a
terminal), goes to stderr with the runs done and left, the rate and the ETA.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from zoo.device import check_device, resolve_device
from zoo.progress import Progress, fmt_seconds
from zoo.store.fs import atomic_write_bytes
from zoo.store.manifest import code_version, package_versions
from zoo.validate import check as _check
from zoo.validate import from_dict, is_int as _is_int

from .data import INPUTS, TRAIN_FRAC, VAL_FRAC, check_preprocessing
from .loader import check_target, load_family, open_store
from .registry import METANETS, build, check_metanet
from .report import scatter, table3, write_tables
from .train import LR_GRID, TrainSettings, featurize_all, run_seed, select_lr, train_run

SCHEMA = 1  # version of the run records; part of every run key
CLAIM = ("How well metanetworks predict a member's CIFAR-10 test accuracy from its trainable weights, per "
         "family (paper Section 5.3, Table 3): test R^2 and Kendall tau at the best-validation epoch")


@dataclass(frozen=True, kw_only=True)
class MetanetConfig(TrainSettings):
    """The stage's settings; the training ones (epochs, batch_size, weight_decay, eval_batch) are
    TrainSettings', inherited so that each is declared once and a preset's section stays flat."""

    zoo: str  # zoo folder or URI in the store (made by zoo.store.init_zoo)
    out: str = ""  # output folder; "" = <zoo>/metanets
    families: tuple[str, ...] = ()  # families to study; () = every family of the zoo
    metanets: tuple[str, ...] = tuple(METANETS)  # names in metanets.registry.METANETS
    lrs: tuple[float, ...] = LR_GRID  # learning-rate grid, each > 0 (paper E.3.2)
    runs: int = 5  # final runs per (family, metanet) at the chosen lr, >= 1
    train_frac: float = TRAIN_FRAC  # fraction of usable members in train, in (0, 1)
    val_frac: float = VAL_FRAC  # fraction in val, in (0, 1); test takes the rest
    target: str = "test_acc"  # members-table metric to predict (zoo.records.METRICS)
    which: str = "final"  # weights to read: "final" (trained) or "init"
    inputs: str = "standardized"  # weights fed in: standardized (per tensor, train statistics) | raw (companion)
    targets: str = "standardized"  # standardized | fraction (the accuracy in [0, 1], the companion's)
    other_inputs: tuple[str, ...] = ()  # metanets also trained with the other inputs choice (extra rows); none if empty
    metanet_options: dict = field(default_factory=dict)  # {metanet: {option: value}} over its spec's defaults
    max_members: int = 0  # > 0: first that many usable members per family in sha256(id) order; 0 = all
    seed: int = 0  # base of every run seed, >= 0
    device: str = "auto"  # "auto" (cuda if available) | "cpu" | "cuda" | "cuda:N"

    def __post_init__(self):
        super().__post_init__()  # epochs, batch_size, weight_decay, eval_batch
        self._coerce()
        _check("zoo", self.zoo, isinstance(self.zoo, str) and bool(self.zoo), "a non-empty path")
        _check("out", self.out, isinstance(self.out, str) and (bool(self.out) or "://" not in self.zoo),
               "a path string ('' = <zoo>/metanets, for a local zoo only)")
        _check("metanets", self.metanets, bool(self.metanets), "a non-empty list")
        for name in self.metanets:
            check_metanet(name)
        _check("other_inputs", self.other_inputs, set(self.other_inputs) <= set(self.metanets),
               f"a subset of metanets {list(self.metanets)}")
        _check("lrs", self.lrs, bool(self.lrs) and all(isinstance(v, (int, float)) and 0 < v < math.inf
                                                        for v in self.lrs), "a non-empty list of floats > 0")
        for name in ("runs", "max_members", "seed"):
            value = getattr(self, name)
            _check(name, value, _is_int(value) and value >= (1 if name == "runs" else 0),
                   "an int >= 1" if name == "runs" else "an int >= 0")
        check_target(self.target)
        check_preprocessing(self.inputs, self.targets, self.target)
        _check("which", self.which, self.which in ("final", "init"), "'final' or 'init'")
        check_device(self.device)
        self._check_options()

    def _coerce(self) -> None:
        """Path-like objects and lists are welcome (YAML gives lists); the config keeps strings and tuples."""
        for name in ("zoo", "out"):
            if isinstance(getattr(self, name), os.PathLike):
                object.__setattr__(self, name, os.fspath(getattr(self, name)))
        for name in ("families", "metanets", "lrs", "other_inputs"):
            value = getattr(self, name)
            _check(name, value, isinstance(value, (list, tuple)), "a list")
            object.__setattr__(self, name, tuple(value))

    def _check_options(self) -> None:
        opts = self.metanet_options
        _check("metanet_options", opts, isinstance(opts, dict) and all(isinstance(v, dict) for v in opts.values()),
               "a mapping {metanet: {option: value}}")
        for name, given in opts.items():
            METANETS[check_metanet(name)].check_options(given)

    @classmethod
    def from_dict(cls, d: dict) -> MetanetConfig:
        return from_dict(cls, d, "metanets config")

    def settings(self) -> TrainSettings:
        return TrainSettings(**{f.name: getattr(self, f.name) for f in fields(TrainSettings)})

    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path(self.zoo) / "metanets"

    def split_args(self) -> dict:
        return {"train_frac": self.train_frac, "val_frac": self.val_frac, "max_members": self.max_members}

    def options(self, metanet: str) -> dict:
        """The metanet's options: its spec's defaults under this config's `metanet_options`."""
        return METANETS[metanet].check_options(self.metanet_options.get(metanet, {}))

    def rows(self) -> list[Row]:
        """Table 3's rows: every metanet with `inputs`, then the `other_inputs` ones with the other choice."""
        other = next(v for v in INPUTS if v != self.inputs)
        return ([Row(m, m, self.inputs) for m in self.metanets]
                + [Row(f"{m} ({other} inputs)", m, other) for m in self.other_inputs])


@dataclass(frozen=True)
class Row:
    name: str  # Table 3's row key: the metanet, or e.g. "mlp (standardized inputs)" for an extra row
    metanet: str  # registry name
    inputs: str  # one of metanets.data.INPUTS

    @property
    def folder(self) -> str:
        return self.metanet if self.name == self.metanet else f"{self.metanet}-{self.inputs}-inputs"


# ---------------------------------------------------------------------------------------------
# Runs and their records

def run_key(config: MetanetConfig, fingerprint: str, family: str, row: Row, phase: str, index: int,
            lr: float, seed: int) -> str:
    """What determines a run's result, hashed: equal keys, interchangeable records."""
    what = {"schema": SCHEMA, "zoo_fingerprint": fingerprint, "family": family, "metanet": row.metanet,
            "phase": phase, "index": index, "lr": lr, "seed": seed, "settings": asdict(config.settings()),
            "train_frac": config.train_frac, "val_frac": config.val_frac, "target": config.target,
            "which": config.which, "inputs": row.inputs, "targets": config.targets,
            "options": METANETS[row.metanet].result_options(config.options(row.metanet))}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def _finite_or_none(value):
    """Standard JSON has no NaN: write null, which readers take as NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def write_json(path: Path, obj) -> None:
    """Atomically: a reader, or a resumed stage, sees the old file or the whole new one."""
    text = json.dumps(_finite_or_none(obj), indent=1, allow_nan=False)
    atomic_write_bytes(str(path.parent), path.name, text.encode())


def _read_record(path: Path, key: str) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("key") == key else None


class Runner:
    """Trains or reads back the runs of one (family, row); counts which it did and ticks `progress`."""

    def __init__(self, config: MetanetConfig, data, row: Row, out: Path, device: torch.device, progress: Progress):
        self.config, self.data, self.row, self.device, self.progress = config, data, row, device, progress
        self.folder = out / "runs" / data.family / row.folder
        self.options = config.options(row.metanet)
        self.feats, self.trained, self.reused = None, 0, 0

    def run(self, phase: str, index: int, lr: float) -> dict:
        seed = run_seed(self.config.seed, self.data.family, self.row.metanet, phase, index)
        key = run_key(self.config, self.data.fingerprint, self.data.family, self.row, phase, index, lr, seed)
        path = self.folder / f"{phase}-{index}-lr{lr:g}-{key[:10]}.json"
        record = _read_record(path, key) if path.exists() else None
        where = f"{self.data.family}/{self.row.name} {phase}-{index} lr={lr:g}"
        if record is not None:
            self.reused += 1
            self.progress.update(1, f"{where}: reused")
            return record
        if self.feats is None:  # featurize once, and only when something must train
            net = build(self.row.metanet, self.data.layout, **self.options)
            self.feats = featurize_all(net, self.data.x, self.device)
        record = train_run(self.row.metanet, self.data, self.feats, lr=lr, seed=seed, settings=self.config.settings(),
                           options=self.options)
        record.update(row=self.row.name, phase=phase, index=index, key=key)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(path, record)
        self.trained += 1
        self.progress.update(1, f"{where}: trained in {record['wall_s']:.1f}s, val R^2 {record['val_r2']:.3f} at epoch "
                                f"{record['best_epoch']}, test R^2 {record['test_r2']:.3f} tau {record['test_tau']:.3f}")
        return json.loads(path.read_text())

    def all_runs(self) -> list[dict]:
        """Selection runs over the grid, then the final runs at the chosen rate."""
        lrs = self.config.lrs
        select = [self.run("select", 0, lr) for lr in lrs] if len(lrs) > 1 else []
        chosen = select_lr(select) if select else lrs[0]
        final = [self.run("final", i, chosen) for i in range(self.config.runs)]
        for record in select + final:
            record["chosen_lr"] = chosen
        return select + final


# ---------------------------------------------------------------------------------------------
# The stage

def _families(config: MetanetConfig, store) -> list[str]:
    missing = [f for f in config.families if f not in store.families]
    if missing:
        raise ValueError(f"families={list(config.families)}: {missing} not in the zoo at {store.path}, "
                         f"which has {store.families}")
    return list(config.families or store.families)


def runs_per_row(config: MetanetConfig) -> int:
    return (len(config.lrs) if len(config.lrs) > 1 else 0) + config.runs


def _manifest(config, store, infos: dict, done: list[dict], device) -> dict:
    return {
        "claim": CLAIM,
        "config": asdict(config),
        "preprocessing": {"inputs": config.inputs, "targets": config.targets,
                          "rows": {r.name: {"metanet": r.metanet, "inputs": r.inputs} for r in config.rows()}},
        "zoo": {"path": str(store.path), "zoo_seed": store.manifest.get("zoo_seed"),
                "data": store.manifest.get("data"), "code_version": store.manifest.get("code_version"),
                "member_count": sum(i["members"] for i in infos.values())},
        "families": infos,
        "chosen_lr": {f: {d["row"]: d["chosen_lr"] for d in done if d["family"] == f} for f in infos},
        "runs": {"trained": sum(d["trained"] for d in done), "reused": sum(d["reused"] for d in done)},
        "seeds": "each run's seed is metanets.train.run_seed(config.seed, family, metanet, phase, index), "
                 "recorded in its record; an extra row's runs share their metanet's seeds",
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "code_version": code_version(),
        "packages": package_versions(),
        "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "outputs": ["runs.json", "table3.md", "table3.csv", "table3.tex", "scatter.png"],
    }


def _load(config: MetanetConfig, store, family: str, inputs: str, progress: Progress, infos: dict):
    """One family's data with `inputs`; the manifest keeps the counts and every preprocessing's statistics."""
    data, info = load_family(store, family, target=config.target, which=config.which, inputs_rule=inputs,
                             targets_rule=config.targets, **config.split_args())
    scaler = info.pop("standardizer")
    infos.setdefault(family, {**info, "standardizer": {}})["standardizer"][inputs] = scaler
    progress.write(f"{family}: {info['usable']} usable of {info['members']} members, split {info['splits']}, "
                   f"{inputs} inputs, {config.targets} targets")
    return data


def _train_family(config, store, family, out, device, progress, infos) -> tuple[list[dict], list[dict]]:
    """Every row's runs on one family, one preprocessing's data in memory at a time."""
    records, done = [], []
    for inputs in dict.fromkeys(r.inputs for r in config.rows()):
        data = _load(config, store, family, inputs, progress, infos)
        for row in (r for r in config.rows() if r.inputs == inputs):
            runner = Runner(config, data, row, out, device, progress)
            records += runner.all_runs()
            done.append({"family": family, "row": row.name, "chosen_lr": records[-1]["chosen_lr"],
                         "trained": runner.trained, "reused": runner.reused})
            del runner  # its features: one row's on the device at a time
        del data
    return records, done


def run(config: MetanetConfig) -> Path:
    """Train (or read back) every run, then write runs.json, Table 3, the scatter plot and the
    manifest into `config.out_dir()`, which is returned."""
    out, device = config.out_dir(), resolve_device(config.device)
    store = open_store(config.zoo)
    families = _families(config, store)
    total = len(families) * len(config.rows()) * runs_per_row(config)
    progress = Progress(total, desc="symzoo metanets", unit="runs", every_s=0)  # a line per run in a log
    infos, done, records = {}, [], []
    try:
        for family in families:
            family_records, family_done = _train_family(config, store, family, out, device, progress, infos)
            records += family_records
            done += family_done
    finally:
        progress.close()
    progress.write(f"symzoo metanets: trained {sum(d['trained'] for d in done)} runs and reused "
                   f"{sum(d['reused'] for d in done)} in {fmt_seconds(time.monotonic() - progress.start)}")
    return write_outputs(out, records, _manifest(config, store, infos, done, device))


def write_outputs(out: Path, records: list[dict], manifest: dict) -> Path:
    """runs.json first; the tables and the plot are then built from that file alone."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "runs.json", records)
    runs = json.loads((out / "runs.json").read_text())
    data = manifest.get("zoo", {}).get("data")
    write_tables(table3(runs), out, data)
    scatter(runs, out / "scatter.png", data)
    write_json(out / "manifest.json", manifest)
    return out
