"""The thin link to the weight store: one family of a zoo -> `FamilyData`, with its counts.

Weights come from `Zoo.weights`, which decodes every Parquet row group straight into one
preallocated [n, P] float32 array; `prepare(copy=False)` then standardizes that array in place
when no member is excluded, so a family costs about one copy of its weights in memory (3 GB for
10,000 standard members). Diverged members are read too, so the exclusion policy of
`metanets.data` counts them with the others.
"""
from __future__ import annotations

import numpy as np

from zoo.members import first_replicates as replicate_zero
from zoo.records import AT_CHANCE_ACC, METRICS

from .data import FamilyData, check_alignable, prepare


def open_store(path):
    """The zoo at `path` (a folder made by `zoo.store.init_zoo`, or a URI)."""
    import zoo

    return zoo.open_zoo(path)


def first_replicates(store, family: str, members):
    """The members that are replicate 0 of their index; all of them in a zoo without replicates."""
    if store.manifest.get("replicates", 1) == 1:
        return members
    zoo_seed = store.manifest["zoo_seed"]
    return members[replicate_zero(zoo_seed, [family] * len(members), members["index"], members["member_id"])]


def check_target(target: str) -> str:
    if target not in METRICS:
        raise ValueError(f"target={target!r}: must be one of {METRICS}")
    return target


def load_family(store, family: str, *, target: str = "test_acc", which: str = "final",
                **prepare_args) -> tuple[FamilyData, dict]:
    """(data, info): the family's usable members, split and preprocessed (`prepare_args`: `prepare`'s
    train_frac, val_frac, max_members, inputs_rule, targets_rule, aligned), and the counts for the stage
    manifest (with weight matching's reference and cost when aligned).
    Members at chance accuracy (zoo.records.AT_CHANCE_ACC) are counted and kept."""
    if prepare_args.get("aligned"):
        check_alignable(family)  # before reading a whole family's weights
    columns = list(dict.fromkeys(["member_id", "index", "status", "test_acc", check_target(target)]))
    members = first_replicates(store, family, store.members(columns, family=family)).set_index("member_id")
    if members.empty:
        raise ValueError(f"family {family!r} of the zoo at {store.path} has no committed members")
    weights, ids = store.weights(family, which, status=None)
    if len(ids) != len(members):  # replicates r >= 1 are LMC's (zoo.members.first_replicates)
        keep = np.isin(ids, members.index)
        weights, ids = weights[keep], np.asarray(ids)[keep]
    rows = members.reindex(ids)
    data = prepare(weights, rows[target].to_numpy(np.float64), ids, store.layout(family), family=family,
                   status=rows["status"].to_numpy(), copy=False, **prepare_args)
    del weights
    chance = members.loc[data.member_ids, "test_acc"].to_numpy() < AT_CHANCE_ACC
    info = {"members": int(len(members)), "usable": int(len(data.member_ids)), "excluded": data.excluded,
            "chance_level": int(chance.sum()), "chance_level_rule": f"test_acc < {AT_CHANCE_ACC}",
            "splits": data.split.sizes(), "fingerprint": data.fingerprint, "n_params": data.layout.size,
            "n_tensors": len(data.layout.tensors), "which": which, "target": target,
            "standardizer": data.scaler.to_json(), **({"alignment": data.alignment} if data.alignment else {})}
    return data, info
