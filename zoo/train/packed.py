"""Packed training: N members of one family take their optimizer steps together (the GPU path).

The family's network is built once; the N members' trainable tensors live in one [N, F] buffer
(F = full tensor sizes; W-Asym's fixed positions hold zeros, get zero gradient and stay zero,
while the forward reads the fixed values from the net's buffers), viewed per tensor as
[N, *shape] and run through one of two forwards that compute the same function (`impl`):
"vmap", `zoo.train.vmap.packed_forward` (torch.func vmap + functional_call: each conv becomes a
grouped conv over the members, but the member dimension moves between layers), or "grouped" /
"grouped_cl", `zoo.train.grouped` (the family's own containers with grouped leaves, activations kept
as [B, N*C, H, W], NCHW or channels_last). Neither is a second model definition to keep in sync.
On a 2-core CPU the grouped forward trained 0.93x (4 members) to 1.15x (16 members) as fast as
vmap, channels_last slower than both (README, "Performance"); which is faster on a GPU is for
`benchmarks/train_throughput.py` to say (`benchmarks/gpu_session.sh`), so vmap stays the
default until then.

Every member keeps its own: init (`init_weights(net, cfg.seed)`), data order and augmentation
(the same `zoo.train.augment.draw_epoch` draws as the resident path), lr schedule, weight decay, label
smoothing, and AdamW state. AdamW is applied to the stacked buffer with per-member lr and weight
decay tensors and matches torch.optim.AdamW's defaults step for step. There is no GradScaler and
no gradient clipping: nothing couples members. A member whose loss or gradient turns non-finite
is masked (its step is not taken, its lr is 0 from then on) while the pack goes on; the rest of
the divergence contract is `zoo.train`'s.

A pack shares one epoch count (the step schedule is per pack); `train_packs` groups by epochs.
`compile=True` runs the loss and its gradient through torch.compile; packs share the compiled
code (one network per family and device, `shared_net`), and each (family, forward, pack size)
compiles once (static shapes; `split_packs` keeps the sizes few, and dynamo's recompile limit is
raised to cover them). If compiling fails with a Python exception the pack falls back
to eager and says so. A CUDA fault inside compiled code
(inductor's "misaligned address" in the GroupNorm backward at 256 members x batch 256, seen on
an H200) poisons the CUDA context and cannot be caught: rerun with compile=False.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from .augment import augment, draw_epoch
from ..data import Cifar10
from .evaluate import mean_std, normalize, smoothed_ce
from .vmap import packed_forward, stack_params, unstack_params
from .grouped import check_impl, grouped_forward, grouped_net
from ..layout import flatten
from ..members import MemberConfig
from ..families import build
from ..recipe import Recipe
from ..records import MemberResult
from .common import Resident, device_label, measure, nan_metrics, resident

ADAM_BETAS = (0.9, 0.999)  # torch.optim.AdamW defaults, as on the resident path
ADAM_EPS = 1e-8


@torch.no_grad()
def adamw_(p, g, m, v, *, lr: torch.Tensor, wd: torch.Tensor, step: int) -> None:
    """torch.optim.AdamW's update on stacked members: p, g, m, v [N, F]; lr, wd [N]; step >= 1."""
    (b1, b2), lr, wd = ADAM_BETAS, lr[:, None], wd[:, None]
    p.mul_(1 - lr * wd)
    m.lerp_(g, 1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    denom = (v.sqrt() / (1 - b2**step) ** 0.5).add_(ADAM_EPS)
    p.sub_(lr / (1 - b1**step) * (m / denom))


_NETS: dict = {}  # (family, asym_seed, device, grouped slots or None) -> the network packs run through


def shared_net(family: str, asym_seed: int, device: torch.device, grouped_slots: int | None = None) -> torch.nn.Module:
    """One network per family and device in a process (and per pack size for the grouped
    forward, `zoo.train.grouped.grouped_net`). Its trainable tensors are never used (the members' come
    in through functional_call); sharing it lets every pack reuse the compiled code, whose guards
    check the module's identity."""
    key = (family, asym_seed, str(device), grouped_slots)
    if key not in _NETS:
        _NETS[key] = (grouped_net(shared_net(family, asym_seed, device), grouped_slots) if grouped_slots
                      else build(family, asym_seed).to(device))
    return _NETS[key]


class Pack:
    """N members of one family in lockstep: a [N, F] parameter buffer and per-member AdamW state.

    `slots` >= len(cfgs) pads the pack with copies of the first member that are masked from the
    start (compiled code is specialised to N, so uniform pack sizes save recompilations); every
    per-slot tensor has N = slots rows, results cover the real members only.
    `impl` picks the training forward (`zoo.train.grouped.IMPLS`): "vmap" (`zoo.train.vmap`), or
    "grouped" / "grouped_cl" (`zoo.train.grouped`, NCHW / channels_last activations); they compute the
    same function. Evaluation always uses vmap.
    """

    def __init__(self, cfgs: list[MemberConfig], recipe: Recipe, res: Resident, *, asym_seed: int = 0,
                 compile: bool = False, slots: int | None = None, impl: str = "vmap"):
        slots = len(cfgs) if slots is None else slots
        if not isinstance(slots, int) or slots < len(cfgs):
            raise ValueError(f"slots={slots!r}: must be an int >= the {len(cfgs)} members")
        self.cfgs, self.recipe, self.res = cfgs, recipe, res
        self.slot_cfgs = cfgs + [cfgs[0]] * (slots - len(cfgs))
        self.device = res.train_x.device
        init_net = build(cfgs[0].family, asym_seed)
        self.params_init = torch.stack([flatten(recipe.init_weights(init_net, c)) for c in self.slot_cfgs])  # [N, P]
        self.net = shared_net(cfgs[0].family, asym_seed, self.device)
        self.impl = check_impl(impl)
        self.train_net = self.net if impl == "vmap" else shared_net(cfgs[0].family, asym_seed, self.device, slots)
        full = stack_params(self.net, self.params_init.to(self.device))
        self.shapes = {name: t.shape[1:] for name, t in full.items()}
        self.buf = torch.cat([t.reshape(slots, -1) for t in full.values()], 1)  # [N, F]
        self.m, self.v = torch.zeros_like(self.buf), torch.zeros_like(self.buf)
        self.lr, self.wd, self.smoothing = (torch.tensor([getattr(c, k) for c in self.slot_cfgs], device=self.device)
                                            for k in ("lr", "weight_decay", "label_smoothing"))
        self.active = torch.arange(slots, device=self.device) < len(cfgs)
        self.diverged_at = torch.full((slots,), -1, device=self.device)
        self.steps_done = 0
        self.autocast = recipe.autocast_dtype(self.device)
        self.compiled = None
        if compile:
            mean_std(self.device)  # filled outside the trace, so it is no guard
            _raise_recompile_limit()
            self.compiled = torch.compile(self.losses, dynamic=False)  # vmap fixes N anyway

    def views(self, buf: torch.Tensor) -> dict[str, torch.Tensor]:
        """[N, F] buffer -> {name: [N, *shape]} views in canonical order."""
        out, offset = {}, 0
        for name, shape in self.shapes.items():
            size = shape.numel()
            out[name] = buf[:, offset : offset + size].view(len(buf), *shape)
            offset += size
        return out

    def flat(self) -> torch.Tensor:
        """[N, P] trainable vectors (zoo.flatten order) on the training device."""
        return unstack_params(self.net, self.views(self.buf))

    def losses(self, buf: torch.Tensor, x: torch.Tensor, y: torch.Tensor, smoothing: torch.Tensor) -> torch.Tensor:
        """buf [N, F], x [N, B, 3, 32, 32] uint8 augmented, y [N, B], smoothing [N] -> mean training loss [N]."""
        dtype = self.autocast or torch.float32
        with torch.autocast(self.device.type, dtype=dtype, enabled=self.autocast is not None):
            if self.impl == "vmap":
                logits = packed_forward(self.train_net, self.views(buf), normalize(x))
            else:
                logits = grouped_forward(self.train_net, self.views(buf), normalize(x),
                                         channels_last=self.impl == "grouped_cl")
        return smoothed_ce(logits, y, smoothing).mean(1)

    def loss_and_grad(self, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        """(losses [N], d sum(losses) / d buf [N, F]); each member's gradient is its own loss's."""
        if self.compiled is not None:
            try:
                return self._grad(self.compiled, x, y)
            except torch.cuda.OutOfMemoryError:
                raise  # eager would not fit either
            except Exception as e:  # an inductor/dynamo failure: the eager path computes the same
                warnings.warn(f"torch.compile failed ({type(e).__name__}: {e}); this pack trains eagerly")
                self.compiled = None
        return self._grad(self.losses, x, y)

    def _grad(self, losses_fn, x, y):
        buf = self.buf.detach().requires_grad_(True)
        losses = losses_fn(buf, x, y, self.smoothing)
        (grad,) = torch.autograd.grad(losses.sum(), buf)
        return losses.detach(), grad

    def step(self, x: torch.Tensor, y: torch.Tensor, lr_factor: float, epoch: int) -> None:
        """One AdamW step of every active member; members turning non-finite are masked out."""
        losses, grad = self.loss_and_grad(x, y)
        ok = torch.isfinite(losses) & torch.isfinite(grad).all(1)
        self.diverged_at = torch.where(self.active & ~ok, epoch, self.diverged_at)
        self.active &= ok
        self.steps_done += 1
        grad = torch.where(self.active[:, None], grad, 0.0)  # a masked member's NaNs must not reach its m, v
        adamw_(self.buf, grad, self.m, self.v, lr=self.lr * lr_factor * self.active, wd=self.wd,
               step=self.steps_done)

    def train_epoch(self, epoch: int, lr_factors: np.ndarray) -> None:
        """One epoch: `lr_factors` [steps] multiply each member's lr (the recipe's triangle)."""
        n, b = len(self.slot_cfgs), self.recipe.batch_size
        draws = [draw_epoch(c.seed, epoch, len(self.res.train_y), self.recipe) for c in self.slot_cfgs]
        order, flip, shift, corner = (torch.stack(t).to(self.device, non_blocking=True) for t in zip(
            *((d.order, d.flip, d.shift, d.corner) for d in draws)))  # [N, steps, B, ...]
        for s, factor in enumerate(lr_factors):
            idx = order[:, s]  # [N, B]
            x = self.res.train_x[idx].flatten(0, 1)  # [N*B, 3, 32, 32]
            x = augment(x, flip[:, s].flatten(), shift[:, s].flatten(0, 1), corner[:, s].flatten(0, 1), self.recipe)
            self.step(x.view(n, b, *x.shape[1:]), self.res.train_y[idx], float(factor), epoch)

    def measure(self) -> list[dict[str, float]]:
        """Metrics of the real members (not the padding slots)."""
        n = len(self.cfgs)
        return measure(self.net, self.flat()[:n], self.res, self.smoothing[:n], self.autocast is not None)


def _pack_epochs(cfgs: list[MemberConfig], recipe: Recipe) -> int:
    if not cfgs:
        raise ValueError("cfgs: a pack needs at least one member")
    families = sorted({c.family for c in cfgs})
    epochs = sorted({recipe.member_epochs(c) for c in cfgs})
    if len(families) > 1 or len(epochs) > 1:
        raise ValueError(f"cfgs: a pack needs one family and one epoch count, got families {families}, "
                         f"epochs {epochs}; use train_packs to group them")
    return epochs[0]


def train_pack(cfgs: list[MemberConfig], data: Cifar10, recipe: Recipe, *, asym_seed: int = 0, device="cpu",
               compile: bool = False, slots: int | None = None, impl: str = "vmap") -> list[MemberResult]:
    """Train members of one family and one epoch count together; results in the order of `cfgs`.
    `slots` pads the pack, `impl` picks the forward (see `Pack`)."""
    start = time.perf_counter()
    epochs = _pack_epochs(cfgs, recipe)
    res = resident(data, recipe, device)
    pack = Pack(cfgs, recipe, res, asym_seed=asym_seed, compile=compile, slots=slots, impl=impl)
    steps = recipe.steps_per_epoch(len(res.train_y))
    factors = recipe.lr_factors(epochs, steps).reshape(epochs, steps)
    checkpoints = {0: (pack.flat().cpu(), pack.measure())} if 0 in recipe.checkpoints else {}
    for epoch in range(epochs):
        pack.train_epoch(epoch, factors[epoch])
        if epoch + 1 in recipe.checkpoints:
            checkpoints[epoch + 1] = (pack.flat().cpu(), pack.measure())
        if not bool(pack.active.any()):
            break
    return _results(pack, checkpoints, (time.perf_counter() - start) / len(cfgs))


def _results(pack: Pack, checkpoints: dict, wall_s: float) -> list[MemberResult]:
    final, diverged_at = pack.flat().cpu(), pack.diverged_at.tolist()[: len(pack.cfgs)]
    ok = [d < 0 for d in diverged_at]
    metrics = pack.measure() if any(ok) else [nan_metrics()] * len(ok)
    results = []
    for i, cfg in enumerate(pack.cfgs):
        kept = {e: (p[i].numpy(), ms[i]) for e, (p, ms) in checkpoints.items() if ok[i] or e <= diverged_at[i]}
        results.append(MemberResult(
            config=cfg, status="ok" if ok[i] else "diverged", diverged_epoch=None if ok[i] else diverged_at[i],
            metrics=metrics[i] if ok[i] else nan_metrics(), params_init=pack.params_init[i].numpy(),
            params_final=final[i].numpy(), wall_time_s=wall_s, device=device_label(pack.device),
            data_sha=pack.res.data_sha, checkpoints=kept,
        ))
    return results


RECOMPILES = 64  # compiled versions of Pack.losses one process keeps: families x forwards x pack sizes


def _raise_recompile_limit() -> None:
    """Every (family, forward, pack size) is one compiled version of `Pack.losses`, and one worker
    trains them all; past dynamo's default limit (8) further ones would silently run eagerly."""
    import torch._dynamo.config as dynamo

    name = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"  # torch < 2.7
    setattr(dynamo, name, max(getattr(dynamo, name), RECOMPILES))


def split_packs(group: list[int], pack_size: int, compile: bool) -> list[tuple[list[int], int | None]]:
    """One epoch group -> [(member positions, slots)]. Eager: balanced packs of at most `pack_size`.
    Compiled: full packs of `pack_size` and a remainder padded to a power of two, so at most
    log2(pack_size) + 1 sizes compile per family and forward (each once; see RECOMPILES)."""
    if not compile:
        return [(list(p), None) for p in np.array_split(group, -(-len(group) // pack_size))]
    parts = [group[i : i + pack_size] for i in range(0, len(group), pack_size)]
    return [(p, min(pack_size, 1 << (len(p) - 1).bit_length())) for p in parts]


def train_packs(cfgs: list[MemberConfig], data: Cifar10, recipe: Recipe, *, asym_seed: int = 0, device="cpu",
                pack_size: int = 64, compile: bool = False, impl: str = "vmap") -> list[MemberResult]:
    """Group members by epoch count into packs of at most `pack_size` (`split_packs`); results in
    input order."""
    by_epochs: dict[int, list[int]] = {}
    for i, c in enumerate(cfgs):
        by_epochs.setdefault(recipe.member_epochs(c), []).append(i)
    results: list[MemberResult | None] = [None] * len(cfgs)
    for epochs in sorted(by_epochs):
        for part, slots in split_packs(by_epochs[epochs], pack_size, compile):
            for i, r in zip(part, train_pack([cfgs[i] for i in part], data, recipe, asym_seed=asym_seed,
                                             device=device, compile=compile, slots=slots, impl=impl)):
                results[i] = r
    return results
