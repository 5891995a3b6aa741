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
decay tensors and matches torch.optim.AdamW's defaults step for step, with a step count per
member. There is no GradScaler and no gradient clipping: nothing couples members. A step whose
loss or gradient is non-finite for a member is not taken for that member (its parameters, m, v and
step count stay bit for bit, the `take` mask of `adamw_`) while the pack goes on: under
Recipe.nonfinite "skip" the member takes its later steps, under "freeze" it is masked from then on.
The rest of the divergence contract is `zoo.train`'s.

A pack shares one epoch count (the step schedule is per pack); `train_packs` groups by epochs.
`compile=True` runs the loss and its gradient through torch.compile; packs share the compiled
code (one network per family and device, `shared_net`), and each (family, forward, pack size)
compiles once (static shapes; `split_packs` keeps the sizes few, and dynamo's recompile limit is
raised to cover them). If compiling fails with a Python exception the pack falls back
to eager and says so. A CUDA fault inside compiled code
(inductor's "misaligned address" in the GroupNorm backward at 256 members x batch 256, seen on
an H200) poisons the CUDA context and cannot be caught: rerun with compile=False.

The step never makes the host wait for the GPU (issue #16, items 2-3). The next epoch's draws are
made on a background thread into pinned, compact buffers (`zoo.train.augment.DrawPrefetcher`,
the same values as `draw_epoch`) and copied without blocking; the step reads its indices,
augmentation draws, lr factor, AdamW's t and the epoch from device tensors (`_step`), so
`cuda_graph=True` can capture it once and replay it (CUDA only; ValueError elsewhere); the
all-diverged check is read an epoch late (`LaggedFlag`). The 29 views are one `split` of the
buffer, whose backward writes one [N, F] gradient.

Memory (item 5): `estimate_peak_bytes` adds the saved activations per image, measured on the CPU
(`activation_bytes`: standard, grouped, bf16 about 0.83 MB), to the optimizer state, data and
draws; `auto_pack_size` picks the largest compiled pack size whose estimate fits in free memory.
"""
from __future__ import annotations

import os
import time
import warnings
from functools import lru_cache

import numpy as np
import torch

from .augment import DrawPrefetcher, PackDraws, augment
from ..data import Cifar10
from .evaluate import mean_std, normalize, smoothed_ce
from .vmap import packed_forward, stack_params, unstack_params
from .grouped import check_impl, grouped_forward, grouped_net
from ..layout import flatten
from ..members import MemberConfig
from ..families import build
from ..recipe import IMAGE_SIDE, Recipe
from ..records import MemberResult
from .common import Resident, device_label, measure, member_status, nan_metrics, resident

ADAM_BETAS = (0.9, 0.999)  # torch.optim.AdamW defaults, as on the resident path
ADAM_EPS = 1e-8
GRAPH_WARMUP = 2  # eager steps on a side stream before a capture (cuBLAS / cuDNN handles, lazy caches)


@torch.no_grad()
def adamw_(p, g, m, v, *, lr: torch.Tensor, wd: torch.Tensor, step: torch.Tensor | int,
           take: torch.Tensor | None = None) -> None:
    """torch.optim.AdamW's update on stacked members: p, g, m, v [N, F]; lr, wd [N]; step >= 1, an
    int or a float64 tensor on p's device, 0-dim or [N] (one count per member). With a tensor step
    nothing here is a host number, so a CUDA graph replays it with the current values. The bias
    corrections are computed in float64 and rounded once, as the Python-number version did.
    `take` [N] bool (None: all): a member outside it keeps p, m and v bit for bit (GradScaler's
    skipped step); its g must be finite (zeroed) and its step may be 0."""
    (b1, b2), wd = ADAM_BETAS, wd[:, None]
    on = None if take is None else take[:, None]
    lr = lr[:, None] if on is None else lr[:, None] * on
    step = torch.as_tensor(step, dtype=torch.float64, device=p.device).clamp(min=1)  # 1: a skipped first step
    step = step[:, None] if step.dim() else step
    correction1 = (1 - b1**step).float()
    correction2_sqrt = (1 - b2**step).sqrt().float()
    p.mul_(1 - lr * wd)
    m.lerp_(g, 1 - b1 if on is None else (1 - b1) * on)  # weight 0 leaves m as it is, exactly
    v.mul_(b2 if on is None else torch.where(on, b2, 1.0)).addcmul_(g, g, value=1 - b2)
    denom = (v.sqrt() / correction2_sqrt).add_(ADAM_EPS)
    p.sub_(lr / correction1 * (m / denom))


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
    `cuda_graph` records the whole step (gather, augmentation, forward, backward, AdamW,
    divergence masking) once as a CUDA graph and replays it; every per-step value (step index,
    lr factor, AdamW's t, the epoch) is a device tensor the graph reads, so replay == eager.
    """

    def __init__(self, cfgs: list[MemberConfig], recipe: Recipe, res: Resident, *, asym_seed: int = 0,
                 compile: bool = False, slots: int | None = None, impl: str = "vmap", cuda_graph: bool = False):
        slots = len(cfgs) if slots is None else slots
        if not isinstance(slots, int) or slots < len(cfgs):
            raise ValueError(f"slots={slots!r}: must be an int >= the {len(cfgs)} members")
        self.cfgs, self.recipe, self.res = cfgs, recipe, res
        self.slot_cfgs = cfgs + [cfgs[0]] * (slots - len(cfgs))
        self.device = res.train_x.device
        if cuda_graph and self.device.type != "cuda":
            raise ValueError(f"cuda_graph=True: CUDA graphs need a cuda device; this pack trains on {self.device}")
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
        self.active = torch.arange(slots, device=self.device) < len(cfgs)  # "freeze" clears a member's
        self.diverged_at = torch.full((slots,), -1, device=self.device)  # epoch of the first non-finite step
        self.autocast = recipe.autocast_dtype(self.device)
        self._init_step_state(slots)
        self.cuda_graph, self.graph = cuda_graph, None
        self.compiled = None
        if compile:
            mean_std(self.device)  # filled outside the trace, so it is no guard
            _raise_recompile_limit()
            self.compiled = torch.compile(self.losses, dynamic=False)  # vmap fixes N anyway

    def _init_step_state(self, slots: int) -> None:
        """The device tensors a step reads instead of host numbers, and the epoch's draws."""
        steps, kw = self.recipe.steps_per_epoch(len(self.res.train_y)), {"device": self.device}
        self.draws = PackDraws.empty(slots, steps, self.recipe.batch_size, host=False, **kw)  # this epoch's
        self.prefetcher = DrawPrefetcher([c.seed for c in self.slot_cfgs], len(self.res.train_y), self.recipe,
                                         self.device)
        self.factors = torch.zeros(steps, **kw)  # this epoch's lr factors
        self.s = torch.zeros(1, dtype=torch.int64, **kw)  # step within the epoch
        self.t = torch.zeros(slots, dtype=torch.float64, **kw)  # AdamW's step count per member (steps taken)
        self.epoch = torch.zeros((), dtype=torch.int64, **kw)

    def views(self, buf: torch.Tensor) -> dict[str, torch.Tensor]:
        """[N, F] buffer -> {name: [N, *shape]} views in canonical order. One split: its backward
        concatenates the 29 gradients into one [N, F] tensor (slicing would zero-fill an [N, F]
        buffer per tensor and add them)."""
        parts = buf.split([shape.numel() for shape in self.shapes.values()], dim=1)
        return {name: p.view(len(buf), *shape) for (name, shape), p in zip(self.shapes.items(), parts)}

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
                                         channels_last=self.impl == "grouped_cl", fused=self.impl == "grouped_fused")
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

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Step `self.s` of the loaded epoch: (augmented x [N, B, 3, 32, 32] uint8, y [N, B])."""
        n, b = len(self.slot_cfgs), self.recipe.batch_size
        pick = lambda t: t.index_select(1, self.s).squeeze(1)  # [N, steps, B, ...] -> [N, B, ...]
        idx = pick(self.draws.order)
        x = self.res.train_x[idx].flatten(0, 1)  # [N*B, 3, 32, 32]
        x = augment(x, pick(self.draws.flip).flatten(), pick(self.draws.shift).flatten(0, 1),
                    pick(self.draws.corner).flatten(0, 1), self.recipe)
        return x.view(n, b, *x.shape[1:]), self.res.train_y[idx]

    def _step(self) -> None:
        """One AdamW step at step `self.s` of every active member whose loss and gradient are
        finite; the others' state is left as it was ("freeze" also deactivates them). Device work
        only (no host value read or baked in): a CUDA graph can hold it."""
        losses, grad = self.loss_and_grad(*self._batch())
        ok = torch.isfinite(losses) & torch.isfinite(grad).all(1)
        first = self.active & ~ok & (self.diverged_at < 0)
        self.diverged_at.copy_(torch.where(first, self.epoch, self.diverged_at))
        if self.recipe.nonfinite == "freeze":
            self.active &= ok
        take = self.active & ok
        self.t += take
        grad = torch.where(take[:, None], grad, 0.0)  # a skipped member's NaNs must not reach its m, v
        factor = self.factors.index_select(0, self.s)  # [1]
        adamw_(self.buf, grad, self.m, self.v, lr=self.lr * factor, wd=self.wd, step=self.t, take=take)
        self.s += 1

    def _load_epoch(self, epoch: int, lr_factors: np.ndarray) -> None:
        """Queue the epoch's draws and lr factors into the step's device tensors (no host wait)."""
        self.prefetcher.copy_into(self.draws, epoch)
        factors = torch.from_numpy(np.asarray(lr_factors, dtype=np.float32))
        self.factors.copy_(factors.pin_memory() if self.device.type == "cuda" else factors, non_blocking=True)
        self.epoch.fill_(epoch)
        self.s.zero_()

    def train_epoch(self, epoch: int, lr_factors: np.ndarray, *, next_epoch: int | None = None) -> None:
        """One epoch: `lr_factors` [steps] multiply each member's lr (the recipe's triangle).
        `next_epoch`: the epoch to draw on the background thread while this one trains."""
        if len(lr_factors) != len(self.factors):
            raise ValueError(f"lr_factors: {len(lr_factors)} given, the epoch has {len(self.factors)} steps")
        self._load_epoch(epoch, lr_factors)
        if next_epoch is not None:
            self.prefetcher.prefetch(next_epoch)
        if self.cuda_graph and self.graph is None:
            self._capture()
        for _ in range(len(self.factors)):
            if self.graph is not None:
                self.graph.replay()
            else:
                self._step()

    def _state(self) -> list[torch.Tensor]:
        return [self.buf, self.m, self.v, self.active, self.diverged_at, self.t, self.s]

    def _capture(self) -> None:
        """Record `_step` as a CUDA graph. The warm-up steps a capture needs first are real steps,
        so the state they change is saved before and put back after (`_state`)."""
        saved = [t.clone() for t in self._state()]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP):
                self._step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        for t, s in zip(self._state(), saved):
            t.copy_(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._step()

    def measure(self) -> list[dict[str, float]]:
        """Metrics of the real members (not the padding slots)."""
        n = len(self.cfgs)
        return measure(self.net, self.flat()[:n], self.res, self.smoothing[:n], self.autocast is not None)


class LaggedFlag:
    """A device bool read one epoch late: the copy to the host is queued at once and read when the
    next flag arrives, by which time the GPU is long past it, so the host never drains the queue."""

    def __init__(self):
        self.pending: tuple[torch.Tensor, object] | None = None  # (host copy, CUDA event or None)

    def push(self, flag: torch.Tensor) -> bool:
        """Queue `flag` (0-dim bool); return the previous flag's value (True before any)."""
        previous, self.pending = self.pending, self._queue(flag)
        if previous is None:
            return True
        host, event = previous
        if event is not None:
            event.synchronize()
        return bool(host)

    @staticmethod
    def _queue(flag: torch.Tensor):
        if flag.device.type != "cuda":
            return flag.clone(), None
        host = torch.empty((), dtype=flag.dtype, pin_memory=True)
        host.copy_(flag, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return host, event


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
               compile: bool = False, slots: int | None = None, impl: str = "vmap",
               cuda_graph: bool = False) -> list[MemberResult]:
    """Train members of one family and one epoch count together; results in the order of `cfgs`.
    `slots` pads the pack, `impl` picks the forward, `cuda_graph` replays the step (see `Pack`).
    Under "freeze" a pack whose members have all diverged stops one epoch late (`LaggedFlag`);
    masked members do not change, so the results are those of stopping at once. Under "skip" every
    member trains every epoch."""
    start = time.perf_counter()
    epochs = _pack_epochs(cfgs, recipe)
    res = resident(data, recipe, device)
    pack = Pack(cfgs, recipe, res, asym_seed=asym_seed, compile=compile, slots=slots, impl=impl,
                cuda_graph=cuda_graph)
    steps = recipe.steps_per_epoch(len(res.train_y))
    factors = recipe.lr_factors(epochs, steps).reshape(epochs, steps)
    checkpoints = {0: (pack.flat().cpu(), pack.measure())} if 0 in recipe.checkpoints else {}
    any_active = LaggedFlag()
    for epoch in range(epochs):
        pack.train_epoch(epoch, factors[epoch], next_epoch=epoch + 1 if epoch + 1 < epochs else None)
        if epoch + 1 in recipe.checkpoints:
            checkpoints[epoch + 1] = (pack.flat().cpu(), pack.measure())
        if not any_active.push(pack.active.any()):
            break
    return _results(pack, checkpoints, (time.perf_counter() - start) / len(cfgs))


