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
augmentations.
"""
from __future__ import annotations

from dataclasses import dataclass

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


def draw_epoch(seed: int, epoch: int, n: int, recipe: Recipe) -> EpochDraw:
    """The member's data order and augmentation draws for `epoch` over `n` training images."""
    steps, b = recipe.steps_per_epoch(n), recipe.batch_size
    order = epoch_order(seed, epoch, n)[: steps * b].reshape(steps, b)
    rng = np.random.default_rng([seed, epoch, AUGMENT_STREAM])
    flip = rng.random((steps, b)) < 0.5
    shift = rng.integers(0, 2 * recipe.translate + 1, size=(steps, b, 2))
    corner = rng.integers(0, IMAGE_SIDE - recipe.cutout + 1, size=(steps, b, 2))
    return EpochDraw(*(torch.from_numpy(a) for a in (order, flip, shift, corner)))


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
