"""What the training engines share: the resident data set, measurement, one member's loop.

`fit` is the loop of the one-member engines (resident and FFCV): init, AdamW steps over
`batches(epoch)`, checkpoints, divergence, measurement. The packed engine (`zoo.train.packed`)
has its own lockstep loop and shares `Resident`, `resident`, `measure`, `nan_metrics` and
`member_status`.
"""
from __future__ import annotations

import math
import time
from contextlib import closing
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import Cifar10
from ..families import build
from ..layout import flatten
from ..members import MemberConfig
from ..recipe import Recipe
from ..records import METRICS, MemberResult
from .evaluate import evaluate_flat, normalize

EVAL_IMAGES = {"cuda": 65536, "cpu": 2048}  # images per evaluation forward, summed over members (memory)
Batches = Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]]  # epoch -> (x uint8 [B,3,32,32], y [B])


@dataclass(frozen=True)
class Resident:
    """The recipe's subset of a data set, as tensors on the training device."""

    train_x: torch.Tensor  # [n_train, 3, 32, 32] uint8
    train_y: torch.Tensor  # [n_train] int64
    test_x: torch.Tensor  # [n_test, 3, 32, 32] uint8
    test_y: torch.Tensor  # [n_test] int64
    data_sha: str  # Cifar10.identity["sha256"] of the copy the subset was taken from


_RESIDENT: list = []  # [(data, key, Resident)]: the last data set made resident, reused while it is asked for


def resident(data: Cifar10, recipe: Recipe, device) -> Resident:
    """The recipe's subset of `data` on `device`; a repeated request reuses the copy already there."""
    key = (recipe.n_train, recipe.n_test, recipe.subset_seed, str(torch.device(device)))
    if _RESIDENT and _RESIDENT[0][0] is data and _RESIDENT[0][1] == key:
        return _RESIDENT[0][2]
    sub = recipe.apply_subset(data)
    arrays = (sub.train_x, sub.train_y, sub.test_x, sub.test_y)
    tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays]
    res = Resident(*tensors, data_sha=data.identity["sha256"])
    _RESIDENT[:] = [(data, key, res)]
    return res


def device_label(device) -> str:
    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def measure(net: nn.Module, flat: torch.Tensor, res: Resident, smoothing: torch.Tensor,
            autocast: bool) -> list[dict[str, float]]:
    """flat [N, P] on the training device -> N dicts of records.METRICS, un-augmented images."""
    batch = max(1, EVAL_IMAGES.get(flat.device.type, EVAL_IMAGES["cpu"]) // len(flat))
    out = {}
    for split, x, y in (("train", res.train_x, res.train_y), ("test", res.test_x, res.test_y)):
        m = evaluate_flat(net, flat, x, y, smoothing, batch=batch, autocast=autocast)
        out.update({f"{split}_acc": m["acc"], f"{split}_loss": m["loss"], f"{split}_loss_plain": m["loss_plain"]})
    return [{k: float(out[k][i]) for k in METRICS} for i in range(len(flat))]


def nan_metrics() -> dict[str, float]:
    return {k: math.nan for k in METRICS}


def new_member(cfg: MemberConfig, recipe: Recipe, *, asym_seed: int, device) -> tuple[nn.Module, torch.optim.AdamW]:
    """The member's initialised network on `device` and its AdamW (lr set per step). Fused, because
    only the fused kernel can skip a step on a device-side flag (`train_epoch`)."""
    net = recipe.init_weights(build(cfg.family, asym_seed), cfg).to(device)
    return net, torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def member_status(recipe: Recipe, diverged_epoch: int | None, final_finite: bool) -> str:
    """A member's records.STATUSES under the recipe's `nonfinite` policy (`zoo.train`, "Divergence"):
    "freeze" calls a member diverged when it had a non-finite step, "skip" when its final weights
    are non-finite (the paper's count)."""
    if recipe.nonfinite == "freeze":
        return "ok" if diverged_epoch is None else "diverged"
    return "ok" if final_finite else "diverged"


def _non_finite(loss: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """0-dim bool on the device: the loss or some gradient entry is NaN or infinite."""
    grads = [p.grad.reshape(-1) for p in params if p.grad is not None]
    return ~torch.isfinite(torch.cat([loss.detach().reshape(1), *grads])).all()


def train_epoch(net: nn.Module, opt: torch.optim.Optimizer, batches, lrs: np.ndarray, label_smoothing: float,
                autocast: torch.dtype | None, *, nonfinite: str) -> torch.Tensor:
    """One epoch of AdamW steps at learning rates `lrs` [steps]. Returns a 0-dim bool on the device,
    True when a step had a non-finite loss or gradient. `nonfinite` (Recipe.nonfinite): "skip"
    skips that step only, "freeze" that step and all after it.

    The skip happens on the device, through the fused optimizer's `found_inf` (the flag GradScaler
    uses: parameters, moments and the optimizer's step count stay as they were), so the loop never
    waits for the GPU; the caller reads the flag once per epoch.
    """
    params = list(net.parameters())
    bad = torch.zeros((), dtype=torch.bool, device=params[0].device)
    for lr, (x, y) in zip(lrs, batches):  # lrs first: zip must not draw a batch past the last step
        with torch.autocast(x.device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            logits = net(normalize(x))
        loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        step_bad = _non_finite(loss, params)
        bad = bad | step_bad
        opt.found_inf = (bad if nonfinite == "freeze" else step_bad).float()
        opt.param_groups[0]["lr"] = float(lr)
        opt.step()
    return bad


def fit(cfg: MemberConfig, res: Resident, recipe: Recipe, batches: Batches, *, asym_seed: int = 0,
        device="cpu") -> MemberResult:
    """Train one member on `batches(epoch)` and measure it on `res`: the loop shared by the
    resident and FFCV paths."""
    start, device = time.perf_counter(), torch.device(device)
    net, opt = new_member(cfg, recipe, asym_seed=asym_seed, device=device)
    epochs, steps = recipe.member_epochs(cfg), recipe.steps_per_epoch(len(res.train_y))
    lrs = cfg.lr * recipe.lr_factors(epochs, steps).reshape(epochs, steps)
    autocast = recipe.autocast_dtype(device)
    smoothing = torch.tensor([cfg.label_smoothing], device=device)

    def snapshot():
        flat = flatten(net)
        return flat.numpy(), measure(net, flat[None].to(device), res, smoothing, autocast is not None)[0]

    params_init = flatten(net).numpy()
    checkpoints = {0: snapshot()} if 0 in recipe.checkpoints else {}
    diverged = None
    for epoch in range(epochs):
        with closing(batches(epoch)) as it:
            bad = bool(train_epoch(net, opt, it, lrs[epoch], cfg.label_smoothing, autocast,
                                   nonfinite=recipe.nonfinite))
        diverged = epoch if bad and diverged is None else diverged
        if bad and recipe.nonfinite == "freeze":
            break
        if epoch + 1 in recipe.checkpoints:
            checkpoints[epoch + 1] = snapshot()
    final = flatten(net).numpy()
    outcome = member_status(recipe, diverged, bool(np.isfinite(final).all()))
    metrics = snapshot()[1] if outcome == "ok" else nan_metrics()
    return MemberResult(
        config=cfg, status=outcome, diverged_epoch=diverged, metrics=metrics, params_init=params_init,
        params_final=final, wall_time_s=time.perf_counter() - start, device=device_label(device),
        data_sha=res.data_sha, checkpoints=checkpoints,
    )
