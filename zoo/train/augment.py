"""Train-time augmentation as batched tensor ops on uint8 images, with addressed randomness.

The ops and their order are FFCV's, as the companion code (github.com/cptq/asymmetric-networks)
runs them: random horizontal flip with probability 1/2, then
random translate (pad by `translate` px filled with the mean, crop back at an offset uniform in
0..2*translate per axis), then Cutout (a `cutout` x `cutout` square filled with the mean, its
corner uniform over the positions that keep it inside the image). They act on the uint8 0..255
images before normalisation, as FFCV's do, so the fill is the mean truncated to uint8.

Every random choice of a member's epoch is a pure function of (member seed, epoch): the data
order comes from one numpy stream and the augmentation draws from another. The resident and the
packed paths draw the same `EpochDraw` for a member, which is what makes packed == separate
testable; the FFCV path reuses the order stream (`epoch_order`) but FFCV draws its own
augmentations. The packed path draws a whole pack's epoch into one `PackDraws` (compact dtypes,
pinned host memory on CUDA), and `DrawPrefetcher` does that for the next epoch on a background
thread while the current one trains, so the GPU never waits for numpy.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields

import numpy as np
import torch

from .evaluate import MEAN
from ..recipe import IMAGE_SIDE, Recipe

FILL = tuple(int(m) for m in MEAN)  # (125, 122, 113): the mean on the uint8 scale, as FFCV's CIFAR example
ORDER_STREAM, AUGMENT_STREAM = 0, 1  # sub-streams of a (seed, epoch) generator


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """[n] permutation of the training images for this member and epoch."""
    return np.random.default_rng([seed, epoch, ORDER_STREAM]).permutation(n)


@dataclass(frozen=True)
class EpochDraw:
    """One member's random choices for one epoch, batch by batch (drop_last applied)."""

    order: torch.Tensor  # [steps, batch] int64 indices into the training images
    flip: torch.Tensor  # [steps, batch] bool
    shift: torch.Tensor  # [steps, batch, 2] int64 crop offset (y, x) into the padded image, 0..2*translate
    corner: torch.Tensor  # [steps, batch, 2] int64 Cutout top-left (y, x), 0..32-cutout

    def to(self, device) -> "EpochDraw":
        return EpochDraw(*(t.to(device, non_blocking=True) for t in (self.order, self.flip, self.shift, self.corner)))


def _draw_arrays(seed: int, epoch: int, n: int, recipe: Recipe) -> tuple[np.ndarray, ...]:
    """(order, flip, shift, corner) as numpy arrays, shaped as `EpochDraw`'s fields."""
    steps, b = recipe.steps_per_epoch(n), recipe.batch_size
    order = epoch_order(seed, epoch, n)[: steps * b].reshape(steps, b)
    rng = np.random.default_rng([seed, epoch, AUGMENT_STREAM])
    flip = rng.random((steps, b)) < 0.5
    shift = rng.integers(0, 2 * recipe.translate + 1, size=(steps, b, 2))
    corner = rng.integers(0, IMAGE_SIDE - recipe.cutout + 1, size=(steps, b, 2))
    return order, flip, shift, corner


def draw_epoch(seed: int, epoch: int, n: int, recipe: Recipe) -> EpochDraw:
    """The member's data order and augmentation draws for `epoch` over `n` training images."""
    return EpochDraw(*(torch.from_numpy(a) for a in _draw_arrays(seed, epoch, n, recipe)))


@dataclass(frozen=True)
class PackDraws:
    """N members' `EpochDraw`s of one epoch, stacked. On the host the dtypes are compact (the
    values fit: indices < 2**31, offsets <= 32), a ninth of int64's bytes to copy; on the training
    device they are int64 / bool, as `augment` and indexing take them."""

    order: torch.Tensor  # [N, steps, batch] indices into the training images
    flip: torch.Tensor  # [N, steps, batch] bool
    shift: torch.Tensor  # [N, steps, batch, 2] crop offsets
    corner: torch.Tensor  # [N, steps, batch, 2] Cutout corners

    @classmethod
    def empty(cls, n: int, steps: int, batch: int, *, device="cpu", host: bool = True,
              pin: bool = False) -> "PackDraws":
        """Uninitialised buffers: compact dtypes when `host`, else the dtypes the device step reads."""
        dtypes = (torch.int32, torch.bool, torch.uint8, torch.uint8) if host else (
            torch.int64, torch.bool, torch.int64, torch.int64)
        shapes = ((n, steps, batch),) * 2 + ((n, steps, batch, 2),) * 2
        return cls(*(torch.empty(s, dtype=d, device=device, pin_memory=pin) for s, d in zip(shapes, dtypes)))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def fill(self, seeds: list[int], epoch: int, n_train: int, recipe: Recipe) -> "PackDraws":
        """Write member i's `draw_epoch(seeds[i], epoch, n_train, recipe)` into row i (host buffers)."""
        for i, seed in enumerate(seeds):
            for dst, src in zip(self.tensors(), _draw_arrays(seed, epoch, n_train, recipe)):
                np.copyto(dst[i].numpy(), src, casting="unsafe")  # values checked to fit (class docstring)
        return self

    def copy_(self, src: "PackDraws") -> None:
        """Copy `src` (host, compact) into these (device) buffers without blocking the host: a DMA
        in the compact dtype, then the widening on the device."""
        for dst, s in zip(self.tensors(), src.tensors()):
            dst.copy_(s.to(dst.device, non_blocking=True))


