"""`symzoo run`: the whole study from one preset, resumable."""
from __future__ import annotations

import sys

from .generate_cmd import add_zoo_options
from .presets import load_preset


def register(sub) -> None:
    p = sub.add_parser("run", help="generate, metanets, MLI and report in one resumable command")
    add_zoo_options(p, zoo_default="OUT/zoo")
    p.add_argument("--out", default=None, help="output folder (default: runs/PRESET)")
    p.set_defaults(func=run)


def run(args) -> int:
    from cluster.sweep import SweepFailed

    from .run import RunConfig, run as run_pipeline

    preset = load_preset(args.preset)
    out = args.out or f"runs/{preset.name}"
    cfg = RunConfig(preset=preset, out=out, zoo=args.zoo or f"{out}/zoo", data=args.data, download=args.download,
                    address=args.address, families=tuple(args.families.split(",")) if args.families else None,
                    members=args.members, new_zoo=args.new_zoo)
    try:
        report = run_pipeline(cfg)
    except SweepFailed as e:
        print(f"symzoo run: error: {e}", file=sys.stderr)
        return 1
    print(report)
    return 0
