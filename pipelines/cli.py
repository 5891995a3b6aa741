"""symzoo: model zoos of standard and asymmetric ResNet-8s, and the studies of Lim et al. 2024.

One thin command-line front over the stages: each stage module registers its own subcommand
with `register(subparsers)`; the work lives in the stage's `run(...)`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [  # each has register(subparsers); imported lazily so `--help` stays fast
    "pipelines.data_cmd",
    "pipelines.generate_cmd",
    "pipelines.metanets_cmd",
    "pipelines.mli_cmd",
    "pipelines.store_cmd",
    "pipelines.run_cmd",
]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="symzoo", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
        print(f"symzoo {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
