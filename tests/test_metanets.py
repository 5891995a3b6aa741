import dataclasses
import inspect
import json
import math

import numpy as np
import pytest
import torch

import zoo
from conftest import run_python
from metanets.base import n_params, seeded_init
from metanets.data import Standardizer, prepare, split_members
from metanets.deepsets import ScalarPhi, SetReadout
from metanets.registry import METANETS, REGISTRY, build
from metanets.report import PAPER_TABLE3, paper_table3, table3, to_markdown
from metanets.stage import MetanetConfig, run_key
from metanets.statnn import StatNN
from metanets.train import TrainSettings, featurize_all, run_seed, select_lr, train_run
from zoo.layout import Layout, TensorSpec
from zoo.families.symmetry import permute_params, random_permutations

CPU = torch.device("cpu")
PAPER_PARAMS = {  # paper Table 9: metanetwork sizes for the standard and W-Asym families
    "standard": {"mlp": 4_994_945, "dmc": 105_357, "deepsets": 8_897, "statnn": 119_297},
    "w_asym": {"mlp": 3_880_833, "dmc": 105_357, "deepsets": 8_897, "statnn": 117_505},  # statnn: 28 tensors, see statnn.py
}


def small_layout(widths=(24, 40, 10), *, empty_stem=False) -> Layout:
    """A made-up 6-tensor layout of 2,334 entries (enough for DMC's 2,044 minimum); with
    `empty_stem` its first tensor is fully fixed (size 0), like W-Asym's stem conv."""
    shapes = [(widths[0], 3, 3, 3), (widths[0],), (widths[1], widths[0], 2), (widths[1],),
              (widths[2], widths[1]), (widths[2],)]
    specs, offset = [], 0
    for i, shape in enumerate(shapes):
        size = 0 if (i == 0 and empty_stem) else int(np.prod(shape))
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
        meta = seeded_init(build(name, lay, **MetanetConfig(zoo="z", metanet_options={"deepsets": {"chunk": 5000}})
                                 .options(name)), 7).train()
        with torch.no_grad():
            same = torch.allclose(meta(x), meta(x_twin), rtol=1e-4, atol=1e-5)
        assert same == METANETS[name].invariant, name
    assert [name for name, spec in METANETS.items() if spec.invariant] == ["deepsets", "statnn"]


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


def test_each_spec_declares_exactly_its_constructors_options():
    assert [s.name for s in REGISTRY] == list(METANETS) == ["mlp", "dmc", "deepsets", "statnn"]
    for spec in REGISTRY:
        params = inspect.signature(spec.build).parameters
        keywords = {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY}
        assert keywords == spec.options, spec.name
    with pytest.raises(ValueError, match=r"metanet 'deepsets': unknown \['chnk'\]; allowed: \['chunk', 'hidden'\]"):
        build("deepsets", small_layout(), chnk=3)
    with pytest.raises(ValueError, match="options.deepsets.chunk='8': must be of type int"):
        MetanetConfig(zoo="z", metanet_options={"deepsets": {"chunk": "8"}})


def test_memory_only_options_stay_out_of_the_run_key():
    from metanets.stage import Row

    def key(**options):
        config = MetanetConfig(zoo="z", metanet_options={"deepsets": options})
        return run_key(config, "f" * 16, "standard", Row("deepsets", "deepsets", "standardized"), "final", 0, 1e-3, 1)

    assert key() == key(chunk=4096) != key(hidden=32)


def test_training_settings_are_declared_once():
    own = MetanetConfig.__dict__["__annotations__"]
    train = [f.name for f in dataclasses.fields(TrainSettings)]
    assert not set(own) & set(train) and set(train) < {f.name for f in dataclasses.fields(MetanetConfig)}
    config = MetanetConfig(zoo="z", epochs=3, batch_size=4)
    assert config.settings() == TrainSettings(epochs=3, batch_size=4)
    with pytest.raises(ValueError, match="epochs=0: must be an int >= 1"):
        MetanetConfig(zoo="z", epochs=0)


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
    assert split_members(ids[:6]).sizes() == {"train": 2, "val": 2, "test": 2}
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


