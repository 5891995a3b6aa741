"""`symzoo run`: generate, then metanets, then MLI, then the report, from one preset.

Every stage resumes from its own outputs (the store for generate, finished runs for metanets,
stored curves for MLI), so rerunning the same command after an interruption does only the work
that is missing, and a complete study costs seconds to rerun. Wall time per stage of every
invocation goes to OUT/pipeline.json for the report.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from zoo.store.fs import atomic_write_bytes

from .generate_cmd import sweep_config
from .hardware import describe
from .presets import Preset


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    preset: Preset  # what to generate and study
    out: str  # output folder: report.md, metanets/, mli/, pipeline.json
    zoo: str  # zoo folder or URI (default OUT/zoo)
    data: str | None = None  # CIFAR-10 root; None = $SYMZOO_DATA or ~/.cache/symzoo
    download: bool = False  # fetch CIFAR-10 (md5-checked) if absent
    address: str | None = None  # Ray address; None = $RAY_ADDRESS, else embedded
    families: tuple[str, ...] | None = None  # subset of the preset's families
    members: int | None = None  # override of the preset's members per family
    new_zoo: bool = False  # a fresh manifest at `zoo` (refused where members are committed)

    @property
    def planned(self) -> int:
        return self.preset.members if self.members is None else self.members


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def stage_generate(cfg: RunConfig, families) -> None:
    from cluster.sweep import run

    run(sweep_config(cfg.preset, zoo=cfg.zoo, members=cfg.members, families=families, data=cfg.data,
                     download=cfg.download, address=cfg.address, new_zoo=cfg.new_zoo))


def stage_metanets(cfg: RunConfig, families) -> None:
    from metanets.stage import MetanetConfig, run

    settings = {"device": _device(), **cfg.preset.metanets}
    run(MetanetConfig(zoo=cfg.zoo, out=str(Path(cfg.out) / "metanets"), families=families, **settings))


def stage_mli(cfg: RunConfig, families) -> None:
    from .mli import MliConfig, run

    settings = {"device": _device(), **cfg.preset.mli}
    run(MliConfig(zoo=cfg.zoo, out=str(Path(cfg.out) / "mli"), data=cfg.data, families=families, **settings))


def stage_report(cfg: RunConfig, families) -> None:
    from .report import write

    path = write(Path(cfg.out), cfg.zoo, preset=cfg.preset.name, planned=cfg.planned,
                 hardware=describe())
    print(f"symzoo run: report at {path}", file=sys.stderr)


STAGES = {"generate": stage_generate, "metanets": stage_metanets, "mli": stage_mli}


def run(cfg: RunConfig) -> Path:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    families = tuple(cfg.families or cfg.preset.families)
    record = {"started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "stages": {}}
    for name, stage in STAGES.items():
        print(f"symzoo run: stage {name}", file=sys.stderr, flush=True)
        start = time.monotonic()
        stage(cfg, families)
        record["stages"][name] = round(time.monotonic() - start, 2)
        _save_timings(out, cfg, record)
    stage_report(cfg, families)
    return out / "report.md"


def _save_timings(out: Path, cfg: RunConfig, record: dict) -> None:
    path = out / "pipeline.json"
    doc = json.loads(path.read_text()) if path.exists() else {"invocations": []}
    runs = [r for r in doc["invocations"] if r["started_utc"] != record["started_utc"]] + [record]
    doc = {"preset": dataclasses.asdict(cfg.preset), "zoo": cfg.zoo, "invocations": runs}
    atomic_write_bytes(str(out), path.name, json.dumps(doc, indent=2).encode())
