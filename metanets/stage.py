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
Runs go in two waves: every selection run of every (family, row), then every final run at its
cell's chosen rate. Each wave is handed, less the runs that have a record, to an executor: in this
process (`InProcess`, the default) or `cluster.tune.TuneExecutor` (executor: ray), where each run
is a Ray Tune trial that loads its family from the zoo and writes its record as this process would.
Tune's per-epoch curves then go to <out>/tune/<wave>-<time>/<run>/ (progress.csv, TensorBoard).
The records, not Tune's experiment state, decide what is done: a rerun plans the same runs and
trains those without a record, so a killed driver costs only the runs that were in flight.

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
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Protocol

import torch

from zoo.device import check_device, resolve_device
from zoo.families import FAMILIES
from zoo.progress import Progress, fmt_seconds
from zoo.store.fs import atomic_write_bytes, local_folder
from zoo.store.manifest import code_version, package_versions
from zoo.validate import check as _check
from zoo.validate import check_ray_fields, from_dict, is_int as _is_int

from .data import INPUTS, TRAIN_FRAC, VAL_FRAC, FamilyData, check_preprocessing
from .loader import check_target, load_family, open_store
from .registry import METANETS, build, check_metanet
from .report import scatter, table3, write_tables
from .train import LR_GRID, TrainSettings, featurize_all, run_seed, select_lr, train_run

