"""A family's metanetwork data set in memory: usable members, a fixed split, preprocessing.

Everything here works on plain arrays (weights [n, P] float32, targets [n], member ids [n]) and
a layout; `metanets.loader` is the thin link that fills them from a weight store.

Exclusion policy: a member is unusable when its status is not "ok" (diverged in training), or its
target or any of its weights is not finite. Unusable members are dropped before the split and
counted by reason. Members that end at chance accuracy with finite values are valid members and
stay (the stage manifest counts them).

Split: members are ordered by sha256(member_id) and cut at `train_frac` and `train_frac +
val_frac` (50% / 25% / 25% by default; val and test sizes rounded half up, train takes the
rest, so 6 members already give every split the 2 that R^2 and tau need). The order
depends on the ids alone, so the split is the same whatever order the store returns rows in, and
the cut sizes are exact even for a 40-member zoo (hash buckets would only be right on average).
A member can change side only when the set of usable members changes, and then the zoo
fingerprint, part of every run's key, changes too, so no result mixes two splits.

Preprocessing, two independent choices (INPUTS, TARGETS), fitted on the train split only:
- inputs "standardized": per parameter tensor, one mean and one standard deviation over every
  train member's entries of that tensor. Per-tensor (not per-coordinate) scaling keeps DeepSets
  and StatNN exactly invariant to hidden-channel permutations, while putting norm gains (near 1)
  and conv weights (near 0.1) on one scale. "raw": the weights as trained, as the companion code
  feeds them.
- targets "standardized": zero mean and unit variance. "fraction": the target as stored, which
  for an accuracy is a fraction in [0, 1], as the companion's test_acc / 100 (it stores percent).
R^2 and Kendall tau are computed in target units either way; what changes is the training: the
MSE's scale (so AdamW's effective step against its weight decay) and where the output starts.

Alignment (`aligned=True`, families whose hidden-channel permutations are exact symmetries only:
`Family.symmetric`). Every usable member is permuted by weight matching (zoo.align, Git Re-Basin)
to one reference, the train-split member with the lowest member id: a pure function of the ids,
and never a val or test member, so nothing about held-out members leaks into the inputs. Aligning
happens after the split and before the preprocessing is fitted; each member still computes its
own function, so its target is unchanged. The cost is recorded (`FamilyData.alignment`).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np

from zoo.layout import Layout

from .base import as_layout

TRAIN_FRAC, VAL_FRAC = 0.5, 0.25  # paper E.3: 50 / 25 / 25
MIN_SPLIT = 2  # R^2 and Kendall tau need at least 2 members in a split
INPUTS = ("standardized", "raw")  # input preprocessing (module docstring)
TARGETS = ("standardized", "fraction")  # target preprocessing; "fraction" for accuracy targets only
ROWS = 256  # members per chunk when scanning [n, P] matrices (78,042 x 256 x 8 B = 160 MB)


def id_order(member_ids) -> np.ndarray:
    """Row indices sorted by sha256(member_id): the canonical, file-order-free member order."""
    keys = [hashlib.sha256(str(m).encode()).hexdigest() for m in member_ids]
    return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # [n_train] int64 row indices
    val: np.ndarray  # [n_val]
    test: np.ndarray  # [n_test]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def split_members(member_ids, *, train_frac: float = TRAIN_FRAC, val_frac: float = VAL_FRAC,
                  family: str = "") -> Split:
    """Disjoint train / val / test row indices, a pure function of the member ids."""
    if not (0 < train_frac < 1 and 0 < val_frac < 1 and train_frac + val_frac < 1):
        raise ValueError(f"train_frac={train_frac!r}, val_frac={val_frac!r}: must be > 0 and sum to < 1")
    if len(set(member_ids)) != len(member_ids):
        raise ValueError(f"member_ids of family {family!r} contain duplicates")
    order, n = id_order(member_ids), len(member_ids)
    n_val, n_test = (int(np.floor(f * n + 0.5)) for f in (val_frac, 1 - train_frac - val_frac))
    n_train = n - n_val - n_test
    split = Split(order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])
    if min(split.sizes().values()) < MIN_SPLIT:
        raise ValueError(f"family {family!r} has {n} usable members, split {split.sizes()}; every split "
                         f"needs at least {MIN_SPLIT} members: train more members or change the fractions")
    return split


def finite_rows(weights: np.ndarray) -> np.ndarray:
    """[n, P] -> [n] bool, True where every weight is finite (scanned in row chunks)."""
    return np.concatenate([np.isfinite(weights[i : i + ROWS]).all(1) for i in range(0, len(weights), ROWS)]
                          or [np.zeros(0, bool)])


def usable_rows(weights, targets, status=None) -> tuple[np.ndarray, dict[str, int]]:
    """The exclusion policy of the module docstring: [n] keep mask and counts by reason."""
    ok = np.ones(len(targets), bool) if status is None else np.asarray(status) == "ok"
    finite_y, finite_w = np.isfinite(targets), finite_rows(weights)
    counts = {
        "not_ok_status": int((~ok).sum()),
        "nonfinite_target": int((ok & ~finite_y).sum()),
        "nonfinite_weights": int((ok & finite_y & ~finite_w).sum()),
    }
    return ok & finite_y & finite_w, counts


def _tensor_sums(x: np.ndarray, rows: np.ndarray, layout: Layout, power: int) -> np.ndarray:
    """[T] float64 sum over `rows` of x and each tensor's entries of x ** power, a chunk of rows
    at a time (never a copy of x[rows])."""
    col = sum(np.power(x[rows[i : i + ROWS]], power, dtype=np.float64).sum(0) for i in range(0, len(rows), ROWS))
    cum = np.concatenate([[0.0], np.cumsum(col)])
    return np.array([cum[t.offset + t.size] - cum[t.offset] for t in layout.tensors])


def check_preprocessing(inputs: str, targets: str, target: str = "test_acc") -> None:
    if inputs not in INPUTS:
        raise ValueError(f"inputs={inputs!r}: must be one of {INPUTS}")
    if targets not in TARGETS:
        raise ValueError(f"targets={targets!r}: must be one of {TARGETS}")
    if targets == "fraction" and not target.endswith("_acc"):
        raise ValueError(f"targets='fraction' with target={target!r}: 'fraction' is for accuracy targets "
                         "(train_acc, test_acc); use 'standardized'")


def _tensor_moments(x: np.ndarray, rows: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """[T] per-tensor mean and std of x over `rows` and each tensor's entries (std 1 where zero)."""
    safe = np.maximum(np.array([len(rows) * t.size for t in layout.tensors], dtype=np.float64), 1)
    mean = _tensor_sums(x, rows, layout, 1) / safe
    var = np.maximum(_tensor_sums(x, rows, layout, 2) / safe - mean**2, 0)
    return mean, np.where(var > 0, np.sqrt(var), 1.0)


