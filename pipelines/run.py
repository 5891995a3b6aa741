"""`symzoo run`: generate, then metanets, then MLI, then LMC, then the report, from one preset.

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

from zoo.generate import GenerateConfig
from zoo.store.fs import atomic_write_bytes

from .generate_cmd import executor_for
from .hardware import describe
from .presets import Preset


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    preset: Preset  # what to study: the metanets and mli sections
    out: str  # output folder: report.md, metanets/, mli/, pipeline.json
    generate: GenerateConfig  # the zoo: the preset's generate section with the command line's zoo, data, flags

    @property
    def families(self) -> tuple[str, ...]:
        return self.generate.families


def stage_generate(cfg: RunConfig) -> None:
    from zoo.generate import run

    run(cfg.generate, executor_for(cfg.generate))


def on_cluster(cfg: RunConfig, section: str) -> dict:
    """`symzoo run --address`: the cluster generate uses is also the one of a stage whose preset
    section runs on Ray (`executor: ray`) without an address of its own."""
    settings = getattr(cfg.preset, section) or {}
    if cfg.generate.address and settings.get("executor") == "ray" and "address" not in settings:
        return {"address": cfg.generate.address}
    return {}


def stage_metanets(cfg: RunConfig) -> None:
    from metanets.stage import run

    from .metanets_cmd import executor_for

    config = cfg.preset.config("metanets", zoo=cfg.generate.zoo, out=str(Path(cfg.out) / "metanets"),
                               families=cfg.families, **on_cluster(cfg, "metanets"))
    run(config, executor_for(config))


def stage_mli(cfg: RunConfig) -> None:
    from .mli import run

    run(cfg.preset.config("mli", zoo=cfg.generate.zoo, out=str(Path(cfg.out) / "mli"), data=cfg.generate.data,
                          families=cfg.families, **on_cluster(cfg, "mli")))


def stage_lmc(cfg: RunConfig) -> None:
    """LMC pairs replicates: `run` calls it when the preset has an `lmc` section and its zoo replicates >= 2."""
    from .lmc import run

    run(cfg.preset.config("lmc", zoo=cfg.generate.zoo, out=str(Path(cfg.out) / "lmc"), data=cfg.generate.data,
                          families=cfg.families))


def lmc_skipped(cfg: RunConfig) -> str | None:
    if not cfg.preset.lmc:
        return f"preset {cfg.preset.name!r} has no lmc section"
    if cfg.generate.replicates < 2:
        return (f"the zoo has {cfg.generate.replicates} replicate per member; LMC pairs replicates "
                "(generate: replicates: 2)")
    return None


def stage_report(cfg: RunConfig) -> None:
    from .report import write

    g = cfg.generate
    planned = g.members + (g.replicates - 1) * (g.replicate_members or g.members)  # per family, replicates included
    path = write(Path(cfg.out), cfg.generate.zoo, preset=cfg.preset.name, planned=planned,
                 hardware=describe())
    print(f"symzoo run: report at {path}", file=sys.stderr)


STAGES = {"generate": stage_generate, "metanets": stage_metanets, "mli": stage_mli, "lmc": stage_lmc}


def run(cfg: RunConfig) -> Path:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "stages": {}}
    for name, stage in STAGES.items():
        why = lmc_skipped(cfg) if name == "lmc" else None
        if why:  # not timed: pipeline.json lists the stages that ran
            print(f"symzoo run: LMC skipped: {why}", file=sys.stderr, flush=True)
            continue
        print(f"symzoo run: stage {name}", file=sys.stderr, flush=True)
        start = time.monotonic()
        stage(cfg)
        record["stages"][name] = round(time.monotonic() - start, 2)
        _save_timings(out, cfg, record)
    stage_report(cfg)
    return out / "report.md"


def _save_timings(out: Path, cfg: RunConfig, record: dict) -> None:
    path = out / "pipeline.json"
    doc = json.loads(path.read_text()) if path.exists() else {"invocations": []}
    runs = [r for r in doc["invocations"] if r["started_utc"] != record["started_utc"]] + [record]
    doc = {"preset": dataclasses.asdict(cfg.preset), "zoo": cfg.generate.zoo, "invocations": runs}
    atomic_write_bytes(str(out), path.name, json.dumps(doc, indent=2).encode())