def test_raw_inputs_and_fraction_targets_pass_through_unchanged():
    w, m, ids, lay = planted_zoo(24)
    acc = 0.5 + 0.3 * m  # an accuracy, a fraction in [0, 1]
    raw = prepare(w, acc, ids, lay, family="standard", inputs_rule="raw", targets_rule="fraction")
    np.testing.assert_array_equal(raw.x, w)
    np.testing.assert_array_equal(raw.scaler.targets(acc), acc.astype(np.float32))
    assert raw.scaler.predictions(np.array([0.25])) == 0.25
    assert raw.scaler.to_json()["inputs"] == "raw" and raw.scaler.to_json()["targets"] == "fraction"
    standard = prepare(w, acc, ids, lay, family="standard")
    assert not np.allclose(standard.x, w) and raw.fingerprint == standard.fingerprint
    with pytest.raises(ValueError, match="inputs='scaled': must be one of"):
        prepare(w, acc, ids, lay, family="standard", inputs_rule="scaled")
    with pytest.raises(ValueError, match="targets='fraction' with target='test_loss'"):
        MetanetConfig(zoo="z", target="test_loss", targets="fraction")


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


def test_scalar_phi_is_linear_layernorm_relu():
    phi = seeded_init(ScalarPhi(16), 4)
    with torch.no_grad():
        phi.norm.weight.normal_(generator=torch.Generator().manual_seed(1))
        phi.norm.bias.normal_(generator=torch.Generator().manual_seed(2))
    plain = torch.nn.Sequential(phi.linear, phi.norm, torch.nn.ReLU())
    x = (torch.randn(3, 200, 1, generator=torch.Generator().manual_seed(3)) * 4).requires_grad_()
    grads = []
    for f in (phi, plain):
        out = f(x)
        grads.append(torch.autograd.grad(out.square().sum(), [x, *phi.parameters()]))
    torch.testing.assert_close(phi(x), plain(x), rtol=1e-5, atol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_table3_summarises_final_runs_only():
    runs = [{"phase": "final", "metanet": "statnn", "family": "w_asym", "lr": 1e-2, "test_r2": v, "test_tau": t}
            for v, t in ((0.9, 0.8), (0.7, 0.6), (0.8, None))]
    runs.append({"phase": "select", "metanet": "statnn", "family": "w_asym", "lr": 1e-3, "test_r2": -5.0, "test_tau": 0})
    runs.append({"phase": "final", "metanet": "mlp", "family": "standard", "lr": 1e-4, "test_r2": 0.1, "test_tau": 0.2})
    frame = table3(runs)
    assert list(frame.index) == ["mlp", "statnn"] and list(frame.columns.levels[0]) == ["standard", "w_asym"]
    cell = frame.loc["statnn", "w_asym"]
    assert cell["r2_mean"] == pytest.approx(0.8) and cell["r2_std"] == pytest.approx(0.1)
    assert math.isnan(cell["tau_mean"]) and cell["runs"] == 3 and cell["lr"] == 1e-2
    assert math.isnan(frame.loc["mlp", ("standard", "r2_std")]) and math.isnan(frame.loc["mlp", ("w_asym", "r2_mean")])
    md = to_markdown(frame)
    assert "| StatNN | - | - | 0.800 ± 0.100 | - |" in md and "| MLP | 0.100 | 0.200 | - | - |" in md
    with pytest.raises(ValueError, match="no final runs"):
        table3(runs[3:4])


def test_paper_table3_is_the_papers():
    frame = paper_table3()
    assert frame.loc["mlp", ("standard", "r2_mean")] == -0.171 and frame.loc["statnn", ("w_asym", "tau_mean")] == 0.935
    assert frame.shape == (4, 14) and set(PAPER_TABLE3) == set(METANETS)  # 2 families x 7 stats (align_s NaN)
    assert frame[("standard", "align_s")].isna().all()


# --- the stage, end to end through the store ----------------------------------------------------

def synthetic_store(path, members: dict, *, diverged=(), chance=(), layouts="small"):
    """A zoo committed through zoo.store: configs from zoo.sample_member, weights N(0, 1) plus a
    per-member shift s in [0, 1], test accuracy 0.2 + 0.6 s (the planted signal). `layouts`
    "small" gives both families made-up layouts (W-Asym's with an empty stem), None the real ones."""
    from zoo.records import METRICS, MemberResult
    from zoo.store import commit, init_zoo

    given = None if layouts is None else {f: small_layout(empty_stem=(f == "w_asym")).to_json() for f in members}
    store = init_zoo(path, zoo_seed=3, families=dict.fromkeys(members, 0), recipe={}, recipe_overrides={},
                     data={"sha256": "synthetic"}, layouts=given)
    for family, n in members.items():
        results = []
        for i in range(n):
            rng = np.random.default_rng([i, store.n_params(family)])
            shift = rng.uniform()
            params = (rng.normal(size=store.n_params(family)) + shift).astype(np.float32)
            ok = (family, i) not in diverged
            acc = 0.1 if (family, i) in chance else 0.2 + 0.6 * shift
            metrics = {m: acc if ok else float("nan") for m in METRICS}
            results.append(MemberResult(zoo.sample_member(3, i, family), "ok" if ok else "diverged",
                                        None if ok else 2, metrics, np.zeros_like(params), params, 1.0, "cpu",
                                        "synthetic"))
        if results:
            commit(store, results)
    return store


def cli(*args) -> int:
    from pipelines.cli import main

    return main(["metanets", *map(str, args)])


def test_cli_end_to_end_then_resume(tmp_path, capsys):
    store = synthetic_store(tmp_path / "zoo", {"standard": 40, "w_asym": 40}, diverged={("w_asym", 5)},
                            chance={("standard", 7)})
    out = tmp_path / "out"
    args = ["--zoo", store.path, "--out", out, "--epochs", 3, "--lrs", "1e-3,1e-2", "--runs", 2]
    assert cli(*args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    fams = manifest["families"]
    assert manifest["zoo"]["member_count"] == 80 and manifest["runs"] == {"trained": 32, "reused": 0}
    assert fams["w_asym"]["excluded"]["not_ok_status"] == 1 and fams["w_asym"]["usable"] == 39
    assert fams["standard"]["chance_level"] == 1 and fams["standard"]["splits"] == {"train": 20, "val": 10, "test": 10}
    assert fams["standard"]["chance_level_rule"] == "test_acc < 0.15"
    assert "symzoo metanets: [32/32 100.0%]" in capsys.readouterr().err  # a progress line per run in a log
    runs = json.loads((out / "runs.json").read_text())
    assert len(runs) == 32
    for family in fams:
        for name in METANETS:
            cell = [r for r in runs if r["family"] == family and r["metanet"] == name]
            select = [r for r in cell if r["phase"] == "select"]
            final = [r for r in cell if r["phase"] == "final"]
            assert select_lr(select) == manifest["chosen_lr"][family][name] == final[0]["lr"] == final[1]["lr"]
            assert [r["seed"] for r in final] == [run_seed(0, family, name, "final", i) for i in range(2)]
            assert all(len(r["curves"]["val_r2"]) == 3 for r in cell)
    table = __import__("pandas").read_csv(out / "table3.csv", index_col="metanet")
    for name in METANETS:
        r2 = [r["test_r2"] for r in runs if r["phase"] == "final" and r["family"] == "w_asym" and r["metanet"] == name]
        assert table.loc[name, "w_asym_r2_mean"] == pytest.approx(np.mean(r2))
        assert table.loc[name, "w_asym_r2_std"] == pytest.approx(np.std(r2, ddof=1))
    assert "W-Asym ResNet-8 R^2" in (out / "table3.md").read_text() and "\\toprule" in (out / "table3.tex").read_text()
    assert "data: " in (out / "table3.md").read_text()
    import matplotlib.image

    height, width = matplotlib.image.imread(out / "scatter.png").shape[:2]
    assert height > 1.5 * width > 500  # 4 metanets x 2 families of panels

    before = (out / "table3.csv").read_text()
    next(out.glob("runs/standard/statnn/final-1-*.json")).unlink()
    assert cli(*args) == 0
    assert json.loads((out / "manifest.json").read_text())["runs"] == {"trained": 1, "reused": 31}
    assert (out / "table3.csv").read_text() == before  # the retrained run is the same run


def test_stage_reads_real_layouts(tmp_path):
    from metanets.stage import MetanetConfig, run

    store = synthetic_store(tmp_path / "zoo", {"standard": 8, "w_asym": 8}, layouts=None)
    out = run(MetanetConfig(zoo=store.path, metanets=("statnn",), lrs=(1e-3,), runs=1, epochs=1))
    assert out == tmp_path / "zoo" / "metanets"
    runs = json.loads((out / "runs.json").read_text())
    assert {r["family"]: r["n_params"] for r in runs} == {"standard": 119_297, "w_asym": 117_505}
    assert [r["phase"] for r in runs] == ["final", "final"]  # one lr: no selection runs


def test_bad_input_gets_a_clear_message(tmp_path, capsys):
    from metanets.stage import MetanetConfig, run

    empty = synthetic_store(tmp_path / "empty", {"standard": 0})
    with pytest.raises(ValueError, match="family 'standard' of the zoo at .* has no committed members"):
        run(MetanetConfig(zoo=empty.path))
    small = synthetic_store(tmp_path / "small", {"standard": 5})
    with pytest.raises(ValueError, match="family 'standard' has 5 usable members"):
        run(MetanetConfig(zoo=small.path, metanets=("mlp",)))
    with pytest.raises(ValueError, match=r"\['w_asym'\] not in the zoo"):
        run(MetanetConfig(zoo=small.path, families=("w_asym",)))
    with pytest.raises(ValueError, match="metanets config: unknown keys \\['lr'\\]"):
        MetanetConfig.from_dict({"zoo": small.path, "lr": 1e-3})
    with pytest.raises(ValueError, match="lrs=.*must be a non-empty list of floats > 0"):
        MetanetConfig(zoo=small.path, lrs=(0.0,))
    assert cli("--zoo", small.path, "--metanets", "mlp,transformer") == 2
    assert "metanet='transformer': unknown; allowed: mlp, dmc, deepsets, statnn" in capsys.readouterr().err


def test_raw_and_standardized_inputs_both_train_and_are_recorded(tmp_path, capsys):
    store = synthetic_store(tmp_path / "zoo", {"standard": 24})
    out, config = tmp_path / "out", tmp_path / "metanets.yaml"
    config.write_text("inputs: raw\ntargets: fraction\nmetanet_options: {statnn: {hidden: 32}}\n")
    assert cli("--zoo", store.path, "--out", out, "--config", config, "--metanets", "mlp,statnn",
               "--other-inputs", "mlp", "--epochs", 2, "--lrs", "1e-3,1e-2", "--runs", 2) == 0
    assert "symzoo metanets: [12/12 100.0%]" in capsys.readouterr().err
    runs = json.loads((out / "runs.json").read_text())
    assert len(runs) == 12 and {r["row"] for r in runs} == {"mlp", "statnn", "mlp (standardized inputs)"}
    for r in runs:
        assert r["targets"] == "fraction" and r["inputs"] == ("standardized" if "(" in r["row"] else "raw"), r["row"]
    assert {r["options"]["hidden"] for r in runs if r["metanet"] == "statnn"} == {32}
    main, extra = ({(r["phase"], r["index"], r["lr"]): r for r in runs if r["row"] == row}
                   for row in ("mlp", "mlp (standardized inputs)"))
    pair = main["select", 0, 1e-3], extra["select", 0, 1e-3]
    assert pair[0]["seed"] == pair[1]["seed"] and pair[0]["test_pred"] != pair[1]["test_pred"]  # only the inputs differ
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preprocessing"]["inputs"] == "raw" and manifest["preprocessing"]["targets"] == "fraction"
    assert manifest["preprocessing"]["rows"]["mlp (standardized inputs)"] == {"metanet": "mlp",
                                                                              "inputs": "standardized"}
    scalers = manifest["families"]["standard"]["standardizer"]
    assert set(scalers) == {"raw", "standardized"} and set(scalers["raw"]["x_mean"]) == {0.0}
    assert set(manifest["chosen_lr"]["standard"]) == {"mlp", "statnn", "mlp (standardized inputs)"}
    table = __import__("pandas").read_csv(out / "table3.csv", index_col="metanet")
    assert list(table.index) == ["mlp", "mlp (standardized inputs)", "statnn"]
    md = (out / "table3.md").read_text()
    assert "| MLP (standardized inputs) |" in md and "trained on raw inputs, fraction targets" in md
    assert len(list((out / "runs" / "standard" / "mlp-standardized-inputs").glob("*.json"))) == 4


def test_bad_preprocessing_and_options_are_refused_by_the_cli(tmp_path, capsys):
    store = synthetic_store(tmp_path / "zoo", {"standard": 8})
    assert cli("--zoo", store.path, "--inputs", "scaled") == 2
    assert "inputs='scaled': must be one of ('standardized', 'raw')" in capsys.readouterr().err
    assert cli("--zoo", store.path, "--metanets", "mlp", "--other-inputs", "statnn") == 2
    assert "other_inputs=('statnn',): must be a subset of metanets ['mlp']" in capsys.readouterr().err
    config = tmp_path / "bad.yaml"
    config.write_text("metanet_options: {deepsets: {chnk: 3}}\n")
    assert cli("--zoo", store.path, "--config", config) == 2
    assert "options of metanet 'deepsets': unknown ['chnk']" in capsys.readouterr().err


def test_aligned_inputs_match_a_permuted_copy_of_the_train_reference():
    from zoo.families.symmetry import RESNET8, permute_tensor

    w = member_weights("standard", range(8))
    ids = np.array([f"m{i}" for i in range(8)])
    split = split_members(list(ids))
    ref_row = split.train[np.argmin(ids[split.train])]
    other = next(r for r in split.test if r != ref_row)
    lay = zoo.layout(zoo.build("standard"))
    parts = lay.split(torch.from_numpy(w[ref_row]))
    perms = RESNET8.random(5)
    w[other] = torch.cat([permute_tensor(parts[t.name].reshape(t.shape), RESNET8.axes_of(t.name), perms).reshape(-1)
                          for t in lay.tensors]).numpy()  # the reference's function, channels shuffled
    assert not np.allclose(w[other], w[ref_row])
    y = np.linspace(0.2, 0.6, 8)
    data = prepare(w, y, ids, lay, family="standard", inputs_rule="raw", targets_rule="fraction", aligned=True)
    row = {m: i for i, m in enumerate(data.member_ids)}
    np.testing.assert_array_equal(data.x[row[ids[other]]], data.x[row[ids[ref_row]]])
    np.testing.assert_array_equal(data.x[row[ids[ref_row]]], w[ref_row])  # the reference aligns to itself
    assert data.alignment["reference"] == ids[ref_row] and data.alignment["members"] == 8
    assert data.alignment["seconds_per_member"] > 0 and np.array_equal(data.y, y[[int(m[1:]) for m in data.member_ids]])


def test_aligned_inputs_are_refused_for_asymmetric_families():
    w = member_weights("w_asym", range(6))
    with pytest.raises(ValueError, match="aligned=True for family='w_asym'.*allowed: standard"):
        prepare(w, np.linspace(0, 1, 6), [f"m{i}" for i in range(6)], zoo.layout(zoo.build("w_asym")),
                family="w_asym", aligned=True)


def test_aligned_mlp_row_trains_on_symmetric_families_only(tmp_path, capsys):
    store = synthetic_store(tmp_path / "zoo", {"standard": 8, "w_asym": 8}, layouts=None)
    out = tmp_path / "out"
    assert cli("--zoo", store.path, "--out", out, "--metanets", "mlp", "--aligned", "mlp", "--epochs", 1,
               "--lrs", "1e-3", "--runs", 2) == 0
    assert "row 'mlp (aligned)' skipped for w_asym" in capsys.readouterr().err
    runs = json.loads((out / "runs.json").read_text())
    aligned = [r for r in runs if r["row"] == "mlp (aligned)"]
    assert {r["family"] for r in aligned} == {"standard"} and len(aligned) == 2
    plain = {r["index"]: r for r in runs if r["row"] == "mlp" and r["family"] == "standard"}
    for r in aligned:  # paired seeds, other inputs
        assert r["seed"] == plain[r["index"]]["seed"] and r["test_pred"] != plain[r["index"]]["test_pred"]
    manifest = json.loads((out / "manifest.json").read_text())
    reference = manifest["families"]["standard"]["alignment"]["reference"]
    assert {r["alignment"]["reference"] for r in aligned} == {reference}
    table = __import__("pandas").read_csv(out / "table3.csv", index_col="metanet")
    assert list(table.index) == ["mlp", "mlp (aligned)"]
    assert table.loc["mlp (aligned)", "standard_align_s"] > 0 and math.isnan(table.loc["mlp (aligned)", "w_asym_r2_mean"])
    assert math.isnan(table.loc["mlp", "standard_align_s"])
    md = (out / "table3.md").read_text()
    assert "| MLP (aligned) |" in md and f"to member {reference}" in md and "s per member" in md
    assert "MLP (aligned)" in (out / "table3.tex").read_text()
    assert cli("--zoo", store.path, "--metanets", "mlp", "--aligned", "statnn") == 2
