"""The metanetwork registry: one `MetanetSpec` per metanetwork, declared in the metanetwork's own file.

To add a metanetwork: write `metanets/NAME.py` with a `Metanet` subclass and a
`SPEC = MetanetSpec(name=..., display=..., build=..., options={...})` record (`metanets.base`),
then add one line to `REGISTRY` below. The config, the command line, the run keys and records,
Table 3 and the plots read the record.
"""
from __future__ import annotations

from . import deepsets, dmc, mlp, statnn
from .base import Metanet, MetanetSpec

REGISTRY = (  # in the order Table 3 lists them (the paper's)
    mlp.SPEC,
    dmc.SPEC,
    deepsets.SPEC,
    statnn.SPEC,
)
METANETS: dict[str, MetanetSpec] = {s.name: s for s in REGISTRY}


def register(spec: MetanetSpec) -> MetanetSpec:
    """Add a metanetwork at run time (a notebook, examples/custom_metanet.py) without editing REGISTRY."""
    if spec.name in METANETS and METANETS[spec.name] is not spec:
        raise ValueError(f"metanet={spec.name!r}: already registered")
    METANETS[spec.name] = spec
    return spec


def check_metanet(name: str) -> str:
    if name not in METANETS:
        raise ValueError(f"metanet={name!r}: unknown; allowed: {', '.join(METANETS)}")
    return name


def display(name: str) -> str:
    """The metanetwork's label for tables and plots; unknown names (old records) as they are."""
    return METANETS[name].display if name in METANETS else name


def build(name: str, layout, **options) -> Metanet:
    """The metanetwork `name` for a family with `layout` (a zoo.Layout or its JSON list); `options`
    override its spec's defaults."""
    spec = METANETS[check_metanet(name)]
    return spec.build(layout, **spec.check_options(options))
