"""`symzoo data fetch|info`: get CIFAR-10 and show which copy a path holds."""
from __future__ import annotations

import json

from zoo import data


def add_data_option(p) -> None:
    """The shared --data option of every command that reads CIFAR-10."""
    p.add_argument("--data", default=None, metavar="DIR",
                   help="folder holding (or to receive) cifar-10-batches-py; default $SYMZOO_DATA or ~/.cache/symzoo")


def register(sub) -> None:
    p = sub.add_parser("data", help="fetch CIFAR-10 (md5-checked) or describe a local copy")
    p.add_argument("action", choices=["fetch", "info"])
    add_data_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    root = data.default_root(args.data)
    if args.action == "fetch" and not (data.batches_dir(root) / "test_batch").exists():
        print(f"downloading {data.URL} into {root} ...")
        data.fetch(data.batches_dir(root).parent)
    print(json.dumps(data.load_cifar10(root).identity, indent=2))
    return 0