def _results(pack: Pack, checkpoints: dict, wall_s: float) -> list[MemberResult]:
    final, n = pack.flat().cpu(), len(pack.cfgs)
    diverged = [None if d < 0 else d for d in pack.diverged_at.tolist()[:n]]
    finite = torch.isfinite(final[:n]).all(1).tolist()
    status = [member_status(pack.recipe, d, f) for d, f in zip(diverged, finite)]
    metrics = pack.measure() if "ok" in status else [nan_metrics()] * n
    frozen = pack.recipe.nonfinite == "freeze"  # a frozen member records no checkpoint after its divergence
    results = []
    for i, cfg in enumerate(pack.cfgs):
        kept = {e: (p[i].numpy(), ms[i]) for e, (p, ms) in checkpoints.items()
                if not frozen or diverged[i] is None or e <= diverged[i]}
        results.append(MemberResult(
            config=cfg, status=status[i], diverged_epoch=diverged[i],
            metrics=metrics[i] if status[i] == "ok" else nan_metrics(), params_init=pack.params_init[i].numpy(),
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
                pack_size: int = 64, compile: bool = False, impl: str = "vmap",
                cuda_graph: bool = False) -> list[MemberResult]:
    """Group members by epoch count into packs of at most `pack_size` (`split_packs`); results in
    input order."""
    by_epochs: dict[int, list[int]] = {}
    for i, c in enumerate(cfgs):
        by_epochs.setdefault(recipe.member_epochs(c), []).append(i)
    results: list[MemberResult | None] = [None] * len(cfgs)
    for epochs in sorted(by_epochs):
        for part, slots in split_packs(by_epochs[epochs], pack_size, compile):
            for i, r in zip(part, train_pack([cfgs[i] for i in part], data, recipe, asym_seed=asym_seed,
                                             device=device, compile=compile, slots=slots, impl=impl,
                                             cuda_graph=cuda_graph)):
                results[i] = r
    return results


# --- memory: how many members fit ----------------------------------------------------------

PACK_SIZES = (8, 16, 32, 64, 128)  # the few sizes a GPU worker compiles (split_packs pads to powers of 2)
STATE_COPIES = 6  # [N, F] float32 tensors alive in a step: params, m, v, gradient, two AdamW temporaries
HEADROOM = 1.25  # allocator fragmentation, cuDNN workspaces: the estimate x 1.25 must fit in free memory
IMAGE_BYTES = 3 * IMAGE_SIDE * IMAGE_SIDE  # one uint8 CIFAR image
DRAW_BYTES = 5 * 8  # per member and training image: the epoch's order, flip, shift, corner as int64


def _saved_bytes(family: str, impl: str, dtype: torch.dtype | None, members: int, batch: int) -> int:
    """Bytes of the distinct storages autograd saves in one CPU training forward and loss of a
    pack of `members` x `batch` images (a storage seen twice counts once)."""
    storages: dict[int, int] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    base = build(family)
    net = base if impl == "vmap" else grouped_net(base, members)
    x = torch.zeros(members, batch, 3, IMAGE_SIDE, IMAGE_SIDE, dtype=torch.uint8)
    y = torch.zeros(members, batch, dtype=torch.int64)
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t), \
            torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        params = {n: p.detach().expand(members, *p.shape).clone().requires_grad_(True)
                  for n, p in base.named_parameters()}
        logits = (packed_forward(net, params, normalize(x)) if impl == "vmap" else
                  grouped_forward(net, params, normalize(x), channels_last=impl == "grouped_cl"))
        smoothed_ce(logits, y, torch.zeros(members)).mean()
    return sum(storages.values())


