"""Metanetworks by name. A new one is a module with a `Metanet` subclass plus one line here."""
from __future__ import annotations

from .base import Metanet
from .deepsets import DeepSets
from .dmc import DMC
from .mlp import MLP
from .statnn import StatNN

METANETS: dict[str, type[Metanet]] = {"mlp": MLP, "dmc": DMC, "deepsets": DeepSets, "statnn": StatNN}


def check_metanet(name: str) -> str:
    if name not in METANETS:
        raise ValueError(f"metanet={name!r}: unknown; allowed: {', '.join(METANETS)}")
    return name


def build(name: str, layout, **kwargs) -> Metanet:
    """The metanetwork `name` for a family with `layout` (a zoo.Layout or its JSON list)."""
    return METANETS[check_metanet(name)](layout, **kwargs)