SCHEMA = 1  # version of the run records; part of every run key
EXECUTORS = ("local", "ray")  # MetanetConfig.executor: in this process | Ray Tune (cluster.tune)
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
    aligned: tuple[str, ...] = ()  # metanets also trained on aligned weights (symmetric families only; extra rows)
    metanet_options: dict = field(default_factory=dict)  # {metanet: {option: value}} over its spec's defaults
    max_members: int = 0  # > 0: first that many usable members per family in sha256(id) order; 0 = all
    seed: int = 0  # base of every run seed, >= 0
    device: str = "auto"  # "auto" (cuda if available) | "cpu" | "cuda" | "cuda:N"
    # local by default: on 2 CPU cores a Tune trial costs 1.5-2.5 s of a core (actors reused) and a wave
    # about 5 s to start, where a smoke-preset run trains in 0.1 s
    executor: str = "local"  # "local" (in this process) | "ray" (each run a Ray Tune trial: cluster.tune)
    address: str | None = None  # Ray address (executor ray only); None = $RAY_ADDRESS, else Ray embedded here
    gpus_per_trial: float = 0.25  # GPU share of each Tune trial where Ray has GPUs: (0, 1] or whole GPUs; 0 = CPU only

    def __post_init__(self):
        super().__post_init__()  # epochs, batch_size, weight_decay, eval_batch
        self._coerce()
        _check("zoo", self.zoo, isinstance(self.zoo, str) and bool(self.zoo), "a non-empty path")
        _check("out", self.out, isinstance(self.out, str), "a path or URI string ('' = <zoo>/metanets)")
        _check("metanets", self.metanets, bool(self.metanets), "a non-empty list")
        for name in self.metanets:
            check_metanet(name)
        _check("other_inputs", self.other_inputs, set(self.other_inputs) <= set(self.metanets),
               f"a subset of metanets {list(self.metanets)}")
        _check("aligned", self.aligned, set(self.aligned) <= set(self.metanets),
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
        self._check_executor()
        self._check_options()

    def _coerce(self) -> None:
        """Path-like objects and lists are welcome (YAML gives lists); the config keeps strings and tuples."""
        for name in ("zoo", "out"):
            if isinstance(getattr(self, name), os.PathLike):
                object.__setattr__(self, name, os.fspath(getattr(self, name)))
        for name in ("families", "metanets", "lrs", "other_inputs", "aligned"):
            value = getattr(self, name)
            _check(name, value, isinstance(value, (list, tuple)), "a list")
            object.__setattr__(self, name, tuple(value))

    def _check_executor(self) -> None:
        check_ray_fields(self.executor, EXECUTORS, self.address, "gpus_per_trial", self.gpus_per_trial)

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
        """Table 3's rows: every metanet with `inputs`, then the `other_inputs` ones with the other choice,
        then the `aligned` ones on aligned weights (metanets.data, "Alignment")."""
        other = next(v for v in INPUTS if v != self.inputs)
        return ([Row(m, m, self.inputs) for m in self.metanets]
                + [Row(f"{m} ({other} inputs)", m, other) for m in self.other_inputs]
                + [Row(f"{m} (aligned)", m, self.inputs, aligned=True) for m in self.aligned])


@dataclass(frozen=True)
class Row:
    name: str  # Table 3's row key: the metanet, or e.g. "mlp (standardized inputs)" for an extra row
    metanet: str  # registry name
    inputs: str  # one of metanets.data.INPUTS
    aligned: bool = False  # trained on members aligned by weight matching to one train member

    @property
    def folder(self) -> str:
        if self.aligned:
            return f"{self.metanet}-aligned"
        return self.metanet if self.name == self.metanet else f"{self.metanet}-{self.inputs}-inputs"

    def applies(self, family: str) -> bool:
        """Aligned rows exist only for families whose permutations are symmetries (Family.symmetric)."""
        return not self.aligned or FAMILIES[family].symmetric


# ---------------------------------------------------------------------------------------------
# Runs and their records

def run_key(config: MetanetConfig, fingerprint: str, family: str, row: Row, phase: str, index: int,
            lr: float, seed: int) -> str:
    """What determines a run's result, hashed: equal keys, interchangeable records."""
    what = {"schema": SCHEMA, "zoo_fingerprint": fingerprint, "family": family, "metanet": row.metanet,
            "phase": phase, "index": index, "lr": lr, "seed": seed, "settings": asdict(config.settings()),
            "train_frac": config.train_frac, "val_frac": config.val_frac, "target": config.target,
            "which": config.which, "inputs": row.inputs, "targets": config.targets,
            "options": METANETS[row.metanet].result_options(config.options(row.metanet)),
            **({"aligned": "weight matching to the lowest train member id"} if row.aligned else {})}
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


@dataclass(frozen=True, kw_only=True)
class Run:
    """One training run: what determines it (hashed into `key`) and the file that records it."""

    family: str
    row: Row
    phase: str  # "select" (one per rate of the grid) | "final" (at the chosen rate)
    index: int  # 0 for selection runs, 0..runs-1 for final runs
    lr: float
    seed: int  # metanets.train.run_seed of (config.seed, family, metanet, phase, index)
    fingerprint: str  # the family's zoo fingerprint when planned; training on other members is refused
    key: str  # run_key: a record holding this key is this run's result
    path: str  # the record file, <out>/runs/<family>/<row folder>/<phase>-<index>-lr<lr>-<key>.json

    @property
    def name(self) -> str:
        return f"{self.family}/{self.row.name} {self.phase}-{self.index} lr={self.lr:g}"

    @property
    def group(self) -> tuple[str, str, bool]:
        """The data set the run trains on: (family, inputs, aligned)."""
        return self.family, self.row.inputs, self.row.aligned

    def record(self) -> dict | None:
        """The run's record if its file holds one with this key; None while the run is still to do."""
        return _read_record(Path(self.path), self.key)


@dataclass(frozen=True)
class Planner:
    """The runs of the protocol, addressed: the same config and zoo always plan the same runs."""

    config: MetanetConfig
    out: Path
    fingerprints: dict  # {family: zoo fingerprint}

    def run(self, family: str, row: Row, phase: str, index: int, lr: float) -> Run:
        fingerprint = self.fingerprints[family]
        seed = run_seed(self.config.seed, family, row.metanet, phase, index)
        key = run_key(self.config, fingerprint, family, row, phase, index, lr, seed)
        path = self.out / "runs" / family / row.folder / f"{phase}-{index}-lr{lr:g}-{key[:10]}.json"
        return Run(family=family, row=row, phase=phase, index=index, lr=lr, seed=seed, fingerprint=fingerprint,
                   key=key, path=str(path))

    def selection(self, family: str, row: Row) -> list[Run]:
        """One run per rate of the grid; none with a single rate (nothing to choose)."""
        lrs = self.config.lrs
        return [self.run(family, row, "select", 0, lr) for lr in lrs] if len(lrs) > 1 else []

    def final(self, family: str, row: Row, lr: float) -> list[Run]:
        return [self.run(family, row, "final", i, lr) for i in range(self.config.runs)]


def chosen_lr(config: MetanetConfig, selection: list[Run]) -> float:
    """The selection's best rate, from the records (every one must exist); the only rate if none."""
    return select_lr([run.record() for run in selection]) if selection else config.lrs[0]


# ---------------------------------------------------------------------------------------------
# Training runs: data, features, executors

class Families:
    """Each family's data with one inputs choice, loaded from the zoo, one data set in memory at a
    time (a paper-size family is 3 GB); `infos` gathers the counts and statistics of each load."""

    def __init__(self, config: MetanetConfig, store, log=None):
        self.config, self.store, self.log = config, store, log
        self.infos, self.loaded, self.data = {}, None, None

    def get(self, family: str, inputs: str, aligned: bool = False) -> FamilyData:
        if self.loaded != (family, inputs, aligned):
            self.drop()  # the old data set goes before the new one comes
            self.data, self.loaded = self._load(family, inputs, aligned), (family, inputs, aligned)
        return self.data

    def drop(self) -> None:
        self.loaded = self.data = None

    def _load(self, family: str, inputs: str, aligned: bool = False) -> FamilyData:
        config = self.config
        data, info = load_family(self.store, family, target=config.target, which=config.which, inputs_rule=inputs,
                                 targets_rule=config.targets, aligned=aligned, **config.split_args())
        if aligned:  # the data set's statistics are the unaligned one's; what alignment cost goes on record
            self.infos.setdefault(family, {})["alignment"] = info["alignment"]
            return data
        scalers = self.infos.setdefault(family, {**info, "standardizer": {}})["standardizer"]
        if inputs not in scalers and self.log:
            self.log(f"{family}: {info['usable']} usable of {info['members']} members, split {info['splits']}, "
                     f"{inputs} inputs, {config.targets} targets")
        scalers[inputs] = info["standardizer"]
        return data


class Trainer:
    """Trains runs and writes their records: the data from `families`, a row's features computed
    once and kept while that row's runs train. The in-process executor and every Tune trial use it."""

    def __init__(self, config: MetanetConfig, families: Families, device: torch.device):
        self.config, self.families, self.device = config, families, device
        self.feats_of, self.feats = None, None

    def train(self, run: Run, on_epoch=None) -> dict:
        """Train `run` (`on_epoch` as train_run's) and write its record atomically; returns the record."""
        data = self._data(run)
        if data.fingerprint != run.fingerprint:
            raise ValueError(f"{run.name}: the zoo's {run.family} members changed since the run was planned "
                             f"(fingerprint {data.fingerprint}, planned on {run.fingerprint}); rerun the stage")
        record = train_run(run.row.metanet, data, self.feats, lr=run.lr, seed=run.seed,
                           settings=self.config.settings(), options=self.config.options(run.row.metanet),
                           on_epoch=on_epoch)
        record.update(row=run.row.name, phase=run.phase, index=run.index, key=run.key,
                      **({"alignment": data.alignment} if data.alignment else {}))
        path = Path(run.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, record)
        return record

    def _data(self, run: Run) -> FamilyData:
        """The run's data, its row's features in `self.feats` (featurized only when something trains)."""
        if self.feats_of != (run.family, run.row.name):
            self.feats_of = self.feats = None  # they may share the memory of a data set about to go
            data = self.families.get(*run.group)
            net = build(run.row.metanet, data.layout, **self.config.options(run.row.metanet))
            self.feats, self.feats_of = featurize_all(net, data.x, self.device), (run.family, run.row.name)
        return self.families.get(*run.group)


class Executor(Protocol):
    """Trains `runs` (each with a `Trainer`, which writes its record), in any order or at once,
    calling `on_done(run)` in this process as each finishes; raises if any failed. The in-process
    one is `InProcess`; `cluster.tune.TuneExecutor` makes each run a Ray Tune trial."""

    def run(self, config: MetanetConfig, runs: list[Run], on_done: Callable[[Run], None]) -> None: ...


class InProcess:
    """The runs one after another in this process, grouped by data set, the one in memory first,
    so each (family, inputs) loads once per wave."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def run(self, config: MetanetConfig, runs: list[Run], on_done: Callable[[Run], None]) -> None:
        groups = sorted(dict.fromkeys(r.group for r in runs), key=lambda g: g != self.trainer.families.loaded)
        for group in groups:
            for run in (r for r in runs if r.group == group):
                self.trainer.train(run)
                on_done(run)


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


def _fingerprints(config: MetanetConfig, families: Families, names: list[str]) -> dict[str, str]:
    """Each family's zoo fingerprint (every run key holds it); every (family, inputs) data set is
    loaded once here, so the manifest has each one's statistics even when every run is reused."""
    out = {}
    for family in names:
        for inputs in dict.fromkeys(r.inputs for r in config.rows()):
            out[family] = families.get(family, inputs).fingerprint
    return out


def _summary(run: Run) -> str:
    r = run.record()
    return (f"{run.name}: trained in {r['wall_s']:.1f}s on {r['device']}, val R^2 {_show(r['val_r2'])} at epoch "
            f"{r['best_epoch']}, test R^2 {_show(r['test_r2'])} tau {_show(r['test_tau'])}")


def _show(value) -> str:
    return "nan" if value is None else f"{value:.3f}"


def _wave(executor: Executor, config: MetanetConfig, runs: list[Run], progress: Progress) -> list[Run]:
    """Hand the runs without a record to the executor; returns them. The records decide, so a
    wave cut short by a kill redoes only the runs that were in flight."""
    todo = [r for r in runs if r.record() is None]
    for run in runs:
        if run not in todo:
            progress.update(1, f"{run.name}: reused", new=False)
    if todo:
        executor.run(config, todo, lambda run: progress.update(1, _summary(run)))
    missing = [r.name for r in todo if r.record() is None]
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(todo)} runs ended without a record, e.g. {missing[:3]}")
    return todo


