"""Loss and accuracy of many members of one family on un-augmented data, in packed batches.

Used for the recorded train/test metrics and for MLI's (member, alpha) points: both evaluate a
[N, P] matrix of flat trainable vectors on the same images, with per-row label smoothing.
"""
from __future__ import annotations

import torch
from torch import nn

from .vmap import packed_forward, stack_params

MEAN = (125.307, 122.961, 113.8575)  # CIFAR-10 channel means, 0..255 scale
STD = (51.5865, 50.847, 51.255)  # CIFAR-10 channel stds, 0..255 scale


_MEAN_STD: dict = {}  # device -> (mean, std) [3, 1, 1]: made once, as a host->device copy syncs the GPU


def mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The [3, 1, 1] mean and std on `device`. Call it before torch.compile traces `normalize`:
    a cache miss inside a trace becomes a guard, and the next call recompiles."""
    if device not in _MEAN_STD:
        _MEAN_STD[device] = (torch.tensor(MEAN, device=device).view(3, 1, 1),
                             torch.tensor(STD, device=device).view(3, 1, 1))
    return _MEAN_STD[device]


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 or float [..., 3, H, W] on the 0..255 scale -> normalised float32."""
    mean, std = mean_std(x.device)
    return (x.float() - mean) / std


def smoothed_ce(logits: torch.Tensor, y: torch.Tensor, smoothing: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy with per-row smoothing: logits [N, B, K], y [B], smoothing [N] -> [N, B].

    Equals torch's `cross_entropy(..., label_smoothing=s)` for each row.
    """
    logp = logits.float().log_softmax(-1)
    nll = -logp.gather(-1, y.expand(logits.shape[0], -1).unsqueeze(-1)).squeeze(-1)
    s = smoothing.to(logp).view(-1, 1)
    return (1 - s) * nll - s * logp.mean(-1)


@torch.no_grad()
def evaluate_flat(
    net: nn.Module,
    flat: torch.Tensor,  # [N, P] trainable vectors of `net`'s family
    x: torch.Tensor,  # [M, 3, 32, 32] uint8 images
    y: torch.Tensor,  # [M] labels
    smoothing: torch.Tensor,  # [N] label smoothing per row
    *,
    batch: int = 1000,
    autocast: bool = False,
) -> dict[str, torch.Tensor]:
    """{"loss", "loss_plain", "acc"} each [N]: means over the M images (fp32 loss math)."""
    device = flat.device
    params = stack_params(net.to(device), flat)
    n = flat.shape[0]
    total = {k: torch.zeros(n, dtype=torch.float64, device=device) for k in ("loss", "loss_plain", "acc")}
    zero = torch.zeros(n, device=device)
    for start in range(0, len(y), batch):
        xb = normalize(x[start : start + batch].to(device))
        yb = y[start : start + batch].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = packed_forward(net, params, xb.expand(n, *xb.shape))
        total["loss"] += smoothed_ce(logits, yb, smoothing.to(device)).sum(1).double()
        total["loss_plain"] += smoothed_ce(logits, yb, zero).sum(1).double()
        total["acc"] += (logits.argmax(-1) == yb).sum(1).double()
    return {k: (v / len(y)).float().cpu() for k, v in total.items()}
