"""Member configs: a member is a pure function of (zoo seed, member index).

Hyperparameters follow paper Table 8. They depend on (zoo_seed, index) only, so member i of every
family in a zoo shares its hyperparameters and training seed: a paired design whose marginal
distributions are exactly Table 8's, which makes family comparisons less noisy. The member id
also hashes the family, so ids are unique across a whole zoo.

Replicates (`replicate` r >= 1, for linear mode connectivity): member (index, r) has member
(index, 0)'s hyperparameters and its own training seed (init, data order, augmentation), drawn
from (zoo_seed, index, r). Replicate 0 is the member as it always was: its id and seed leave r
out, so zoos made before replicates existed keep their ids.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .validate import check as _check
from .families import check_family

LR_EXP = (0.0, 2.0)  # lr = 0.5 * 10^-U(LR_EXP)  -> 0.005 .. 0.5
WD_EXP = (1.0, 5.0)  # weight decay = 10^-U(WD_EXP)  -> 1e-5 .. 1e-1
SMOOTHING = (0.0, 0.2)  # label smoothing ~ U(SMOOTHING)
EPOCHS = (10, 40)  # epochs ~ randint, both ends included


@dataclass(frozen=True)
class MemberConfig:
    zoo_seed: int  # seed of the whole zoo (>= 0)
    index: int  # member index within its family (>= 0)
    family: str  # "standard" | "w_asym" | "sigma_asym"
    lr: float  # peak AdamW learning rate, > 0
    weight_decay: float  # AdamW decoupled weight decay, >= 0
    label_smoothing: float  # cross-entropy smoothing, in [0, 1)
    epochs: int  # training epochs, >= 1
    seed: int  # training seed: init, data order, augmentation (0 .. 2^63-1)
    replicate: int = 0  # r: members (index, r) share hyperparameters and differ in seed; >= 0
    member_id: str = field(default="")  # derived; the primary key everywhere

    def __post_init__(self):
        _check("zoo_seed", self.zoo_seed, isinstance(self.zoo_seed, int) and self.zoo_seed >= 0, "an int >= 0")
        _check("index", self.index, isinstance(self.index, int) and self.index >= 0, "an int >= 0")
        check_family(self.family)
        _check("lr", self.lr, np.isfinite(self.lr) and self.lr > 0, "a finite float > 0")
        _check("weight_decay", self.weight_decay, np.isfinite(self.weight_decay) and self.weight_decay >= 0,
               "a finite float >= 0")
        _check("label_smoothing", self.label_smoothing, 0 <= self.label_smoothing < 1, "in [0, 1)")
        _check("epochs", self.epochs, isinstance(self.epochs, int) and self.epochs >= 1, "an int >= 1")
        _check("seed", self.seed, isinstance(self.seed, int) and 0 <= self.seed < 2**63, "an int in [0, 2^63)")
        _check("replicate", self.replicate, isinstance(self.replicate, int) and self.replicate >= 0, "an int >= 0")
        derived = member_id(self)
        _check("member_id", self.member_id, self.member_id in ("", derived), f"{derived!r} (derived from the config)")
        object.__setattr__(self, "member_id", derived)

    def hparams(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "member_id"}


def member_id(cfg: MemberConfig) -> str:
    """16 hex chars of sha256 over the canonical JSON of every field but the id itself; replicate 0
    is left out, so a replicate-0 member has the id it had before replicates existed."""
    fields = {k: v for k, v in cfg.hparams().items() if k != "replicate" or v != 0}
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def first_replicates(zoo_seed: int, families, indices, member_ids) -> np.ndarray:
    """[n] bool: which members (family, index, member id; each [n]) are replicate 0 of their index,
    the members every study but LMC uses, so that replicates change neither their n nor their design."""
    return np.array([sample_member(zoo_seed, int(i), f).member_id == m
                     for f, i, m in zip(families, indices, member_ids)], dtype=bool)


def sample_member(zoo_seed: int, index: int, family: str = "standard", replicate: int = 0) -> MemberConfig:
    """Table 8 hyperparameters for member `index` of a zoo, replicate `replicate`: same answer in
    any process, any order."""
    _check("zoo_seed", zoo_seed, isinstance(zoo_seed, int) and zoo_seed >= 0, "an int >= 0")
    _check("index", index, isinstance(index, int) and index >= 0, "an int >= 0")
    _check("replicate", replicate, isinstance(replicate, int) and replicate >= 0, "an int >= 0")
    rng = np.random.default_rng([zoo_seed, index])
    config = MemberConfig(
        zoo_seed=zoo_seed,
        index=index,
        family=family,
        lr=float(0.5 * 10 ** -rng.uniform(*LR_EXP)),
        weight_decay=float(10 ** -rng.uniform(*WD_EXP)),
        label_smoothing=float(rng.uniform(*SMOOTHING)),
        epochs=int(rng.integers(EPOCHS[0], EPOCHS[1], endpoint=True)),
        seed=int(rng.integers(0, 2**63 - 1)),
    )
    if replicate == 0:
        return config
    seed = int(np.random.default_rng([zoo_seed, index, replicate]).integers(0, 2**63 - 1))
    return replace(config, seed=seed, replicate=replicate, member_id="")
