"""`symzoo mli --zoo PATH`: monotonic linear interpolation curves, paper Table 4 and Figure 5.

Every setting is a field of pipelines.mli.MliConfig; a flag of the same name overrides its default.
`--executor ray [--address HOST:PORT]` evaluates each task as a Ray task (cluster/mli.py).
"""
from __future__ import annotations

from .mli import MliConfig
from .study import config_from, register_command


def register(sub) -> None:
    register_command(sub, "mli", MliConfig, run=run,
                     help="loss along init -> trained lines of a zoo's members: Table 4, Figure 5",
                     description="Resumes: members whose curves are stored under --out are skipped.")


def mli_config(args) -> MliConfig:
    return config_from(args, MliConfig)


def run(args) -> int:
    from .mli import run as run_stage

    out = run_stage(mli_config(args))
    print(f"mli: curves, table4.md/.csv/.tex and figure5.png in {out}")
    return 0
