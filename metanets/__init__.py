"""Metanetworks that predict a member's CIFAR-10 test accuracy from its weights (paper Sec. 5.3).

No Ray here: everything runs and tests on a laptop CPU. Public API:

    build(name, layout, **options) -> Metanet    "mlp" | "dmc" | "deepsets" | "statnn" (METANETS)
        Metanet: [B, P] flat trainable vectors (zoo.flatten order) -> [B] predictions;
        .featurize(x) [B, P] -> [B, F] is parameter-free, .forward_features(f) learns
    MetanetSpec(name, display, build, options)   what a metanetwork declares in its own file
    register(spec)                               add one at run time (REGISTRY lists the built-in ones)
    prepare(weights [n, P], targets [n], member_ids, layout, *, family, status=None, inputs_rule=...,
            targets_rule=...) -> FamilyData
        exclusion policy, sha256(member_id) split 50/25/25, train-only preprocessing (INPUTS, TARGETS)
    split_members(member_ids, *, train_frac, val_frac) -> Split(train, val, test)
    train_run(name, data, feats, *, lr, seed, settings, options=None) -> dict    one run's record
    select_lr(records) -> lr                     best validation R^2 among runs over LR_GRID
    table3(runs) -> DataFrame; paper_table3() -> DataFrame; PAPER_TABLE3, PAPER_CHOSEN_LRS (the paper's)
    MetanetConfig, run(config) -> Path           the whole stage (metanets.stage)

A new metanetwork is a module with a `Metanet` subclass and a `SPEC = MetanetSpec(...)`, plus one
line in `registry.REGISTRY`.
"""
from .base import Metanet, MetanetSpec, as_layout, seeded_init
from .data import INPUTS, TARGETS, FamilyData, Split, Standardizer, prepare, split_members
from .registry import METANETS, REGISTRY, build, register
from .report import PAPER_CHOSEN_LRS, PAPER_TABLE3, paper_table3, table3
from .stage import MetanetConfig, run
from .train import LR_GRID, TrainSettings, featurize_all, run_seed, select_lr, train_run

__all__ = [
    "INPUTS", "LR_GRID", "METANETS", "PAPER_CHOSEN_LRS", "PAPER_TABLE3", "REGISTRY", "TARGETS", "FamilyData",
    "Metanet", "MetanetConfig", "MetanetSpec", "Split", "Standardizer", "TrainSettings", "as_layout", "build",
    "featurize_all", "paper_table3", "prepare", "register", "run", "run_seed", "seeded_init", "select_lr",
    "split_members", "table3", "train_run",
]
