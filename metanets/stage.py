"""The metanetwork stage (paper Section 5.3, Table 3, Appendix E.3) on any zoo in the store.

For each family and metanetwork: one run per learning rate in `lrs` (same seed, so only the rate
differs), the rate with the best validation R^2 is chosen, then `runs` fresh runs at that rate
give the reported mean ± std. Selection runs are not reused as final runs, so the reported runs
are not the ones the rate was picked on. With a single rate in `lrs` the selection is skipped.

Where things go: `out` (default `<zoo>/metanets`) holds
    runs/<family>/<metanet>/<phase>-<index>-lr<lr>-<key>.json   one record per run (resume unit)
    runs.json        every run of this configuration: seed, lr, chosen lr, per-epoch curves
    table3.md, table3.csv, table3.tex, scatter.png, manifest.json
Resume: a run's key hashes what determines its result (zoo fingerprint, family, metanet, phase,
index, lr, seed, training settings, split fractions, target, weights); a run whose record file
exists with that key is read back instead of trained. Records are written atomically.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from zoo.validate import check as _check
from zoo.validate import from_dict, is_int as _is_int
from zoo.store.fs import atomic_write_bytes
from zoo.store.manifest import code_version, package_versions

from .data import TRAIN_FRAC, VAL_FRAC
from .deepsets import CHUNK
from .loader import check_target, load_family, open_store
from .registry import METANETS, build, check_metanet
from .report import scatter, table3, write_tables
from .train import PAPER_LRS, TrainSettings, featurize_all, run_seed, select_lr, train_run

SCHEMA = 1  # version of the run records; part of every run key
CLAIM = ("How well metanetworks predict a member's CIFAR-10 test accuracy from its trainable weights, per "
         "family (paper Section 5.3, Table 3): test R^2 and Kendall tau at the best-validation epoch")
LOG = logging.getLogger("metanets")


@dataclass(frozen=True)
class MetanetConfig:
    zoo: str  # zoo folder or URI in the store (made by zoo.store.init_zoo)
    out: str = ""  # output folder; "" = <zoo>/metanets
    families: tuple[str, ...] = ()  # families to study; () = every family of the zoo
    metanets: tuple[str, ...] = tuple(METANETS)  # names in metanets.registry.METANETS
    lrs: tuple[float, ...] = PAPER_LRS  # learning-rate grid, each > 0 (paper E.3.2)
    runs: int = 5  # final runs per (family, metanet) at the chosen lr, >= 1
    epochs: int = 50  # training epochs per run, >= 1
    batch_size: int = 128  # members per AdamW step, >= 1
    weight_decay: float = 1e-2  # AdamW decoupled weight decay, >= 0
    eval_batch: int = 256  # members per scoring forward pass (memory only), >= 1
    train_frac: float = TRAIN_FRAC  # fraction of usable members in train, in (0, 1)
    val_frac: float = VAL_FRAC  # fraction in val, in (0, 1); test takes the rest
    target: str = "test_acc"  # members-table metric to predict (zoo.records.METRICS)
    which: str = "final"  # weights to read: "final" (trained) or "init"
    max_members: int = 0  # > 0: first that many usable members per family in sha256(id) order; 0 = all
    seed: int = 0  # base of every run seed, >= 0
    device: str = "auto"  # "auto" (cuda if available) | "cpu" | "cuda" | "cuda:N"
    deepsets_chunk: int = CHUNK  # DeepSets set elements per chunk (memory only), >= 1

    def __post_init__(self):
        for name in ("zoo", "out"):  # path-like objects are welcome; the config keeps strings
            if isinstance(getattr(self, name), os.PathLike):
                object.__setattr__(self, name, os.fspath(getattr(self, name)))
        for name in ("families", "metanets", "lrs"):
            value = getattr(self, name)
            _check(name, value, isinstance(value, (list, tuple)), "a list")
            object.__setattr__(self, name, tuple(value))
        _check("zoo", self.zoo, isinstance(self.zoo, str) and bool(self.zoo), "a non-empty path")
        _check("out", self.out, isinstance(self.out, str) and (bool(self.out) or "://" not in self.zoo),
               "a path string ('' = <zoo>/metanets, for a local zoo only)")
        _check("metanets", self.metanets, bool(self.metanets), "a non-empty list")
        for name in self.metanets:
            check_metanet(name)
        _check("lrs", self.lrs, bool(self.lrs) and all(isinstance(v, (int, float)) and 0 < v < math.inf
                                                        for v in self.lrs), "a non-empty list of floats > 0")
        for name in ("runs", "max_members", "seed"):
            value = getattr(self, name)
            _check(name, value, _is_int(value) and value >= (1 if name == "runs" else 0),
                   "an int >= 1" if name == "runs" else "an int >= 0")
        self.settings()  # validates epochs, batch_size, weight_decay, eval_batch
        check_target(self.target)
        _check("which", self.which, self.which in ("final", "init"), "'final' or 'init'")
        _check("device", self.device, isinstance(self.device, str) and
               (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")), "auto, cpu, cuda or cuda:N")
        _check("deepsets_chunk", self.deepsets_chunk, _is_int(self.deepsets_chunk) and self.deepsets_chunk >= 1,
               "an int >= 1")

    @classmethod
    def from_dict(cls, d: dict) -> MetanetConfig:
        return from_dict(cls, d, "metanets config")

    def settings(self) -> TrainSettings:
        return TrainSettings(epochs=self.epochs, batch_size=self.batch_size, weight_decay=self.weight_decay,
                             eval_batch=self.eval_batch)

    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path(self.zoo) / "metanets"

    def split_args(self) -> dict:
        return {"train_frac": self.train_frac, "val_frac": self.val_frac, "max_members": self.max_members}


# ---------------------------------------------------------------------------------------------
# Runs and their records

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r}: CUDA is not available here; use cpu or auto")
    return torch.device(name)


def run_key(config: MetanetConfig, fingerprint: str, family: str, metanet: str, phase: str, index: int,
            lr: float, seed: int) -> str:
    """What determines a run's result, hashed: equal keys, interchangeable records."""
    what = {"schema": SCHEMA, "zoo_fingerprint": fingerprint, "family": family, "metanet": metanet,
            "phase": phase, "index": index, "lr": lr, "seed": seed, "settings": asdict(config.settings()),
            "train_frac": config.train_frac, "val_frac": config.val_frac, "target": config.target,
            "which": config.which}
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
    """Trains or reads back the runs of one (family, metanet); counts which it did."""

    def __init__(self, config: MetanetConfig, data, metanet: str, out: Path, device: torch.device):
        self.config, self.data, self.metanet, self.device = config, data, metanet, device
        self.folder = out / "runs" / data.family / metanet
        self.kwargs = {"chunk": config.deepsets_chunk} if metanet == "deepsets" else {}
        self.feats, self.trained, self.reused = None, 0, 0

    def run(self, phase: str, index: int, lr: float) -> dict:
        seed = run_seed(self.config.seed, self.data.family, self.metanet, phase, index)
        key = run_key(self.config, self.data.fingerprint, self.data.family, self.metanet, phase, index, lr, seed)
        path = self.folder / f"{phase}-{index}-lr{lr:g}-{key[:10]}.json"
        record = _read_record(path, key) if path.exists() else None
        where = f"{self.data.family}/{self.metanet} {phase}-{index} lr={lr:g}"
        if record is not None:
            self.reused += 1
            LOG.info("%s: reused %s", where, path.name)
            return record
        if self.feats is None:  # featurize once, and only when something must train
            self.feats = featurize_all(build(self.metanet, self.data.layout, **self.kwargs), self.data.x, self.device)
        record = train_run(self.metanet, self.data, self.feats, lr=lr, seed=seed, settings=self.config.settings(),
                           metanet_kwargs=self.kwargs)
        record.update(phase=phase, index=index, key=key)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(path, record)
        self.trained += 1
        LOG.info("%s: trained in %.1fs, best val R^2 %.3f at epoch %d, test R^2 %.3f tau %.3f", where,
                 record["wall_s"], record["val_r2"], record["best_epoch"], record["test_r2"], record["test_tau"])
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


