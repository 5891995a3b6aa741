"""Presets: the YAML files in configs/, one per scale of study (smoke, demo, gpu, paper).

A preset names the zoo (seeds, families, members), the recipe overrides, and the settings of
each stage. Unknown keys are errors at every level, so a typo never silently runs the default.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from zoo.families import FAMILIES
from zoo.recipe import Recipe

# a checkout holds them in configs/, an installed wheel in pipelines/configs/ (pyproject maps one to the other)
CONFIGS = next(p for p in (Path(__file__).resolve().parent / "configs", Path(__file__).resolve().parents[1] / "configs")
               if p.is_dir())


@dataclass(frozen=True, kw_only=True)
class Preset:
    name: str  # file stem, e.g. "demo"
    description: str  # one line: what the preset is for and what it costs
    zoo_seed: int = 0  # addresses every member of the zoo
    asym_seed: int = 0  # addresses the W-Asym fixed entries and the FiGLU matrices
    families: tuple[str, ...] = tuple(FAMILIES)  # families to generate and study
    members: int = 10000  # planned members per family
    recipe: dict = field(default_factory=dict)  # overrides of the paper recipe (zoo.recipe.Recipe)
    generate: dict = field(default_factory=dict)  # cluster.sweep.SweepConfig: pack_size, engine, max_retries, compile, packed_impl
    metanets: dict = field(default_factory=dict)  # metanets.stage.MetanetConfig settings
    mli: dict = field(default_factory=dict)  # pipelines.mli.MliConfig settings

    def __post_init__(self):
        object.__setattr__(self, "families", tuple(self.families))
        Recipe.from_dict(self.recipe)
        _check_keys(f"{self.name}.generate", self.generate, {"pack_size", "engine", "max_retries", "compile", "packed_impl"})
        _check_keys(f"{self.name}.metanets", self.metanets, _settings("metanets.stage", "MetanetConfig"))
        _check_keys(f"{self.name}.mli", self.mli, _settings("pipelines.mli", "MliConfig"))


PIPELINE_SET = {"zoo", "out", "families", "data"}  # filled in by `symzoo run`, not by presets


def _settings(module: str, name: str) -> set[str]:
    import importlib

    config = getattr(importlib.import_module(module), name)
    return {f.name for f in dataclasses.fields(config)} - PIPELINE_SET


def _check_keys(where: str, given: dict, allowed) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def available() -> list[str]:
    return sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def load_preset(name_or_path: str) -> Preset:
    """A preset by name (configs/NAME.yaml) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = CONFIGS / f"{name_or_path}.yaml"
        if not path.exists():
            raise ValueError(f"preset={name_or_path!r}: unknown; available: {', '.join(available())}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"preset file {path}: must hold a mapping of keys, found {type(raw).__name__}")
    _check_keys(f"preset {path.name}", raw, {f.name for f in dataclasses.fields(Preset)} - {"name"})
    return Preset(name=path.stem, **raw)
