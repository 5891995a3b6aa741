"""symzoo: model zoos of standard and asymmetric ResNet-8s, and the studies of Lim et al. 2024.

One thin command-line front over the stages: each stage module registers its own subcommand
with `register(subparsers)`; the work lives in the stage's `run(config) -> output path`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [  # each has register(subparsers)
    "pipelines.data_cmd",
    "pipelines.generate_cmd",
    "pipelines.metanets_cmd",
    "pipelines.mli_cmd",
    "pipelines.store_cmd",
    "pipelines.run_cmd",
]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="symzoo", description=__doc__.split("\n")[0])
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error (also after COMMAND)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = parser().parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    try:
        return args.func(args) or 0
    except Exception as e:  # noqa: BLE001  every failure: one line that says what failed, unless --debug
        if args.debug:
            raise
        code, line = explain(e)
        print(f"symzoo {args.command}: error: {line}", file=sys.stderr)
        return code


def explain(e: BaseException) -> tuple[int, str]:
    """(exit code, one line) for an error: 2 for bad input, 1 for a failure of the run."""
    from zoo.generate import SweepFailed

    if isinstance(e, SweepFailed):
        return 1, str(e)
    if isinstance(e, (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError)):
        return 2, str(e)  # bad input: a value, or a path that is not what it must be
    if isinstance(e, OSError):
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        return 1, f"{e.strerror or e}{where}; nothing half-written is visible to readers, rerun once fixed"
    return 1, f"{type(e).__name__}: {e} (rerun with --debug for the traceback)"


if __name__ == "__main__":
    sys.exit(main())
