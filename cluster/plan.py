"""What a sweep still has to train, and how it is cut into packs. No Ray here: pure planning.

The store is the source of truth: planned members minus committed members is the work. Packs
are deterministic for a given remaining set, so a retried pack commits under the same name.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from zoo.members import MemberConfig, sample_member
from zoo.families import check_family


@dataclass(frozen=True)
class Pack:
    family: str  # every member of a pack is of one family
    configs: tuple[MemberConfig, ...]  # members trained together (one epoch count on GPU)

    @property
    def name(self) -> str:
        return f"{self.family}[{self.configs[0].index}..{self.configs[-1].index}]x{len(self.configs)}"


def plan_members(zoo_seed: int, families: tuple[str, ...], members: int) -> list[MemberConfig]:
    """Member indices 0..members-1 of each family."""
    if not isinstance(members, int) or members <= 0:
        raise ValueError(f"members={members!r}: must be an int > 0")
    for f in families:
        check_family(f)
    return [sample_member(zoo_seed, i, f) for f in families for i in range(members)]


def make_packs(todo: list[MemberConfig], *, pack_size: int, epochs_of) -> list[Pack]:
    """Group by (family, trained epochs), then cut into packs of at most `pack_size`.

    `epochs_of(cfg)` gives the epochs a member actually trains (the recipe may override them).
    pack_size 1 is the CPU layout: one member per core.
    """
    if pack_size < 1:
        raise ValueError(f"pack_size={pack_size!r}: must be >= 1")
    groups: dict[tuple[str, int], list[MemberConfig]] = defaultdict(list)
    for cfg in sorted(todo, key=lambda c: (c.family, c.index)):
        groups[(cfg.family, epochs_of(cfg))].append(cfg)
    packs = []
    for (family, _), cfgs in sorted(groups.items()):
        packs += [Pack(family, tuple(cfgs[i : i + pack_size])) for i in range(0, len(cfgs), pack_size)]
    # longest packs first: the tail of the sweep is then made of short packs
    return sorted(packs, key=lambda p: -epochs_of(p.configs[0]) * len(p.configs))
