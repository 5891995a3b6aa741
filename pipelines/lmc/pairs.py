"""Which members are paired, their weights, and the evaluation tasks of the pairs still to do.

A pair is two replicates of one member index: same hyperparameters, other seeds (zoo.members).
Replicates (0, 1), (2, 3), ... of an index form disjoint pairs, so the pairs of a family are
independent draws. The members are found by address: sample_member(zoo_seed, index, family, r)
gives each one's id, which the store is asked for.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd

import zoo

from ..mli import Task
from .config import LmcConfig

ALIGNED = "standard_aligned"  # the row of standard pairs aligned by weight matching (Git Re-Basin)
VARIANTS = ("standard", ALIGNED, "sigma_asym", "w_asym")  # Table 1's column order
PAIR_COLUMNS = ["pair", "variant", "family", "index", "member_a", "member_b", "status"]


def replicates_of(manifest: dict) -> int:
    """k of the zoo (GenerateConfig.replicates); zoos made before replicates existed have 1."""
    return int(manifest.get("replicates", 1))


def check_replicates(cfg: LmcConfig, manifest: dict) -> int:
    k = replicates_of(manifest)
    if k < 2:
        raise ValueError(f"zoo={cfg.zoo!r} has {k} replicate per member: LMC pairs need replicates >= 2 "
                         "(generate the zoo with `replicates: 2`, GenerateConfig.replicates)")
    return k


def variants(cfg: LmcConfig, manifest: dict) -> list[str]:
    """The rows to study, in VARIANTS order: the chosen families, and standard aligned if asked."""
    have = list(manifest["families"])
    for f in cfg.families or ():
        if f not in have:
            raise ValueError(f"families={list(cfg.families)}: {f!r} is not in this zoo, which has {have}")
    chosen = set(cfg.families or have)
    if cfg.align and "standard" in chosen:
        chosen.add(ALIGNED)
    return [v for v in VARIANTS if v in chosen]


def family_of(variant: str) -> str:
    return "standard" if variant == ALIGNED else variant


def plan_pairs(z, cfg: LmcConfig, variant: str) -> pd.DataFrame:
    """PAIR_COLUMNS rows of the variant's pairs whose members are both committed, by index."""
    family, k = family_of(variant), check_replicates(cfg, z.manifest)
    members = z.members(columns=["member_id", "index", "status"], family=family).set_index("member_id")
    rows = []
    for index in sorted(set(members["index"])):
        for r in range(0, k - 1, 2):
            a, b = (zoo.sample_member(z.manifest["zoo_seed"], int(index), family, q).member_id for q in (r, r + 1))
            if a in members.index and b in members.index:
                ok = members.at[a, "status"] == "ok" and members.at[b, "status"] == "ok"
                rows.append([f"{variant}:{a}-{b}", variant, family, int(index), a, b, "ok" if ok else "diverged"])
    pairs = pd.DataFrame(rows, columns=PAIR_COLUMNS)
    if cfg.pairs is not None:
        pairs = pairs[pairs["index"].isin(sorted(set(pairs["index"]))[: cfg.pairs])]
    return pairs.reset_index(drop=True)


def _final_weights(z, family: str, ids) -> np.ndarray:
    """[len(ids), P] float32 trained weights of those (ok) members, in the order of `ids`."""
    arr, stored = z.weights(family, which="final", status="ok")
    pos = {m: i for i, m in enumerate(stored)}
    return np.ascontiguousarray(arr[[pos[m] for m in ids]])


def aligned_to(theta_a: np.ndarray, theta_b: np.ndarray, iters: int) -> tuple[np.ndarray, np.ndarray]:
    """(theta_b [n, P] with each row weight-matched to its row of theta_a, seconds per pair [n])."""
    out, seconds = np.empty_like(theta_b), np.empty(len(theta_b))
    for i in range(len(theta_b)):
        start = time.perf_counter()
        out[i] = zoo.align(theta_b[i : i + 1], theta_a[i], "standard", max_iter=iters)[0]
        seconds[i] = time.perf_counter() - start
    return out, seconds


def variant_tasks(z, cfg: LmcConfig, todo: pd.DataFrame, workers: int) -> list[Task]:
    """Chunks of the ok pairs still to do: theta0 = member a, theta_t = member b (aligned to a
    for standard_aligned), so the MLI evaluator's line from theta0 to theta_T is the pair's line."""
    ok = todo[todo.status == "ok"].reset_index(drop=True)
    if ok.empty:
        return []
    family, variant = ok.family.iloc[0], ok.variant.iloc[0]
    theta_a, theta_b = _final_weights(z, family, ok.member_a), _final_weights(z, family, ok.member_b)
    seconds = np.full(len(ok), math.nan)
    if variant == ALIGNED:
        theta_b, seconds = aligned_to(theta_a, theta_b, cfg.align_iter)
    rows = ok.assign(label_smoothing=0.0, align_s=seconds)  # the plain (un-smoothed) test loss
    z.network(family)  # refuses code that builds other fixed pieces than the zoo's members were trained with
    entry = z.manifest["families"][family]  # the evaluator checks its build against its fixed_sha256
    size = min(cfg.chunk, math.ceil(len(ok) / workers))
    return [Task(family, entry["asym_seed"], rows.iloc[s : s + size].reset_index(drop=True), theta_a[s : s + size],
                 theta_b[s : s + size], entry.get("fixed_sha256")) for s in range(0, len(ok), size)]
