"""Training zoo members: the resident one-member path, and the front that picks an engine.

Three engines run one recipe (`zoo.recipe`):
- "resident": one member at a time, a plain module and torch.optim.AdamW; the data set is a
  uint8 tensor on the training device and the augmentation is batched tensor ops
  (`zoo.train.augment`), no DataLoader. The CPU path (one member per process, one thread each).
- "packed": N members in lockstep (`zoo.train.packed`), under vmap or as one grouped-conv network
  (`zoo.train.grouped`), the GPU path.
- "ffcv": as resident, but the training batches come from an FFCV Loader (`zoo.train.ffcv`).

Data: every entry point takes the full `Cifar10` (or any copy) and applies the recipe's subset
itself (`Recipe.apply_subset`, which is idempotent, so passing data that is already the recipe's
subset is fine too). Train metrics are measured on the un-augmented training images of that
subset, test metrics on its test images, both with `zoo.train.evaluate.evaluate_flat`.

Randomness: a member's init is `zoo.init_weights(net, cfg.seed)`; its data order and
augmentation in epoch e are drawn from generators keyed by (cfg.seed, e) (`zoo.train.augment`), the
same draws in the resident and packed paths.

Divergence (Recipe.nonfinite): a step is non-finite for a member when its training loss or
gradient is NaN or infinite. `diverged_epoch` is the 0-based epoch of the member's first such step,
None if it had none, under either policy.
- "skip" (the default; the companion's GradScaler): that step is not taken for that member (its
  parameters, AdamW moments and step count stay as they were, the lr schedule moves on) and it
  trains on. Its status is "diverged" when its final weights are non-finite (the paper's count of
  diverged members), "ok" otherwise, so an "ok" member may have a `diverged_epoch`. Every checkpoint
  is recorded, and `params_final` holds the final weights as they are.
- "freeze" (symzoo's before the option): neither that step nor any later one is taken (a packed
  member is masked out while its pack-mates go on; a resident member stops at the end of that
  epoch); its status is "diverged" and `params_final` holds the parameters from before that step.
  No checkpoint from the end of that epoch on is recorded.
A "diverged" member's metrics are all NaN (records.METRICS). No checkpoint past the member's last
epoch is recorded.
"""
from __future__ import annotations

import torch

from ..data import Cifar10
from ..members import MemberConfig
from ..recipe import Recipe
from ..records import MemberResult
from .common import Resident, device_label, fit, measure, new_member, resident, train_epoch
from .grouped import check_impl
from .single import resident_batches, train_member

ENGINES = ("auto", "resident", "packed", "ffcv")


def train_members(cfgs: list[MemberConfig], data: Cifar10, recipe: Recipe, *, asym_seed: int = 0, device="cpu",
                  engine: str = "auto", pack_size: int = 64, compile: bool = False, impl: str = "vmap",
                  cuda_graph: bool = False, beton_dir=None) -> list[MemberResult]:
    """Train members of one family; results in the order of `cfgs`.

    engine: "resident" (one at a time), "packed" (packs of at most `pack_size` members of equal
    epoch count, optionally torch.compile'd or replayed as a CUDA graph, forward `impl`: `zoo.train.grouped`),
    "ffcv" (FFCV Loader batches; .beton files cached in `beton_dir`), "auto" = packed on cuda,
    resident elsewhere.
    """
    families = sorted({c.family for c in cfgs})
    if len(families) > 1:
        raise ValueError(f"cfgs: members of one family expected, got families {families}")
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r}: must be one of {ENGINES}")
    if not isinstance(pack_size, int) or pack_size < 1:
        raise ValueError(f"pack_size={pack_size!r}: must be an int >= 1")
    check_impl(impl)
    if engine == "auto":
        engine = "packed" if torch.device(device).type == "cuda" else "resident"
    if engine == "packed":
        from .packed import train_packs  # imported on use: torch.compile set-up

        return train_packs(cfgs, data, recipe, asym_seed=asym_seed, device=device, pack_size=pack_size,
                           compile=compile, impl=impl, cuda_graph=cuda_graph)
    if engine == "ffcv":
        from .ffcv import train_member_ffcv  # needs ffcv, an optional dependency

        return [train_member_ffcv(c, data, recipe, beton_dir=beton_dir, asym_seed=asym_seed, device=device)
                for c in cfgs]
    return [train_member(c, data, recipe, asym_seed=asym_seed, device=device) for c in cfgs]


__all__ = ["ENGINES", "Resident", "device_label", "fit", "measure", "new_member", "resident", "resident_batches",
           "train_epoch", "train_member", "train_members"]
