"""The FFCV data path: CIFAR-10 as .beton files, train batches from an FFCV Loader.

Files: `write_betons(data, directory)` writes the train and test splits of `data` (raw uint8
pixels, lossless) once per data identity, named by the copy's sha256 and the subset, each
written to a temporary name and renamed into place, so a crash leaves no half file and
concurrent writers of the same identity are harmless.

Loaders: building a Loader compiles its pipeline with numba (10-20 s), so one train Loader per
(file, batch size, augmentation, device) is kept per process and reused by every member.

Train pipeline, the companion code's: SimpleRGBImageDecoder -> RandomHorizontalFlip ->
RandomTranslate(padding, fill=mean) -> Cutout(side, fill=mean) -> ToTensor -> [ToDevice] ->
ToTorchImage, giving uint8 [B, 3, 32, 32]; normalisation, the model and AdamW are the resident
path's (`zoo.train.fit`). The step count is the same as there (drop_last).

Randomness: the data order IS addressed: the Loader's traversal order is replaced by
`zoo.train.augment.epoch_order(member seed, epoch)`, the very permutation the resident path uses. The
augmentation is NOT addressed: FFCV's numba ops draw from numba's own per-thread generators,
which cannot be seeded per member, so FFCV-trained members are not bit-reproducible; the draws
follow the same distributions as `zoo.train.augment` (tests/test_ffcv.py checks flip rate, translate
range and Cutout size).

Every epoch iterator is closed, also when training stops early (an unfinished FFCV iterator
aborts the process at exit).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .augment import FILL, epoch_order
from ..data import Cifar10, default_root
from ..members import MemberConfig
from ..recipe import Recipe
from ..records import MemberResult
from .common import fit, resident

_TORCH_THREADS = torch.get_num_threads()  # importing ffcv sets torch's intra-op threads to 1: undone below
from ffcv.fields import IntField, RGBImageField  # noqa: E402
from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder  # noqa: E402
from ffcv.loader import Loader, OrderOption  # noqa: E402
from ffcv.transforms import (Cutout, RandomHorizontalFlip, RandomTranslate, Squeeze, ToDevice,  # noqa: E402
                             ToTensor, ToTorchImage)
from ffcv.traversal_order.base import TraversalOrder  # noqa: E402
from ffcv.writer import DatasetWriter  # noqa: E402

torch.set_num_threads(_TORCH_THREADS)

SPLITS = ("train", "test")
_LOADERS: dict[tuple, Loader] = {}  # (file, batch, augmentation, device) -> the process's train Loader


def _workers() -> int:
    """FFCV sets torch's intra-op thread count to its worker count, from the loading thread too;
    using torch's current count keeps the caller's choice (one thread per CPU worker process,
    all cores on a GPU host)."""
    return torch.get_num_threads()


def beton_paths(data: Cifar10, directory) -> dict[str, Path]:
    """{split: path} of `data`'s .beton files in `directory`, named by data identity and subset."""
    sub = data.identity.get("subset")
    tag = "full" if sub is None else f"tr{sub['n_train']}-te{sub['n_test']}-s{sub['seed']}"
    return {s: Path(directory) / f"cifar10-{data.identity['sha256']}-{tag}-{s}.beton" for s in SPLITS}