@lru_cache(maxsize=None)
def activation_bytes(family: str, impl: str = "grouped", dtype: torch.dtype | None = torch.bfloat16) -> float:
    """Bytes autograd keeps for the backward per training image and member, measured on the CPU:
    the saved storages of a 2-member pack at batch 8 minus those at batch 4, over the 8 images
    between (the difference cancels what does not grow with the batch: the parameters). `dtype` is
    the autocast dtype (None: fp32). CPU autocast casts the same convs and matmuls as CUDA's, so
    this is an estimate for the GPU, which benchmarks/gpu_session.sh checks against its measured
    peaks. Standard family, grouped forward, torch 2.13 CPU: 1.00 MB fp32, 0.83 MB bf16."""
    check_impl(impl)
    return (_saved_bytes(family, impl, dtype, 2, 8) - _saved_bytes(family, impl, dtype, 2, 4)) / 8


def estimate_peak_bytes(family: str, members: int, batch: int, *, impl: str = "grouped",
                        dtype: torch.dtype | None = torch.bfloat16, n_train: int = 50_000) -> int:
    """Estimated peak device memory of training a pack of `members` at `batch` images each on
    `n_train` resident images: saved activations, the batch in uint8 and float32, the [N, F]
    optimizer state (`STATE_COPIES`), the resident data and the epoch's draws, x HEADROOM."""
    images = members * batch
    params = sum(p.numel() for p in build(family).parameters())
    total = (images * (activation_bytes(family, impl, dtype) + IMAGE_BYTES * (2 + 4))
             + STATE_COPIES * 4 * members * params + n_train * (IMAGE_BYTES + members * DRAW_BYTES))
    return int(HEADROOM * total)


