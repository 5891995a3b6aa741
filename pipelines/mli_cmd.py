"""`symzoo mli --zoo PATH`: monotonic linear interpolation curves, paper Table 4 and Figure 5.

Every setting is a field of pipelines.mli.MliConfig; a flag of the same name overrides its default.
"""
from __future__ import annotations

from .data_cmd import add_data_option
from .mli import MliConfig
from .options import add_config_flags, given

NOT_FLAGS = ("zoo", "data")  # options of their own: --zoo is required, --data is shared by every command


def register(sub) -> None:
    p = sub.add_parser("mli", help="loss along init -> trained lines of a zoo's members: Table 4, Figure 5",
                       description="Resumes: members whose curves are stored under --out are skipped.")
    p.add_argument("--zoo", required=True, metavar="PATH", help="the zoo (made by `symzoo generate`)")
    add_data_option(p)
    add_config_flags(p, MliConfig, skip=NOT_FLAGS, title="MLI settings (MliConfig's defaults unless given)")
    p.set_defaults(func=run)


def mli_config(args) -> MliConfig:
    """MliConfig's defaults with the command line's zoo, data and flags on top."""
    return MliConfig(zoo=args.zoo, data=args.data, **given(args, MliConfig, skip=NOT_FLAGS))


def run(args) -> int:
    from .mli import run as run_stage

    out = run_stage(mli_config(args))
    print(f"mli: curves, table4.md/.csv/.tex and figure5.png in {out}")
    return 0
