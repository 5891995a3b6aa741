"""Metanetworks that predict a member's CIFAR-10 test accuracy from its weights (paper Sec. 5.3).

No Ray here: everything runs and tests on a laptop CPU. Public API:

    build(name, layout, **kw) -> Metanet        "mlp" | "dmc" | "deepsets" | "statnn" (METANETS)
        Metanet: [B, P] flat trainable vectors (zoo.flatten order) -> [B] predictions;
        .featurize(x) [B, P] -> [B, F] is parameter-free, .forward_features(f) learns
    prepare(weights [n, P], targets [n], member_ids, layout, *, family, status=None, ...) -> FamilyData
        exclusion policy, sha256(member_id) split 50/25/25, train-only standardization
    split_members(member_ids, *, train_frac, val_frac) -> Split(train, val, test)
    train_run(name, data, feats, *, lr, seed, settings) -> dict    one run's record
    select_lr(records) -> lr                                       best validation R^2
    table3(runs) -> DataFrame; paper_table3() -> DataFrame; PAPER_TABLE3   (the paper's numbers)
    MetanetConfig, run(config) -> Path                             the whole stage (metanets.stage)

A new metanetwork is a module with a `Metanet` subclass, registered by name in `registry.py`.
"""
from .base import Metanet, as_layout, seeded_init
from .data import FamilyData, Split, Standardizer, prepare, split_members
from .registry import METANETS, build
from .report import PAPER_TABLE3, paper_table3, table3
from .stage import MetanetConfig, run
from .train import PAPER_LRS, TrainSettings, featurize_all, run_seed, select_lr, train_run

__all__ = [
    "METANETS", "PAPER_LRS", "PAPER_TABLE3", "FamilyData", "Metanet", "MetanetConfig", "Split", "Standardizer",
    "TrainSettings", "as_layout", "build", "featurize_all", "paper_table3", "prepare", "run", "run_seed",
    "seeded_init", "select_lr", "split_members", "table3", "train_run",
]