@dataclass(frozen=True)
class Standardizer:
    layout: Layout  # the family's layout; one input mean/std per tensor
    x_mean: np.ndarray  # [T] float64 per-tensor mean over train members and entries (0 for raw inputs)
    x_std: np.ndarray  # [T] float64 per-tensor std (1 where a tensor is constant or empty, or inputs are raw)
    y_mean: float  # train-target mean (0 for fraction targets)
    y_std: float  # train-target std (1 if the train targets are constant, or targets are fractions)
    inputs_rule: str = "standardized"  # one of INPUTS
    targets_rule: str = "standardized"  # one of TARGETS

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, layout, rows=None, *, inputs_rule: str = "standardized",
            targets_rule: str = "standardized") -> Standardizer:
        """Statistics of x [n, P] and y [n] over `rows` (the train split; default all rows); the
        identity for raw inputs and fraction targets."""
        check_preprocessing(inputs_rule, targets_rule)
        layout = as_layout(layout)
        rows = np.arange(len(x)) if rows is None else np.asarray(rows)
        n_tensors = len(layout.tensors)
        mean, std = (_tensor_moments(x, rows, layout) if inputs_rule == "standardized"
                     else (np.zeros(n_tensors), np.ones(n_tensors)))
        y_mean, y_std = (0.0, 1.0) if targets_rule == "fraction" else (float(np.mean(y[rows])), float(np.std(y[rows])))
        return cls(layout, mean, std, y_mean, y_std if y_std > 0 else 1.0, inputs_rule, targets_rule)

    def inputs(self, x: np.ndarray) -> np.ndarray:
        """Standardize [n, P] float32 in place (row-chunked) and return it; raw inputs pass as they are."""
        if self.inputs_rule == "raw":
            return x
        sizes = [t.size for t in self.layout.tensors]
        shift = np.repeat(self.x_mean, sizes).astype(np.float32)
        scale = np.repeat(1.0 / self.x_std, sizes).astype(np.float32)
        for i in range(0, len(x), ROWS):
            x[i : i + ROWS] -= shift
            x[i : i + ROWS] *= scale
        return x

    def targets(self, y: np.ndarray) -> np.ndarray:
        return ((np.asarray(y, np.float64) - self.y_mean) / self.y_std).astype(np.float32)

    def predictions(self, z: np.ndarray) -> np.ndarray:
        """Standardized predictions back to target units."""
        return np.asarray(z, np.float64) * self.y_std + self.y_mean

    def to_json(self) -> dict:
        return {"inputs": self.inputs_rule, "targets": self.targets_rule, "x_mean": self.x_mean.tolist(),
                "x_std": self.x_std.tolist(), "y_mean": self.y_mean, "y_std": self.y_std}


