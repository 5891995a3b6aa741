"""symzoo: model zoos of standard and asymmetric ResNet-8s, and the studies of Lim et al. 2024.

One thin command-line front over the stages: each stage module registers its own subcommand
with `register(subparsers)`; the work lives in the stage's `run(config) -> output path`.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import sys

COMMAND_MODULES = [  # each has register(subparsers)
    "pipelines.data_cmd",
    "pipelines.generate_cmd",
    "pipelines.metanets_cmd",
    "pipelines.mli_cmd",
    "pipelines.lmc_cmd",
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
    """(exit code, one line) for an error: 2 for bad input, 1 for a failure of the run. Each line
    names what failed (a path, a field, an address) and what to do; --debug shows the traceback."""
    from zoo.generate import SweepFailed

    if isinstance(e, SweepFailed):
        return 1, str(e)
    if isinstance(e, (ValueError, TypeError, FileNotFoundError)):
        return 2, _one_line(e)  # bad input: a value, or a path that holds nothing of ours
    if _is_ray_error(e):
        return 1, (f"Ray: {type(e).__name__}: {_one_line(e, keep=1)}; check the cluster (`ray status`) and its auth token "
                   "(RAY_AUTH_TOKEN), then rerun: only uncommitted work runs")
    if isinstance(e, OSError):
        return _explain_os_error(e)
    return 1, f"{type(e).__name__}: {_one_line(e, keep=2)} (rerun with --debug for the traceback)"


def _explain_os_error(e: OSError) -> tuple[int, str]:
    where = getattr(e, "filename", None)
    if isinstance(e, (FileExistsError, NotADirectoryError)):
        return 2, f"{where}: a file is where a folder should be; point --zoo (or the output) at a folder or a new path"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return 1, f"No space left on device ({where or 'the output storage'}); free space there, then rerun"
    if isinstance(e, ConnectionError):
        return 1, f"lost a connection: {_one_line(e, keep=1)}; rerun once it is back: only uncommitted work runs"
    if e.errno is None:  # pyarrow's S3/GCS errors: the message names the bucket and key
        return 1, (f"storage error: {_one_line(e, keep=2)}; check the URI, the credentials (AWS_PROFILE, "
                   "GOOGLE_APPLICATION_CREDENTIALS) and the region, then rerun")
    return 1, f"{e.strerror or _one_line(e)} ({where or 'no path given'}); nothing half-written is visible to readers, rerun once fixed"


def _is_ray_error(e: BaseException) -> bool:
    """Ray's own errors (ray.exceptions.*), recognised without importing Ray."""
    return any(c.__module__.startswith("ray.") for c in type(e).__mro__)


def _one_line(e: BaseException, keep: int | None = None) -> str:
    """The message on one line; `keep` first lines only, for foreign messages that run on with advice."""
    lines = [line.strip().rstrip(":") for line in str(e).splitlines() if line.strip()]
    return "; ".join(lines[:keep]) if lines else type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
