"""Presets: the YAML files in configs/, one per scale of study (smoke, demo, cpu, gpu, paper).

A preset is a description plus one section per stage, each holding fields of that stage's config
dataclass (`generate`: zoo.generate.GenerateConfig, `metanets`: metanets.stage.MetanetConfig,
`mli`: pipelines.mli.MliConfig, `lmc`: pipelines.lmc.LmcConfig, optional: `symzoo run` runs LMC
only for a preset with an `lmc` section whose zoo has `replicates` >= 2). Loading builds each stage's config through its own validation,
so an unknown key or a bad value is refused when the preset is read, never half-way through a run.
Paths (zoo, out, data) belong to the command line, not to a preset.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# a checkout holds them in configs/, an installed wheel in pipelines/configs/ (pyproject maps one to the other)
CONFIGS = next(p for p in (Path(__file__).resolve().parent / "configs", Path(__file__).resolve().parents[1] / "configs")
               if p.is_dir())
STAGES = {  # preset section -> (module, config class)
    "generate": ("zoo.generate", "GenerateConfig"),
    "metanets": ("metanets.stage", "MetanetConfig"),
    "mli": ("pipelines.mli", "MliConfig"),
    "lmc": ("pipelines.lmc", "LmcConfig"),
}
PATHS = {"zoo", "out", "data"}  # set by the command line
PLACEHOLDER_ZOO = "<zoo>"  # stands in for the command line's zoo while a section is validated


@dataclass(frozen=True, kw_only=True)
class Preset:
    name: str  # file stem, e.g. "demo"
    description: str  # one line: what the preset is for and what it costs
    generate: dict = field(default_factory=dict)  # GenerateConfig fields: members, families, seeds, recipe, ...
    metanets: dict = field(default_factory=dict)  # MetanetConfig fields
    mli: dict = field(default_factory=dict)  # MliConfig fields
    lmc: dict = field(default_factory=dict)  # LmcConfig fields; empty = no LMC study in `symzoo run`

    def __post_init__(self):
        if not isinstance(self.description, str) or not self.description:
            raise ValueError(f"{self.name}.description={self.description!r}: must be a non-empty line of text")
        for section in STAGES:
            self.config(section)  # validates the section

    def config(self, section: str, **given):
        """The section's stage config, with `given` fields (paths, command-line overrides) on top."""
        settings = getattr(self, section)
        if not isinstance(settings, dict):
            raise ValueError(f"{self.name}.{section}={settings!r}: must be a mapping of {STAGES[section][1]} fields")
        cls = config_class(section)
        bad = sorted(set(settings) & PATHS)
        if bad:
            raise ValueError(f"{self.name}.{section}: {bad} are set on the command line, not in a preset")
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{self.name}.{section}: unknown key(s) {unknown}; allowed: "
                             f"{sorted({f.name for f in dataclasses.fields(cls)} - PATHS)}")
        try:
            return cls(**{"zoo": PLACEHOLDER_ZOO, **settings, **given})
        except TypeError as e:  # a required field missing
            raise ValueError(f"{self.name}.{section}: {e}") from None

    @property
    def members(self) -> int:
        return self.config("generate").members

    @property
    def families(self) -> tuple[str, ...]:
        return self.config("generate").families


def config_class(section: str):
    module, name = STAGES[section]
    return getattr(importlib.import_module(module), name)


def available() -> list[str]:
    return sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def load_preset(name_or_path: str) -> Preset:
    """A preset by name (configs/NAME.yaml) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = CONFIGS / f"{name_or_path}.yaml"
        if not path.exists():
            raise ValueError(f"preset={name_or_path!r}: unknown; available: {', '.join(available())}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"preset file {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"preset file {path}: must hold a mapping of keys, found {type(raw).__name__}")
    allowed = {f.name for f in dataclasses.fields(Preset)} - {"name"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"preset {path.name}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    if "description" not in raw:
        raise ValueError(f"preset {path.name}: description missing; add one line saying what the preset is for")
    return Preset(name=path.stem, **raw)