def fingerprint(member_ids, targets, n_params: int) -> str:
    """16 hex chars of sha256 over the sorted (member id, target) pairs and P: what a run saw."""
    pairs = sorted(zip(map(str, member_ids), map(float, targets)))
    return hashlib.sha256(json.dumps([n_params, pairs]).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class FamilyData:
    family: str  # zoo family name
    layout: Layout  # the family's per-tensor layout, P = layout.size
    member_ids: np.ndarray  # [n] str, usable members only
    x: np.ndarray  # [n, P] float32 inputs, preprocessed by `scaler` (standardized with train statistics, or raw)
    y: np.ndarray  # [n] float64 targets in their own units (e.g. test accuracy in [0, 1])
    split: Split  # row indices of train / val / test
    scaler: Standardizer  # fitted on split.train
    excluded: dict  # members dropped before the split, by reason
    fingerprint: str  # zoo content key of these members, part of every run's key
    alignment: dict | None = None  # weight matching's reference id and cost when aligned, else None


def check_alignable(family: str) -> str:
    """`family`, or a ValueError: only exact hidden-channel symmetries give aligned members that
    compute their own function (zoo.alignment)."""
    from zoo.families import FAMILIES

    symmetric = [f for f, rec in FAMILIES.items() if rec.symmetric]
    if family not in symmetric:
        raise ValueError(f"aligned=True for family={family!r}: its permutations are no symmetry of the zoo's "
                         f"networks; allowed: {', '.join(symmetric)}")
    return family


def align_members(x: np.ndarray, member_ids: np.ndarray, split: Split, family: str) -> dict:
    """Permute every row of x [n, P] in place (row chunks) to the train member with the lowest id;
    returns what the run records say about it."""
    from zoo.alignment import align  # scipy's import is slow; only aligned rows need it

    check_alignable(family)
    ref_row = split.train[np.argmin(member_ids[split.train])]
    reference = np.array(x[ref_row])
    start = time.perf_counter()
    for i in range(0, len(x), ROWS):
        x[i : i + ROWS] = align(x[i : i + ROWS], reference, family)
    seconds = time.perf_counter() - start
    return {"method": "weight matching (zoo.align, seed 0, max_iter 100)", "reference": str(member_ids[ref_row]),
            "reference_rule": "lowest member id of the train split", "members": int(len(x)),
            "seconds": round(seconds, 3), "seconds_per_member": round(seconds / max(len(x), 1), 5)}


def prepare(weights: np.ndarray, targets, member_ids, layout, *, family: str, status=None,
            train_frac: float = TRAIN_FRAC, val_frac: float = VAL_FRAC, max_members: int = 0,
            inputs_rule: str = "standardized", targets_rule: str = "standardized", copy: bool = True,
            aligned: bool = False) -> FamilyData:
    """Apply the exclusion policy, split, fit the preprocessing (`inputs_rule` of INPUTS,
    `targets_rule` of TARGETS) on train, preprocess the inputs.

    `max_members` > 0 keeps the first that many usable members in sha256(member_id) order, a
    deterministic subsample for quick runs. `copy=False` hands `weights` over: when every row is
    kept it is standardized in place, so a paper-size family (3 GB) is not held twice.
    `aligned=True` aligns the members to a train reference first (module docstring).
    """
    layout, targets, member_ids = as_layout(layout), np.asarray(targets, np.float64), np.asarray(member_ids)
    if weights.ndim != 2 or weights.shape[1] != layout.size or not len(weights) == len(targets) == len(member_ids):
        raise ValueError(f"weights {weights.shape}, targets {targets.shape}, member_ids {member_ids.shape}: "
                         f"need [n, {layout.size}], [n], [n]")
    if len(weights) == 0:
        raise ValueError(f"family {family!r} has no members")
    keep, excluded = usable_rows(weights, targets, status)
    rows = np.flatnonzero(keep)
    if max_members:
        rows = np.sort(rows[id_order(member_ids[rows])[:max_members]])
    ids, y = member_ids[rows], targets[rows]
    split = split_members(list(ids), train_frac=train_frac, val_frac=val_frac, family=family)
    in_place = not copy and len(rows) == len(weights) and weights.dtype == np.float32
    x = weights if in_place else np.asarray(weights[rows], dtype=np.float32)
    alignment = align_members(x, ids, split, family) if aligned else None
    scaler = Standardizer.fit(x, y, layout, rows=split.train, inputs_rule=inputs_rule, targets_rule=targets_rule)
    return FamilyData(family, layout, ids, scaler.inputs(x), y, split, scaler, excluded,
                      fingerprint(ids, y, layout.size), alignment)
