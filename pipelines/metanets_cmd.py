"""`symzoo metanets`: predict members' test accuracy from their weights (paper Table 3).

Settings come from MetanetConfig's defaults (the paper's protocol), then a YAML file given with
--config, then the flags below; unknown keys and bad values are refused with a clear message.
"""
from __future__ import annotations

import logging
from pathlib import Path

import yaml

FLAGS = {  # flag -> (config field, parser of the flag's text)
    "families": ("families", lambda s: s.split(",")),
    "metanets": ("metanets", lambda s: s.split(",")),
    "lrs": ("lrs", lambda s: [float(v) for v in s.split(",")]),
    "runs": ("runs", int),
    "epochs": ("epochs", int),
    "batch_size": ("batch_size", int),
    "max_members": ("max_members", int),
    "seed": ("seed", int),
    "device": ("device", str),
    "out": ("out", str),
}


def register(sub) -> None:
    p = sub.add_parser("metanets", help="metanetworks predicting test accuracy from weights (paper Table 3)")
    p.add_argument("--zoo", required=True, help="zoo folder or URI in the store")
    p.add_argument("--out", default=None, help="output folder (default: <zoo>/metanets)")
    p.add_argument("--config", default=None, metavar="YAML", help="MetanetConfig fields to override the defaults")
    p.add_argument("--families", default=None, help="comma-separated families (default: every family of the zoo)")
    p.add_argument("--metanets", default=None, help="comma-separated subset of mlp,dmc,deepsets,statnn")
    p.add_argument("--lrs", default=None, help="comma-separated learning-rate grid (default: the paper's six)")
    p.add_argument("--runs", default=None, help="final runs per cell at the chosen lr (default 5)")
    p.add_argument("--epochs", default=None, help="epochs per run (default 50)")
    p.add_argument("--batch-size", dest="batch_size", default=None, help="members per step (default 128)")
    p.add_argument("--max-members", dest="max_members", default=None, help="cap per family (default: all)")
    p.add_argument("--seed", default=None, help="base seed of every run (default 0)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default auto)")
    p.set_defaults(func=run)


def config_dict(args) -> dict:
    """The YAML file's fields, overridden by the flags that were given."""
    d = {}
    if args.config:
        d = yaml.safe_load(Path(args.config).read_text()) or {}
        if not isinstance(d, dict):
            raise ValueError(f"--config {args.config}: must hold a mapping of MetanetConfig fields")
    for flag, (field, parse) in FLAGS.items():
        text = getattr(args, flag)
        if text is not None:
            try:
                d[field] = parse(text)
            except ValueError:
                raise ValueError(f"--{flag.replace('_', '-')}={text!r}: not a valid {field}") from None
    return {**d, "zoo": args.zoo}


def run(args) -> int:
    from metanets.stage import MetanetConfig, run as run_stage

    config = MetanetConfig.from_dict(config_dict(args))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = run_stage(config)
    print((out / "table3.md").read_text())
    print(f"wrote {out}: table3.md/.csv/.tex, runs.json, scatter.png, manifest.json")
    return 0
