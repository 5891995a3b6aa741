import json
import math

import numpy as np
import pytest
import torch

import zoo
from conftest import run_python
from metanets.base import n_params, seeded_init
from metanets.data import Standardizer, prepare, split_members
from metanets.deepsets import SetReadout
from metanets.registry import METANETS, build
from metanets.report import PAPER_TABLE3, paper_table3, table3, to_csv, to_markdown
from metanets.statnn import StatNN
from metanets.train import TrainSettings, featurize_all, run_seed, select_lr, train_run
from zoo.layout import Layout, TensorSpec
from zoo.symmetry import permute_params, random_permutations

CPU = torch.device("cpu")
PAPER_PARAMS = {  # paper Table 9: metanetwork sizes for the standard and W-Asym families
    "standard": {"mlp": 4_994_945, "dmc": 105_357, "deepsets": 8_897, "statnn": 119_297},
    "w_asym": {"mlp": 3_880_833, "dmc": 105_357, "deepsets": 8_897, "statnn": 117_505},  # statnn: 28 tensors, see statnn.py
}


def small_layout(widths=(24, 40, 10)) -> Layout:
    """A made-up 6-tensor layout of 2,334 entries (enough for DMC's 2,044 minimum)."""
    shapes = [(widths[0], 3, 3, 3), (widths[0],), (widths[1], widths[0], 2), (widths[1],),
              (widths[2], widths[1]), (widths[2],)]
    specs, offset = [], 0
    for i, shape in enumerate(shapes):
        size = int(np.prod(shape))
        specs.append(TensorSpec(f"t{i}", shape, offset, size))
        offset += size
    return Layout(tuple(specs))


def member_weights(family: str, seeds) -> np.ndarray:
    net = zoo.build(family)
    return np.stack([zoo.flatten(zoo.init_weights(net, s)).numpy() for s in seeds])


def planted_zoo(n: int, seed: int = 0):
    """Members whose entries are N(0, 1) plus a per-member shift m; the target is m."""
    rng, lay = np.random.default_rng(seed), small_layout()
    m = rng.uniform(-1, 1, n)
    w = (rng.normal(size=(n, lay.size)) + m[:, None]).astype(np.float32)
    return w, m, [f"member-{seed}-{i}" for i in range(n)], lay


def fit(name: str, data, *, epochs: int, lr: float, seed: int = 1, batch: int = 16) -> dict:
    feats = featurize_all(build(name, data.layout), data.x, CPU)
    return train_run(name, data, feats, lr=lr, seed=seed, settings=TrainSettings(epochs=epochs, batch_size=batch))


# --- architectures -----------------------------------------------------------------------------

@pytest.mark.parametrize("family", list(PAPER_PARAMS))
def test_parameter_counts_match_paper_table9(family):
    lay = zoo.layout(zoo.build(family))
    for name, expected in PAPER_PARAMS[family].items():
        net = build(name, lay)
        assert n_params(net) == expected, name
        assert net(torch.zeros(2, lay.size)).shape == (2,)


def test_invariant_metanets_ignore_hidden_channel_permutations():
    members = [zoo.init_weights(zoo.build("standard"), s) for s in range(3)]
    flat = np.stack([zoo.flatten(m).numpy() for m in members])
    twins = np.stack([zoo.flatten(permute_params(m, random_permutations(10 + i))).numpy()
                      for i, m in enumerate(members)])
    assert not np.allclose(flat, twins)
    lay = zoo.layout(members[0])
    scaler = Standardizer.fit(flat, np.arange(3.0), lay)
    x, x_twin = (torch.from_numpy(scaler.inputs(a.copy())) for a in (flat, twins))
    for name in METANETS:
        # train mode: DMC's BatchNorm then uses batch statistics rather than its untrained running ones
        meta = seeded_init(build(name, lay, **({"chunk": 5000} if name == "deepsets" else {})), 7).train()
        with torch.no_grad():
            same = torch.allclose(meta(x), meta(x_twin), rtol=1e-4, atol=1e-5)
        assert same == (name in ("deepsets", "statnn")), name


