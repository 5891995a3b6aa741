"""The thin link to the weight store: one family of a zoo -> `FamilyData`, with its counts.

Weights come from `Zoo.weights`, which decodes every Parquet row group straight into one
preallocated [n, P] float32 array; `prepare(copy=False)` then standardizes that array in place
when no member is excluded, so a family costs about one copy of its weights in memory (3 GB for
10,000 standard members). Diverged members are read too, so the exclusion policy of
`metanets.data` counts them with the others.
"""
from __future__ import annotations

import numpy as np

from zoo.records import AT_CHANCE_ACC, METRICS

from .data import FamilyData, prepare


def open_store(path):
    """The zoo at `path` (a folder made by `zoo.store.init_zoo`, or a URI)."""
    import zoo

    return zoo.open_zoo(path)


def check_target(target: str) -> str:
    if target not in METRICS:
        raise ValueError(f"target={target!r}: must be one of {METRICS}")
    return target


def load_family(store, family: str, *, target: str = "test_acc", which: str = "final",
                **prepare_args) -> tuple[FamilyData, dict]:
    """(data, info): the family's usable members, split and preprocessed (`prepare_args`: `prepare`'s
    train_frac, val_frac, max_members, inputs_rule, targets_rule), and the counts for the stage manifest.
    Members at chance accuracy (zoo.records.AT_CHANCE_ACC) are counted and kept."""
    columns = list(dict.fromkeys(["member_id", "status", "test_acc", check_target(target)]))
    members = store.members(columns, family=family).set_index("member_id")
    if members.empty:
        raise ValueError(f"family {family!r} of the zoo at {store.path} has no committed members")
    weights, ids = store.weights(family, which, status=None)
    rows = members.reindex(ids)
    data = prepare(weights, rows[target].to_numpy(np.float64), ids, store.layout(family), family=family,
                   status=rows["status"].to_numpy(), copy=False, **prepare_args)
    del weights
    chance = members.loc[data.member_ids, "test_acc"].to_numpy() < AT_CHANCE_ACC
    info = {"members": int(len(members)), "usable": int(len(data.member_ids)), "excluded": data.excluded,
            "chance_level": int(chance.sum()), "chance_level_rule": f"test_acc < {AT_CHANCE_ACC}",
            "splits": data.split.sizes(), "fingerprint": data.fingerprint, "n_params": data.layout.size,
            "n_tensors": len(data.layout.tensors), "which": which, "target": target,
            "standardizer": data.scaler.to_json()}
    return data, info
