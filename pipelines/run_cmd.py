"""`symzoo run`: the whole study from one preset, resumable."""
from __future__ import annotations

from .generate_cmd import add_zoo_options, generate_config
from .presets import load_preset


def register(sub) -> None:
    p = sub.add_parser("run", help="generate, metanets, MLI and report in one resumable command")
    add_zoo_options(p, zoo_default="OUT/zoo")
    p.add_argument("--out", default=None, help="output folder (default: runs/PRESET)")
    p.set_defaults(func=run)


def run(args) -> int:
    from .run import RunConfig, run as run_pipeline

    preset = load_preset(args.preset)
    out = args.out or f"runs/{preset.name}"
    generate = generate_config(preset, args, args.zoo or f"{out}/zoo")
    print(run_pipeline(RunConfig(preset=preset, out=out, generate=generate)))
    return 0
