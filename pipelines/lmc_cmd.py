"""`symzoo lmc --zoo PATH`: linear mode connectivity between replicates, paper Table 1 and Figure 3.

Every setting is a field of pipelines.lmc.LmcConfig; a flag of the same name overrides its default.
"""
from __future__ import annotations

from .lmc import LmcConfig
from .study import config_from, register_command


def register(sub) -> None:
    register_command(sub, "lmc", LmcConfig, run=run,
                     help="test loss between trained replicates of a zoo's members: Table 1, Figure 3",
                     description="Needs a zoo generated with replicates >= 2. Resumes: pairs whose curves "
                                 "are stored under --out are skipped.")


def run(args) -> int:
    from .lmc import run as run_stage

    out = run_stage(config_from(args, LmcConfig))
    print(f"lmc: curves, table1.md/.csv/.tex and figure3.png in {out}")
    return 0