_WORKER: list[ThreadPoolExecutor] = []  # one background thread per process draws the next epochs
_WORKER_LOCK = threading.Lock()


def _worker() -> ThreadPoolExecutor:
    with _WORKER_LOCK:
        if not _WORKER:
            _WORKER.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="symzoo-draws"))
        return _WORKER[0]


class DrawPrefetcher:
    """A pack's epoch draws, made on a background thread one epoch ahead.

    Two host buffers alternate (pinned on CUDA, so the copy to the device is a non-blocking DMA).
    A buffer is refilled only once the device copy out of it has finished (a CUDA event the worker
    waits on, an epoch old by then), and at most one draw is in flight. The draws are those of
    `draw_epoch`, bit for bit: the worker only changes when they are made."""

    def __init__(self, seeds: list[int], n_train: int, recipe: Recipe, device: torch.device):
        if n_train >= 2**31 or 2 * recipe.translate > 255:
            raise ValueError(f"n_train={n_train}, translate={recipe.translate}: too large for PackDraws' dtypes")
        self.seeds, self.n_train, self.recipe, self.device = seeds, n_train, recipe, device
        pin = device.type == "cuda"
        steps = recipe.steps_per_epoch(n_train)
        self.host = [PackDraws.empty(len(seeds), steps, recipe.batch_size, pin=pin) for _ in range(2)]
        self.copied: list = [None, None]  # per host buffer: CUDA event after the last copy out of it
        self.next_buffer = 0
        self.pending: tuple[int, int, Future] | None = None  # (epoch, buffer, future)

    def prefetch(self, epoch: int) -> None:
        """Start drawing `epoch` in the background (no-op when a draw is already in flight)."""
        if self.pending is None:
            k, self.next_buffer = self.next_buffer, 1 - self.next_buffer
            self.pending = (epoch, k, _worker().submit(self._fill, k, epoch))

    def _fill(self, k: int, epoch: int) -> PackDraws:
        if self.copied[k] is not None:
            self.copied[k].synchronize()
        return self.host[k].fill(self.seeds, epoch, self.n_train, self.recipe)

    def copy_into(self, dst: PackDraws, epoch: int) -> None:
        """Write `epoch`'s draws into the device buffers `dst`, queued behind the work already queued."""
        if self.pending is not None and self.pending[0] != epoch:
            self.pending[2].result()  # a draw nobody asks for: let it finish, its buffer is free again
            self.pending = None
        self.prefetch(epoch)
        _, k, future = self.pending
        self.pending = None
        dst.copy_(future.result())
        if self.device.type == "cuda":
            self.copied[k] = torch.cuda.Event()
            self.copied[k].record()


def augment(x: torch.Tensor, flip: torch.Tensor, shift: torch.Tensor, corner: torch.Tensor,
            recipe: Recipe) -> torch.Tensor:
    """x [B, 3, H, W] uint8, draws [B] / [B, 2] -> augmented [B, 3, H, W] uint8 (a new tensor)."""
    if recipe.flip:
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    if recipe.translate:
        x = translate(x, shift, recipe.translate)
    if recipe.cutout:
        x = cutout(x, corner, recipe.cutout)
    return x


_FILLS: dict = {}  # (device, dtype) -> FILL [1, 3, 1, 1]: made once, as a host->device copy syncs the GPU


def _fill(x: torch.Tensor) -> torch.Tensor:
    key = (x.device, x.dtype)
    if key not in _FILLS:
        _FILLS[key] = torch.tensor(FILL, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return _FILLS[key]


def translate(x: torch.Tensor, shift: torch.Tensor, pad: int) -> torch.Tensor:
    """Shift each image by (shift - pad) px, filling the uncovered border with the mean."""
    b, c, h, w = x.shape
    padded = _fill(x).expand(b, c, h + 2 * pad, w + 2 * pad).clone()
    padded[:, :, pad : pad + h, pad : pad + w] = x
    rows = shift[:, 0:1] + torch.arange(h, device=x.device)  # [B, H]
    cols = shift[:, 1:2] + torch.arange(w, device=x.device)  # [B, W]
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    # advanced indices around a slice put the broadcast dims first: [B, H, W, C]. Back to a
    # contiguous NCHW: vmap cannot query other memory formats (GroupNorm asks)
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def cutout(x: torch.Tensor, corner: torch.Tensor, size: int) -> torch.Tensor:
    """Fill a size x size square at each image's `corner` with the mean."""
    h, w = x.shape[-2:]
    r, c = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (r >= corner[:, 0:1]) & (r < corner[:, 0:1] + size)  # [B, H]
    in_cols = (c >= corner[:, 1:2]) & (c < corner[:, 1:2] + size)  # [B, W]
    square = (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)  # [B, 1, H, W]
    return torch.where(square, _fill(x), x)