def test_statnn_skips_the_empty_w_asym_stem():
    lay = zoo.layout(zoo.build("w_asym"))
    assert lay.tensors[0].size == 0
    feats = StatNN(lay).featurize(torch.from_numpy(member_weights("w_asym", [0, 1])))
    assert feats.shape == (2, 28 * 7) and torch.isfinite(feats).all()


def test_statnn_features_are_the_seven_statistics():
    lay = small_layout()
    x = torch.randn(3, lay.size, dtype=torch.float64)
    t = lay.tensors[2]
    v = x[:, t.offset : t.offset + t.size].numpy()
    want = np.stack([v.mean(1), v.var(1), v.min(1), v.max(1), *np.quantile(v, [0.25, 0.5, 0.75], axis=1)], 1)
    np.testing.assert_allclose(StatNN(lay).featurize(x)[:, 14:21].numpy(), want, rtol=1e-10)


def test_deepsets_chunking_is_exact_in_value_and_gradient():
    torch.manual_seed(0)
    x = torch.randn(4, 1000, 1)
    outs, grads = [], []
    for chunk in (10_000, 96):
        readout = seeded_init(SetReadout(1, 8, n_rho=2, chunk=chunk), 3)
        y = readout(x).sum()
        y.backward()
        outs.append(y.detach())
        grads.append(torch.cat([p.grad.flatten() for p in readout.parameters()]))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_unknown_metanet_and_short_dmc_input_are_refused():
    with pytest.raises(ValueError, match="metanet='gnn'.*allowed: mlp, dmc, deepsets, statnn"):
        build("gnn", small_layout())
    with pytest.raises(ValueError, match="DMC needs at least 2044"):
        build("dmc", small_layout(widths=(8, 8, 4)))


# --- data ----------------------------------------------------------------------------------------

def test_split_is_deterministic_disjoint_and_free_of_row_order():
    ids = [f"id{i:03d}" for i in range(41)]
    split = split_members(ids)
    parts = [set(np.array(ids)[getattr(split, k)]) for k in ("train", "val", "test")]
    assert [len(p) for p in parts] == [21, 10, 10]
    assert set.union(*parts) == set(ids) and sum(map(len, parts)) == len(ids)
    shuffled = list(np.random.default_rng(0).permutation(ids))
    again = split_members(shuffled)
    assert [set(np.array(shuffled)[getattr(again, k)]) for k in ("train", "val", "test")] == parts


def test_split_too_small_names_the_family():
    with pytest.raises(ValueError, match="family 'w_asym' has 5 usable members"):
        split_members([f"m{i}" for i in range(5)], family="w_asym")
    with pytest.raises(ValueError, match="duplicates"):
        split_members(["a", "a", "b", "c", "d", "e", "f", "g"])


def test_prepare_excludes_unusable_members_and_counts_them():
    w, m, ids, lay = planted_zoo(24)
    w[3, 5] = np.nan
    m[4] = np.inf
    status = np.array(["ok"] * 24, dtype=object)
    status[[5, 6]] = "diverged"
    data = prepare(w, m, ids, lay, family="standard", status=status)
    assert data.excluded == {"not_ok_status": 2, "nonfinite_target": 1, "nonfinite_weights": 1}
    assert len(data.member_ids) == 20 and not {ids[i] for i in (3, 4, 5, 6)} & set(data.member_ids)
    assert np.isfinite(data.x).all()
    with pytest.raises(ValueError, match="no members"):
        prepare(w[:0], m[:0], [], lay, family="standard")


def test_standardization_uses_the_train_split_only():
    w, m, ids, lay = planted_zoo(24)
    base = prepare(w, m, ids, lay, family="standard")
    held_out = np.concatenate([base.split.val, base.split.test])
    w2, m2 = w.copy(), m.copy()
    w2[held_out] *= 100.0
    m2[held_out] += 5.0
    other = prepare(w2, m2, ids, lay, family="standard")
    np.testing.assert_array_equal(other.scaler.x_std, base.scaler.x_std)
    assert other.scaler.y_mean == base.scaler.y_mean and other.fingerprint != base.fingerprint
    train = base.x[base.split.train]
    for t in lay.tensors:
        block = train[:, t.offset : t.offset + t.size]
        assert abs(block.mean()) < 1e-4 and abs(block.std() - 1) < 1e-4


