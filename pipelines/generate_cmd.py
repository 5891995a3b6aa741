"""`symzoo generate`: train a zoo into the store (resumable; Ray embedded or on a cluster)."""
from __future__ import annotations

import sys

from .data_cmd import add_data_option
from .presets import load_preset


def add_zoo_options(p, zoo_default: str = "runs/PRESET/zoo") -> None:
    """Options shared by `generate` and `run`: which preset, zoo, data and Ray cluster."""
    p.add_argument("--preset", default="demo", help="configs/NAME.yaml or a path to a preset file (default: demo)")
    p.add_argument("--zoo", default=None, help=f"zoo directory or URI (default: {zoo_default})")
    add_data_option(p)
    p.add_argument("--download", action="store_true", help="fetch CIFAR-10 (md5-checked) if absent")
    p.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else embedded)")
    p.add_argument("--families", default=None, help="comma-separated subset of the preset's families")
    p.add_argument("--members", type=int, default=None, help="members per family (overrides the preset)")
    p.add_argument("--new-zoo", action="store_true",
                   help="start a fresh manifest at --zoo, replacing one whose recipe, seed or data differ "
                        "(refused if the path holds any committed member)")


def register(sub) -> None:
    p = sub.add_parser("generate", help="train a zoo into the Parquet weight store (resumable)")
    add_zoo_options(p)
    p.set_defaults(func=run)


def sweep_config(preset, *, zoo: str, members: int | None, families, data, download: bool, address,
                 new_zoo: bool):
    """The sweep a preset describes, with the command line's overrides (None = the preset's)."""
    from cluster.sweep import SweepConfig

    return SweepConfig(
        zoo=zoo, members=preset.members if members is None else members,
        families=tuple(families or preset.families), zoo_seed=preset.zoo_seed, asym_seed=preset.asym_seed,
        recipe=preset.recipe, data=data, download=download, address=address, new_zoo=new_zoo,
        **preset.generate)


def run(args) -> int:
    from cluster import sweep

    try:
        preset = load_preset(args.preset)
        sweep.run(sweep_config(preset, zoo=args.zoo or f"runs/{preset.name}/zoo", members=args.members,
                               families=args.families.split(",") if args.families else None, data=args.data,
                               download=args.download, address=args.address, new_zoo=args.new_zoo))
    except sweep.SweepFailed as e:
        print(f"symzoo generate: error: {e}", file=sys.stderr)
        return 1
    return 0
