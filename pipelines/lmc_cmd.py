"""`symzoo lmc --zoo PATH`: linear mode connectivity between replicates, paper Table 1 and Figure 3.

Every setting is a field of pipelines.lmc.LmcConfig; a flag of the same name overrides its default.
"""
from __future__ import annotations

from .data_cmd import add_data_option
from .lmc import LmcConfig
from .options import add_config_flags, given

NOT_FLAGS = ("zoo", "data")  # options of their own: --zoo is required, --data is shared by every command


def register(sub) -> None:
    p = sub.add_parser("lmc", help="test loss between trained replicates of a zoo's members: Table 1, Figure 3",
                       description="Needs a zoo generated with replicates >= 2. Resumes: pairs whose curves "
                                   "are stored under --out are skipped.")
    p.add_argument("--zoo", required=True, metavar="PATH", help="the zoo (made by `symzoo generate`)")
    add_data_option(p)
    add_config_flags(p, LmcConfig, skip=NOT_FLAGS, title="LMC settings (LmcConfig's defaults unless given)")
    p.set_defaults(func=run)


def lmc_config(args) -> LmcConfig:
    """LmcConfig's defaults with the command line's zoo, data and flags on top."""
    return LmcConfig(zoo=args.zoo, data=args.data, **given(args, LmcConfig, skip=NOT_FLAGS))


def run(args) -> int:
    from .lmc import run as run_stage

    out = run_stage(lmc_config(args))
    print(f"lmc: curves, table1.md/.csv/.tex and figure3.png in {out}")
    return 0