def _manifest(config, store, infos: dict, chosen: dict, trained: int, records: list[dict], device) -> dict:
    return {
        "claim": CLAIM,
        "config": asdict(config),
        "preprocessing": {"inputs": config.inputs, "targets": config.targets,
                          "rows": {r.name: {"metanet": r.metanet, "inputs": r.inputs} for r in config.rows()}},
        "zoo": {"path": str(store.path), "zoo_seed": store.manifest.get("zoo_seed"),
                "data": store.manifest.get("data"), "code_version": store.manifest.get("code_version"),
                "member_count": sum(i["members"] for i in infos.values())},
        "families": infos,
        "chosen_lr": {f: {row.name: lr for (family, row), lr in chosen.items() if family == f} for f in infos},
        "runs": {"trained": trained, "reused": len(records) - trained},
        "seeds": "each run's seed is metanets.train.run_seed(config.seed, family, metanet, phase, index), "
                 "recorded in its record; an extra row's runs share their metanet's seeds",
        "device": _device_note(device, records),
        "code_version": code_version(),
        "packages": package_versions(),
        "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "outputs": ["runs.json", "table3.md", "table3.csv", "table3.tex", "scatter.png"],
    }


def _device_note(device, records: list[dict]) -> str:
    """This process's device when it trained; else (Tune trials) the devices the records name."""
    if device is None:
        return "runs on " + ", ".join(sorted({r["device"] for r in records}))
    return str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")