class _Images:
    """Indexable (HWC uint8 image, label) pairs, the form FFCV's writer reads."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return np.ascontiguousarray(self.x[i].transpose(1, 2, 0)), int(self.y[i])


def write_betons(data: Cifar10, directory=None) -> dict[str, Path]:
    """Write `data`'s train and test splits as .beton files unless present; {split: path}.

    `directory` defaults to `<data root>/ffcv` (zoo.data.default_root).
    """
    directory = Path(directory) if directory is not None else default_root() / "ffcv"
    directory.mkdir(parents=True, exist_ok=True)
    paths = beton_paths(data, directory)
    for split, path in paths.items():
        if path.exists():
            continue
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        x, y = (data.train_x, data.train_y) if split == "train" else (data.test_x, data.test_y)
        fields = {"image": RGBImageField(write_mode="raw"), "label": IntField()}
        DatasetWriter(str(tmp), fields, num_workers=len(os.sched_getaffinity(0))).from_indexed_dataset(_Images(x, y))
        os.replace(tmp, path)
    return paths


class AddressedOrder(TraversalOrder):
    """The member's addressed permutation for each epoch; the Loader's user sets `.seed` per member."""

    def sample_order(self, epoch: int):
        return self.indices[epoch_order(self.seed, epoch, len(self.indices))]


def _device_ops(device: torch.device) -> list:
    return [ToDevice(device, non_blocking=True)] if device.type == "cuda" else []


def train_loader(path, recipe: Recipe, device="cpu") -> Loader:
    """The process's train Loader for `path` (built on first use, then reused)."""
    device = torch.device(device)
    key = (str(path), recipe.batch_size, recipe.flip, recipe.translate, recipe.cutout, str(device))
    if key not in _LOADERS:
        ops = [SimpleRGBImageDecoder()]
        ops += [RandomHorizontalFlip()] if recipe.flip else []
        ops += [RandomTranslate(padding=recipe.translate, fill=FILL)] if recipe.translate else []
        ops += [Cutout(recipe.cutout, FILL)] if recipe.cutout else []
        pipelines = {"image": ops + [ToTensor(), *_device_ops(device), ToTorchImage()],
                     "label": [IntDecoder(), ToTensor(), *_device_ops(device), Squeeze()]}
        loader = Loader(str(path), batch_size=recipe.batch_size, num_workers=_workers(), order=OrderOption.RANDOM,
                        seed=0, pipelines=pipelines, drop_last=True)
        loader.traversal_order = AddressedOrder(loader)  # the Loader accepts only built-in orders
        _LOADERS[key] = loader
    return _LOADERS[key]


def ffcv_batches(loader: Loader, seed: int, epoch: int):
    """The member's training batches of `epoch` from `loader`: (x uint8 [B, 3, 32, 32], y [B])."""
    loader.traversal_order.seed = seed
    loader.next_epoch = epoch
    it = iter(loader)
    try:
        yield from it
    finally:
        it.close()


def read_split(path, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Read a .beton back in file order, un-augmented: (x uint8 [N, 3, 32, 32], y int64 [N])."""
    pipelines = {"image": [SimpleRGBImageDecoder(), ToTensor(), ToTorchImage()],
                 "label": [IntDecoder(), ToTensor(), Squeeze()]}
    loader = Loader(str(path), batch_size=batch_size, num_workers=_workers(), order=OrderOption.SEQUENTIAL,
                    pipelines=pipelines, drop_last=False)
    xs, ys = [], []
    for x, y in loader:  # the loader reuses its buffers: copy out
        xs.append(x.contiguous().numpy().copy())
        ys.append(y.numpy().copy())
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64)


def train_member_ffcv(cfg: MemberConfig, data: Cifar10, recipe: Recipe, *, beton_dir=None, asym_seed: int = 0,
                      device="cpu") -> MemberResult:
    """Train one member on FFCV batches (module doc); metrics as on the resident path."""
    res = resident(data, recipe, device)
    steps = recipe.steps_per_epoch(len(res.train_y))  # refuse a bad batch size before compiling a Loader
    loader = train_loader(write_betons(recipe.apply_subset(data), beton_dir)["train"], recipe, device)
    if len(loader) != steps:
        raise ValueError(f"beton_dir={beton_dir!r}: its train file gives {len(loader)} batches, the data "
                         f"{steps}; remove the stale .beton files")
    return fit(cfg, res, recipe, lambda epoch: ffcv_batches(loader, cfg.seed, epoch), asym_seed=asym_seed,
               device=device)
