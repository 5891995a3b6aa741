"""`symzoo metanets`: predict members' test accuracy from their weights (paper Table 3).

Every setting is a field of metanets.stage.MetanetConfig (its training ones come from
metanets.train.TrainSettings): its defaults (the paper's protocol), then a YAML file given with
--config, then a flag of the same name. Unknown keys and bad values are refused with a message.
Per-metanet options (`metanet_options`, e.g. {deepsets: {chunk: 4096}}) are set in the YAML file.
`--executor ray [--address HOST:PORT]` runs each run as a Ray Tune trial (cluster/tune.py).
"""
from __future__ import annotations

import dataclasses

from metanets.stage import MetanetConfig
from metanets.train import TrainSettings

from .options import add_config_flags, given, read_yaml_mapping

NOT_FLAGS = ("zoo", "metanet_options")  # zoo: the required option below; a nested mapping: --config only
TRAINING = tuple(f.name for f in dataclasses.fields(TrainSettings))  # flagged with TrainSettings' own comments


def register(sub) -> None:
    p = sub.add_parser("metanets", help="metanetworks predicting test accuracy from weights (paper Table 3)")
    p.add_argument("--zoo", required=True, help="zoo folder or URI in the store")
    p.add_argument("--config", default=None, metavar="YAML", help="MetanetConfig fields to override the defaults")
    add_config_flags(p, MetanetConfig, skip=NOT_FLAGS + TRAINING, title="metanets settings (the defaults unless given)")
    add_config_flags(p, TrainSettings, title="training settings of every run (paper E.3 unless given)")
    p.set_defaults(func=run)


def config_dict(args) -> dict:
    """The YAML file's fields, overridden by the flags that were given, and the zoo."""
    d = read_yaml_mapping(args.config, "MetanetConfig") if args.config else {}
    return {**d, **given(args, MetanetConfig, skip=NOT_FLAGS), "zoo": args.zoo}


def executor_for(config: MetanetConfig):
    """None (the stage trains in this process) for executor local; for ray, Tune's, with Ray
    connected (its address checked) here, before anything is written."""
    if config.executor == "local":
        return None
    from cluster.tune import TuneExecutor  # Ray is imported only for the Ray executor

    return TuneExecutor(config.address, gpus_per_trial=config.gpus_per_trial)


def run(args) -> int:
    from metanets.stage import run as run_stage

    config = MetanetConfig.from_dict(config_dict(args))
    out = run_stage(config, executor_for(config))
    print((out / "table3.md").read_text())
    print(f"wrote {out}: table3.md/.csv/.tex, runs.json, scatter.png, manifest.json")
    return 0