def test_max_members_is_a_deterministic_subsample():
    w, m, ids, lay = planted_zoo(30)
    order = np.random.default_rng(1).permutation(30)
    a = prepare(w, m, ids, lay, family="standard", max_members=12)
    b = prepare(w[order], m[order], list(np.array(ids)[order]), lay, family="standard", max_members=12)
    assert set(a.member_ids) == set(b.member_ids) and len(a.member_ids) == 12
    assert a.fingerprint == b.fingerprint


# --- training ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,lr,epochs,floor", [
    ("mlp", 1e-3, 8, 0.6), ("dmc", 5e-3, 6, 0.8), ("deepsets", 5e-3, 4, 0.8), ("statnn", 5e-3, 10, 0.9)])
def test_each_metanet_learns_a_planted_signal(name, lr, epochs, floor):
    w, m, ids, lay = planted_zoo(120)
    record = fit(name, prepare(w, m, ids, lay, family="standard"), epochs=epochs, lr=lr)
    assert record["test_r2"] > floor, record["curves"]["test_r2"]


def test_statnn_predicts_a_function_of_tensor_statistics():
    rng, lay = np.random.default_rng(5), small_layout()
    n = 300
    scales = rng.uniform(0.5, 2.0, size=(n, len(lay.tensors)))
    w = np.concatenate([rng.normal(size=(n, t.size)) * scales[:, [i]] for i, t in enumerate(lay.tensors)], 1)
    target = np.log(scales[:, 2]) - 0.5 * scales[:, 4]  # std of one tensor against another's
    data = prepare(w.astype(np.float32), target, [f"s{i}" for i in range(n)], lay, family="standard")
    record = fit("statnn", data, epochs=25, lr=5e-3, batch=32)
    assert record["test_r2"] > 0.9, record["curves"]["test_r2"]


def test_test_scores_come_from_the_best_validation_epoch():
    w, m, ids, lay = planted_zoo(40)
    record = fit("statnn", prepare(w, m, ids, lay, family="standard"), epochs=6, lr=1e-2)
    curves = record["curves"]
    assert len(curves["val_r2"]) == 6 and record["best_epoch"] == int(np.argmax(curves["val_r2"]))
    assert record["test_r2"] == curves["test_r2"][record["best_epoch"]]
    assert record["val_r2"] == max(curves["val_r2"])
    assert len(record["test_pred"]) == len(record["test_true"]) == record["splits"]["test"] == 10


def test_select_lr_picks_the_best_validation_run():
    records = [{"lr": 1e-5, "val_r2": 0.2}, {"lr": 1e-3, "val_r2": float("nan")},
               {"lr": 5e-3, "val_r2": 0.7}, {"lr": 1e-2, "val_r2": 0.7}, {"lr": 1e-4, "val_r2": -3.0}]
    assert select_lr(records) == 5e-3
    with pytest.raises(ValueError, match="no learning-rate runs"):
        select_lr([])


def test_runs_are_reproducible_and_seeds_are_addressed():
    w, m, ids, lay = planted_zoo(24)
    data = prepare(w, m, ids, lay, family="standard")
    a, b = (fit("deepsets", data, epochs=2, lr=1e-3, seed=9) for _ in range(2))
    assert a["curves"] == b["curves"] and a["test_pred"] == b["test_pred"]
    code = "from metanets.train import run_seed; print(run_seed(0, 'w_asym', 'dmc', 'final', 3))"
    assert int(run_python(code)) == run_seed(0, "w_asym", "dmc", "final", 3)
    assert len({run_seed(0, "w_asym", "dmc", "final", i) for i in range(5)}) == 5
