"""`symzoo generate`: train a zoo into the store (resumable; Ray embedded, on a cluster, or local).

Every setting is a field of zoo.generate.GenerateConfig: the preset's `generate:` section gives
it, a flag of the same name overrides it.
"""
from __future__ import annotations

from zoo.generate import GenerateConfig

from .data_cmd import add_data_option
from .options import add_config_flags, given
from .presets import load_preset

NOT_FLAGS = ("zoo", "data", "recipe")  # zoo and data have options of their own; a recipe lives in a preset


def add_zoo_options(p, zoo_default: str = "runs/PRESET/zoo") -> None:
    """Options shared by `generate` and `run`: the preset, the zoo, the data, GenerateConfig's fields."""
    p.add_argument("--preset", default="demo", help="configs/NAME.yaml or a path to a preset file (default: demo)")
    p.add_argument("--zoo", default=None, help=f"zoo directory or URI (default: {zoo_default})")
    add_data_option(p)
    add_config_flags(p, GenerateConfig, skip=NOT_FLAGS, title="generate settings (the preset's unless given)")


def register(sub) -> None:
    p = sub.add_parser("generate", help="train a zoo into the Parquet weight store (resumable)")
    add_zoo_options(p)
    p.set_defaults(func=run)


def generate_config(preset, args, zoo: str) -> GenerateConfig:
    """The preset's generate section, with the command line's zoo, data and flags on top."""
    return preset.config("generate", zoo=zoo, data=args.data, **given(args, GenerateConfig, skip=NOT_FLAGS))


def executor_for(cfg: GenerateConfig):
    """The executor `cfg` names, ready to run: Ray connects (and checks its address) here, before any write."""
    if cfg.executor == "local":
        from zoo.generate import LocalExecutor

        return LocalExecutor()
    from cluster.executor import RayExecutor  # Ray is imported only for the Ray executor

    return RayExecutor(cfg.address, max_retries=cfg.max_retries)


def run(args) -> int:
    from zoo import generate

    preset = load_preset(args.preset)
    cfg = generate_config(preset, args, args.zoo or f"runs/{preset.name}/zoo")
    generate.run(cfg, executor_for(cfg))
    return 0
