"""The FFCV path: .beton round trip, the same augmentation as the resident path, training a member.

One train Loader (its numba compilation costs 10-20 s) serves the augmentation and the training
tests: it is cached per process by zoo.train.ffcv.
"""
import dataclasses

import numpy as np
import pytest
import torch

pytest.importorskip("ffcv")

from zoo import sample_member  # noqa: E402
from zoo.train.augment import FILL, epoch_order  # noqa: E402
from zoo.train.ffcv import _LOADERS, ffcv_batches, read_split, train_loader, write_betons  # noqa: E402
from zoo.recipe import Recipe  # noqa: E402
from zoo.train import resident, resident_batches, train_members  # noqa: E402

RECIPE = Recipe(batch_size=50, n_train=500, n_test=100, epochs=1)
PAD = RECIPE.translate


@pytest.fixture(scope="module")
def betons(cifar, tmp_path_factory):
    return write_betons(RECIPE.apply_subset(cifar), tmp_path_factory.mktemp("beton"))


def test_beton_round_trip_and_write_once(cifar, betons):
    sub = RECIPE.apply_subset(cifar)
    for split, (x, y) in {"train": (sub.train_x, sub.train_y), "test": (sub.test_x, sub.test_y)}.items():
        got_x, got_y = read_split(betons[split])
        np.testing.assert_array_equal(got_x, x)
        np.testing.assert_array_equal(got_y, y)
    stamp = {s: p.stat().st_mtime_ns for s, p in betons.items()}
    assert write_betons(sub, betons["train"].parent) == betons  # same identity: nothing rewritten
    assert {s: p.stat().st_mtime_ns for s, p in betons.items()} == stamp
    assert not list(betons["train"].parent.glob(".*tmp"))


def recover(out: torch.Tensor, orig: torch.Tensor):
    """Which (flip, crop offset) turned each orig [B, 3, 32, 32] into out, and where the pixels that
    no candidate explains lie (the Cutout square): (flip [B], shift [B, 2], cut [B, 32, 32])."""
    fill = torch.tensor(FILL, dtype=torch.uint8).view(1, 3, 1, 1)
    cands, keys = [], []
    for flip in (False, True):
        img = orig.flip(-1) if flip else orig
        padded = torch.nn.functional.pad(img.int() - fill.int(), (PAD,) * 4) + fill.int()
        for dy in range(2 * PAD + 1):
            for dx in range(2 * PAD + 1):
                cands.append(padded[:, :, dy : dy + 32, dx : dx + 32])
                keys.append((flip, dy, dx))
    match = torch.stack([(c == out.int()).all(1) for c in cands], 1)  # [B, 50, 32, 32]
    best = match.flatten(2).sum(-1).argmax(1)
    flip = torch.tensor([keys[k][0] for k in best])
    shift = torch.tensor([keys[k][1:] for k in best])
    cut = ~match[torch.arange(len(best)), best]
    return flip, shift, cut


def stats(batches, originals):
    flips, shifts, cuts = zip(*(recover(x.contiguous(), orig) for x, orig in zip(batches, originals)))
    flip, shift, cut = torch.cat(flips), torch.cat(shifts), torch.cat(cuts)
    rows, cols = cut.any(2), cut.any(1)
    span = torch.stack([rows.sum(1), cols.sum(1)], 1)  # bounding box sides of the unexplained pixels
    return {
        "flip_rate": flip.float().mean().item(),
        "shift_freq": torch.stack([torch.bincount(shift[:, a], minlength=2 * PAD + 1) for a in (0, 1)]).float()
        / len(shift),
        "max_span": span.max().item(),
        "full_square": (cut.sum((1, 2)) == RECIPE.cutout**2).float().mean().item(),
    }


def test_ffcv_and_resident_augmentations_match(cifar, betons):
    res = resident(cifar, RECIPE, "cpu")
    loader = train_loader(betons["train"], RECIPE)
    got = {}
    for path, make in {"ffcv": lambda s, e: ffcv_batches(loader, s, e),
                       "resident": lambda s, e: resident_batches(res, RECIPE, s, e)}.items():
        xs, originals = [], []
        for seed, epoch in ((3, 0), (3, 1), (4, 0), (5, 2)):
            batches = list((x.clone(), y.clone()) for x, y in make(seed, epoch))
            order = torch.from_numpy(epoch_order(seed, epoch, 500)).view(10, 50)
            for (x, y), idx in zip(batches, order):  # the addressed order, on both paths
                assert torch.equal(y, res.train_y[idx])
                xs.append(x)
                originals.append(res.train_x[idx])
        got[path] = stats(xs, originals)
    for s in got.values():  # 2,000 images per path
        assert 0.45 < s["flip_rate"] < 0.55
        assert (s["shift_freq"] - 1 / (2 * PAD + 1)).abs().max() < 0.05  # offsets 0..4: shifts -2..+2
        assert s["max_span"] == RECIPE.cutout and s["full_square"] > 0.5
    assert abs(got["ffcv"]["flip_rate"] - got["resident"]["flip_rate"]) < 0.07
    assert abs(got["ffcv"]["full_square"] - got["resident"]["full_square"]) < 0.1


def test_ffcv_trains_members_with_one_loader(cifar, betons):
    cfgs = [sample_member(0, i, "standard") for i in range(2)]
    before, threads = len(_LOADERS), torch.get_num_threads()
    out = train_members(cfgs, cifar, RECIPE, engine="ffcv", beton_dir=betons["train"].parent)
    assert len(_LOADERS) == max(before, 1)  # built at most once, shared by both members
    assert torch.get_num_threads() == threads  # FFCV sets torch's threads to its worker count
    for r, cfg in zip(out, cfgs):
        assert r.config == cfg and r.status == "ok" and r.data_sha == cifar.identity["sha256"]
        assert all(np.isfinite(v) for v in r.metrics.values())
        assert not np.array_equal(r.params_final, r.params_init)
    with pytest.raises(ValueError, match="batch_size=1000"):
        train_members(cfgs[:1], cifar, dataclasses.replace(RECIPE, batch_size=1000), engine="ffcv",
                      beton_dir=betons["train"].parent)
