"""`symzoo mli --zoo PATH`: monotonic linear interpolation curves, paper Table 4 and Figure 5."""
from __future__ import annotations

import logging

from zoo import FAMILIES

from .data_cmd import add_data_option


def register(sub) -> None:
    p = sub.add_parser("mli", help="loss along init -> trained lines of a zoo's members: Table 4, Figure 5",
                       description="Resumes: members whose curves are stored under --out are skipped.")
    p.add_argument("--zoo", required=True, metavar="PATH", help="the zoo (made by `symzoo generate`)")
    p.add_argument("--out", default=None, metavar="DIR", help="curves, tables, figure; default PATH/mli")
    p.add_argument("--families", nargs="+", choices=list(FAMILIES), default=None, help="default: all of the zoo's")
    p.add_argument("--members", type=int, default=None, metavar="N", help="first N members per family; default all")
    p.add_argument("--alphas", type=int, default=25, help="points per curve (default 25, the paper's)")
    p.add_argument("--n-eval", type=int, default=None, metavar="N",
                   help="seeded subset of the recipe's training images; default all of them")
    p.add_argument("--eval-seed", type=int, default=0, help="seed of that subset and of --augmented")
    p.add_argument("--augmented", action="store_true",
                   help="one fixed augmented copy of the images (the companion code augmented); default un-augmented")
    p.add_argument("--device", default="cpu", help='"cpu" (one process per core), "cuda" or "cuda:N"')
    p.add_argument("--workers", type=int, default=None, help="CPU processes; default os.cpu_count()")
    p.add_argument("--batch", type=int, default=500, help="images per forward pass")
    p.add_argument("--points", type=int, default=None, help="(member, alpha) points per packed forward")
    p.add_argument("--autocast", action="store_true", help="bf16 autocast on CUDA (default fp32)")
    add_data_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from . import mli  # torch, scipy, matplotlib: only when the command runs

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    keys = ("zoo", "out", "data", "families", "members", "alphas", "n_eval", "eval_seed", "augmented",
            "device", "workers", "batch", "points", "autocast")
    out = mli.run(mli.MliConfig.from_dict({k: getattr(args, k) for k in keys}))
    print(f"mli: curves, table4.md/.csv/.tex and figure5.png in {out}")
    return 0