def _manifest(config, store, infos: dict, done: list[dict], device) -> dict:
    return {
        "claim": CLAIM,
        "config": asdict(config),
        "zoo": {"path": str(store.path), "zoo_seed": store.manifest.get("zoo_seed"),
                "data": store.manifest.get("data"), "code_version": store.manifest.get("code_version"),
                "member_count": sum(i["members"] for i in infos.values())},
        "families": infos,
        "chosen_lr": {f: {d["metanet"]: d["chosen_lr"] for d in done if d["family"] == f} for f in infos},
        "runs": {"trained": sum(d["trained"] for d in done), "reused": sum(d["reused"] for d in done)},
        "seeds": "each run's seed is metanets.train.run_seed(config.seed, family, metanet, phase, index), "
                 "recorded in its record",
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "code_version": code_version(),
        "packages": package_versions(),
        "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "outputs": ["runs.json", "table3.md", "table3.csv", "table3.tex", "scatter.png"],
    }


def run(config: MetanetConfig) -> Path:
    """Train (or read back) every run, then write runs.json, Table 3, the scatter plot and the
    manifest into `config.out_dir()`, which is returned."""
    out, device = config.out_dir(), resolve_device(config.device)
    store = open_store(config.zoo)
    infos, done, records = {}, [], []
    for family in _families(config, store):
        data, infos[family] = load_family(store, family, target=config.target, which=config.which,
                                          **config.split_args())
        for metanet in config.metanets:
            runner = Runner(config, data, metanet, out, device)
            records += runner.all_runs()
            done.append({"family": family, "metanet": metanet, "chosen_lr": records[-1]["chosen_lr"],
                         "trained": runner.trained, "reused": runner.reused})
        del data, runner  # one family's weights and features in memory at a time
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
