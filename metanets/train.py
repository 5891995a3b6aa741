"""One metanetwork training run (paper E.3) and the learning-rate choice.

AdamW on the MSE between prediction and preprocessed target (standardized, or the accuracy as a
fraction: `metanets.data`), shuffled mini-batches, a fixed
number of epochs. After every epoch the run is scored on val and test: R^2 (scikit-learn) and
Kendall tau (scipy) in target units. The reported test numbers are those of the epoch with the
best validation R^2 (the first such epoch on ties; a NaN score never wins).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.stats import kendalltau
from sklearn.metrics import r2_score
from torch import nn

from .base import Metanet, n_params, seeded_init
from .data import ROWS, FamilyData
from .registry import METANETS, build, check_metanet

LR_GRID = (1e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2)  # paper E.3.2: the grid the learning rate is chosen from


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 50  # passes over the train split, >= 1
    batch_size: int = 128  # members per AdamW step, >= 1
    weight_decay: float = 1e-2  # AdamW decoupled weight decay, >= 0
    eval_batch: int = 256  # members per forward pass when scoring (memory only, not results), >= 1

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: must be an int >= 1")
        if not (isinstance(self.weight_decay, (int, float)) and 0 <= self.weight_decay < math.inf):
            raise ValueError(f"weight_decay={self.weight_decay!r}: must be a finite float >= 0")


def run_seed(base_seed: int, family: str, metanet: str, phase: str, index: int) -> int:
    """A run's seed, addressed by what the run is: (base seed, family, metanet, phase, index)."""
    blob = json.dumps([base_seed, family, metanet, phase, index]).encode()
    return int(hashlib.sha256(blob).hexdigest()[:15], 16)


@torch.no_grad()
def featurize_all(net: Metanet, x: np.ndarray, device: torch.device) -> torch.Tensor:
    """[n, P] preprocessed inputs -> [n, F] features on `device`, computed once for all runs."""
    if type(net).featurize is Metanet.featurize:  # identity: share the array, never copy 3 GB on CPU
        return net.featurize(torch.from_numpy(x)).to(device)
    parts = [net.featurize(torch.from_numpy(x[i : i + ROWS]).to(device)) for i in range(0, len(x), ROWS)]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    """(R^2, Kendall tau); tau is NaN when either side is constant."""
    if not np.all(np.isfinite(y_pred)):
        return math.nan, math.nan
    return float(r2_score(y_true, y_pred)), float(kendalltau(y_true, y_pred)[0])


@torch.no_grad()
def predict(net: Metanet, feats: torch.Tensor, rows: np.ndarray, eval_batch: int) -> np.ndarray:
    """Predictions [len(rows)] in preprocessed target units for the given rows of `feats`."""
    net.eval()
    idx = torch.from_numpy(rows).to(feats.device)
    out = [net.forward_features(feats[idx[i : i + eval_batch]]) for i in range(0, len(idx), eval_batch)]
    return torch.cat(out).double().cpu().numpy()


def train_epoch(net, opt, feats, y, rows: torch.Tensor, batch: int, gen: torch.Generator) -> float:
    """One shuffled pass over `rows`; returns the mean train MSE (preprocessed target units)."""
    net.train()
    order = rows[torch.randperm(len(rows), generator=gen).to(rows.device)]
    total = 0.0
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        loss = nn.functional.mse_loss(net.forward_features(feats[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    return total / len(order)


def _score_split(net, feats, data: FamilyData, rows: np.ndarray, eval_batch: int):
    pred = data.scaler.predictions(predict(net, feats, rows, eval_batch))
    return (*scores(data.y[rows], pred), pred)


def train_run(metanet: str, data: FamilyData, feats: torch.Tensor, *, lr: float, seed: int,
              settings: TrainSettings, options: dict | None = None, on_epoch=None) -> dict:
    """Train one metanetwork on `data` (features `feats` [n, F] from `featurize_all`, on the
    device the run uses; `options` over its spec's defaults) and return its record: curves,
    best-val epoch, test scores there, and the preprocessing and options it ran with.
    `on_epoch(epoch, scores)`, if given, sees each epoch's train_loss and val/test R^2 and tau as
    they come (a Tune trial reports them); it cannot change the run."""
    if not (isinstance(lr, (int, float)) and 0 < lr < math.inf):
        raise ValueError(f"lr={lr!r}: must be a finite float > 0")
    start, device = time.time(), feats.device
    gen = torch.Generator().manual_seed(seed)
    options = METANETS[check_metanet(metanet)].check_options(options or {})
    net = seeded_init(build(metanet, data.layout, **options), seed).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=settings.weight_decay)
    y = torch.from_numpy(data.scaler.targets(data.y)).to(device)
    train_rows = torch.from_numpy(data.split.train).to(device)
    curves = {k: [] for k in ("train_loss", "val_r2", "val_tau", "test_r2", "test_tau")}
    best = {"epoch": -1, "val_r2": -math.inf}
    for epoch in range(settings.epochs):
        curves["train_loss"].append(train_epoch(net, opt, feats, y, train_rows, settings.batch_size, gen))
        val_r2, val_tau, _ = _score_split(net, feats, data, data.split.val, settings.eval_batch)
        test_r2, test_tau, test_pred = _score_split(net, feats, data, data.split.test, settings.eval_batch)
        for key, value in zip(("val_r2", "val_tau", "test_r2", "test_tau"), (val_r2, val_tau, test_r2, test_tau)):
            curves[key].append(value)
        if on_epoch is not None:
            on_epoch(epoch, {key: values[-1] for key, values in curves.items()})
        if val_r2 > best["val_r2"]:  # NaN compares False: never the best
            best = {"epoch": epoch, "val_r2": val_r2, "test_r2": test_r2, "test_tau": test_tau, "pred": test_pred}
    if best["epoch"] < 0:
        best = {"epoch": -1, "val_r2": math.nan, "test_r2": math.nan, "test_tau": math.nan,
                "pred": np.full(len(data.split.test), math.nan)}
    return {
        "metanet": metanet, "family": data.family, "lr": float(lr), "seed": int(seed),
        "settings": asdict(settings), "inputs": data.scaler.inputs_rule, "targets": data.scaler.targets_rule,
        "options": options, "n_params": n_params(net), "splits": data.split.sizes(),
        "zoo_fingerprint": data.fingerprint, "best_epoch": best["epoch"], "val_r2": best["val_r2"],
        "test_r2": best["test_r2"], "test_tau": best["test_tau"], "curves": curves,
        "test_true": data.y[data.split.test].tolist(), "test_pred": best["pred"].tolist(),
        "device": str(device), "wall_s": round(time.time() - start, 3),
    }


def select_lr(records: list[dict]) -> float:
    """The learning rate of the record with the best validation R^2 (paper E.3.2); on ties the
    first record wins, and a NaN score never does."""
    if not records:
        raise ValueError("select_lr: no learning-rate runs to choose from")
    def score(record):  # records read back from JSON hold null where the score was NaN
        value = record["val_r2"]
        return value if value is not None and math.isfinite(value) else -math.inf

    best = max(records, key=score)
    return best["lr"]