def run(config: MetanetConfig, executor: Executor | None = None) -> Path:
    """Train every run without a record (by `executor`, in this process if None), in two waves:
    every selection run, then every final run at its cell's chosen rate. Then write runs.json,
    Table 3, the scatter plot and the manifest into `config.out_dir()`, which is returned. An out
    on an object store is written through a local stand-in folder (returned) and uploaded."""
    with local_folder(config.out or config.zoo.rstrip("/") + "/metanets") as out:
        return _run(replace(config, out=str(out)), executor)


def _run(config: MetanetConfig, executor: Executor | None) -> Path:
    out, store = config.out_dir(), open_store(config.zoo)
    names = _families(config, store)
    device = resolve_device(config.device) if executor is None else None  # the trials resolve their own
    cells = [(family, row) for family in names for row in config.rows() if row.applies(family)]
    progress = Progress(len(cells) * runs_per_row(config), desc="symzoo metanets", unit="runs", every_s=0)
    families = Families(config, store, progress.write)
    for family, row in ((f, r) for f in names for r in config.rows() if not r.applies(f)):
        progress.write(f"symzoo metanets: row {row.name!r} skipped for {family}: its hidden-channel permutations "
                       "are no symmetry of the zoo's networks, so aligned members would compute other functions")
    executor = executor or InProcess(Trainer(config, families, device))
    try:
        planner = Planner(config, out, _fingerprints(config, families, names))
        if not isinstance(executor, InProcess):
            families.drop()  # the trials load their own
        select = {cell: planner.selection(*cell) for cell in cells}
        trained = _wave(executor, config, [r for runs in select.values() for r in runs], progress)
        chosen = {cell: chosen_lr(config, runs) for cell, runs in select.items()}
        final = {cell: planner.final(*cell, chosen[cell]) for cell in cells}
        trained += _wave(executor, config, [r for runs in final.values() for r in runs], progress)
    finally:
        progress.close()
    records = [{**r.record(), "chosen_lr": chosen[cell]} for cell in cells for r in select[cell] + final[cell]]
    progress.write(f"symzoo metanets: trained {len(trained)} runs and reused {len(records) - len(trained)} in "
                   f"{fmt_seconds(time.monotonic() - progress.start)}")
    manifest = _manifest(config, store, families.infos, chosen, len(trained), records, device)
    return write_outputs(out, records, manifest)


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