def free_memory(device) -> int:
    """Bytes a new pack can use on `device`: the driver's free memory plus what torch's allocator
    holds unused (cuda), or the host's available memory (cpu)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def auto_pack_size(device, family: str, batch: int, sizes: tuple[int, ...] = PACK_SIZES, *,
                   impl: str = "grouped", dtype: torch.dtype | None = torch.bfloat16, n_train: int = 50_000,
                   free_bytes: int | None = None) -> int:
    """The largest of `sizes` whose `estimate_peak_bytes` fits in `free_bytes` (default: the
    device's `free_memory` now). ValueError when not even the smallest fits."""
    if not sizes or any(not isinstance(n, int) or n < 1 for n in sizes):
        raise ValueError(f"sizes={sizes!r}: must be ints >= 1")
    free = free_memory(device) if free_bytes is None else free_bytes
    fits = [n for n in sizes if estimate_peak_bytes(family, n, batch, impl=impl, dtype=dtype, n_train=n_train) <= free]
    if not fits:
        need = estimate_peak_bytes(family, min(sizes), batch, impl=impl, dtype=dtype, n_train=n_train)
        raise ValueError(f"pack_size='auto': {min(sizes)} {family} members at batch {batch} need about "
                         f"{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free on {device}")
    return max(fits)
