import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

import zoo
from pipelines import mli

A25 = mli.alpha_grid(25)


def metrics_of(losses, alphas=A25) -> dict:
    return {k: v[0] for k, v in mli.mli_metrics(alphas, np.asarray(losses)[None]).items()}


def test_convex_decreasing_curve_is_monotonic_and_fully_convex():
    m = metrics_of(np.exp(-4 * A25) + 0.5)
    assert m["delta"] < 0 and m["monotonic"]
    assert m["local"] == 1.0 and m["global"] == 1.0


def test_bump_gives_positive_delta():
    bump = 0.3 * np.exp(-(((A25 - 0.5) / 0.08) ** 2))
    losses = np.exp(-4 * A25) + bump
    m = metrics_of(losses)
    assert m["delta"] == pytest.approx(np.diff(losses).max()) and m["delta"] > 0.05
    assert not m["monotonic"] and m["local"] < 1


def test_concave_curve_has_global_convexity_zero():
    m = metrics_of(1 - A25**2)
    assert m["monotonic"] and m["global"] == 0.0 and m["local"] == 0.0


def test_global_convexity_uses_the_chord_between_endpoints_not_the_first_two_points():
    # diffs -.6 .2 -.5 -.1; second differences .8 -.7 .4; chord through (0, 1) and (1, 0): .75 .5 .25.
    # The companion code's line 1 - .6 * alpha lies above every interior point: it says 1.
    m = metrics_of([1.0, 0.4, 0.6, 0.1, 0.0], mli.alpha_grid(5))
    assert m["delta"] == pytest.approx(0.2) and not m["monotonic"]
    assert m["local"] == pytest.approx(2 / 3) and m["global"] == pytest.approx(2 / 3)
    assert m["global_line"] == 1.0


@pytest.mark.parametrize("losses, chord, line", [
    ([1.0, 0.99, 0.98, 0.5, 0.0], 0.0, 1.0),  # a plateau, then the drop: above the chord, below the flat line
    ([1.0, 0.2, 0.9, 0.95, 0.95], 1.0, 1 / 3),  # line 1 - .8 alpha: .8 .6 .4; chord .9875 .975 .9625
    ([1.0, 1.2, 0.6, 0.3, 0.0], 0.0, 2 / 3),  # a rising first step tilts the line up: 1.05 1.1 1.15; chord .75 .5 .25
])
def test_chord_and_companion_line_disagree_on_hand_made_curves(losses, chord, line):
    m = metrics_of(losses, mli.alpha_grid(5))
    assert m["global"] == pytest.approx(chord) and m["global_line"] == pytest.approx(line)


def test_companion_line_scores_every_monotonic_curve_one_the_chord_does_not():
    rng = np.random.default_rng(0)
    steps = rng.exponential(1.0, (200, 24)) * rng.uniform(0, 1, (200, 24)) ** rng.uniform(0, 4, (200, 1))
    losses = 3.0 - np.concatenate([np.zeros((200, 1)), steps.cumsum(axis=1)], axis=1)  # non-increasing
    m = mli.mli_metrics(A25, losses)
    assert m["monotonic"].all() and (m["global_line"] == 1.0).all()
    assert (m["global"] < 1.0).sum() > 20  # the chord is a real test on the same curves


@pytest.mark.parametrize("alphas, losses, field", [
    (np.array([0.0, 0.2, 1.0]), [[1.0, 0.5, 0.0]], "evenly spaced"),
    (mli.alpha_grid(3), [[1.0, np.nan, 0.0]], "finite"),
    (mli.alpha_grid(4), [[1.0, 0.5, 0.0]], "losses"),
    (mli.alpha_grid(2), [[1.0, 0.0]], "A >= 3"),
])
def test_metrics_reject_bad_curves(alphas, losses, field):
    with pytest.raises(ValueError, match=field):
        mli.mli_metrics(alphas, losses)


def test_interpolation_is_exact_at_the_ends_and_linear_between():
    gen = torch.Generator().manual_seed(0)
    theta0, theta_t = torch.randn(3, 10, generator=gen), torch.randn(3, 10, generator=gen)
    alphas = torch.tensor(mli.alpha_grid(5))
    grid = mli.interpolate(theta0, theta_t, alphas, torch.arange(15)).view(3, 5, 10)
    assert torch.equal(grid[:, 0], theta0) and torch.equal(grid[:, -1], theta_t)
    assert torch.allclose(grid[:, 1], 0.75 * theta0 + 0.25 * theta_t)
    assert torch.equal(mli.interpolate(theta0, theta_t, alphas, torch.tensor([7])), grid[1, 2:3])


def member_pair(net, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A member's init and a 'trained' vector some way off it: [P] each."""
    theta0 = zoo.flatten(zoo.init_weights(net, seed))
    step = torch.randn(theta0.shape, generator=torch.Generator().manual_seed(seed + 100))
    return theta0, theta0 + 0.05 * step


@pytest.mark.parametrize("family", list(zoo.FAMILIES))
def test_packed_curves_equal_one_point_at_a_time(family):
    net = zoo.build(family, asym_seed=3)
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    pairs = [member_pair(net, s) for s in (0, 1)]
    theta0, theta_t = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=gen), torch.randint(0, 10, (24,), generator=gen)
    args = (theta0, theta_t, torch.tensor([0.0, 0.15]), torch.tensor(mli.alpha_grid(5)), x, y)
    packed = mli.curve_losses(net, *args, points=4, batch=10)  # per member: a pass of 4 alphas, then one of 1
    single = mli.curve_losses(net, *args, points=1, batch=10)
    assert packed.shape == (2, 5) and torch.isfinite(packed).all()
    torch.testing.assert_close(packed, single, rtol=1e-5, atol=1e-5)
    alone = mli.curve_losses(net, theta0[1:], theta_t[1:], torch.tensor([0.15]), *args[3:], points=4, batch=10)
    assert torch.equal(alone[0], packed[1])  # bit for bit: a curve does not depend on who shares its task
    assert all(torch.equal(v, buffers[k]) for k, v in net.named_buffers())  # fixed entries and F untouched


def test_per_alpha_draws_are_addressed_by_seed_member_and_alpha():
    from zoo.recipe import Recipe

    draws = mli.AlphaDraws(Recipe(), seed=3, members=(5, 7))
    same = [torch.equal(a, b) for a, b in zip(draws.draw(1, 2, 64), mli.AlphaDraws(Recipe(), 3, (7,)).draw(0, 2, 64))]
    assert all(same)  # member index 7 at alpha 2, wherever it sits in a task
    for other in (draws.draw(1, 3, 64), draws.draw(0, 2, 64), mli.AlphaDraws(Recipe(), 4, (5, 7)).draw(1, 2, 64)):
        assert not torch.equal(other[1], draws.draw(1, 2, 64)[1])  # another alpha, member or eval_seed
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(draws.view(x, 1, 2), draws.view(x, 1, 2)) and not torch.equal(draws.view(x, 1, 2), x)


def test_per_alpha_curves_packed_equal_one_point_at_a_time_and_differ_from_clean():
    from zoo.recipe import Recipe

    net = zoo.build("w_asym", asym_seed=3)
    theta0, theta_t = (torch.stack(t) for t in zip(*(member_pair(net, s) for s in (0, 1))))
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=gen), torch.randint(0, 10, (24,), generator=gen)
    views = mli.AlphaDraws(Recipe(), seed=0, members=(0, 1))
    args = (theta0, theta_t, torch.tensor([0.0, 0.15]), torch.tensor(mli.alpha_grid(5)), x, y)
    packed = mli.curve_losses(net, *args, points=4, batch=10, views=views)
    single = mli.curve_losses(net, *args, points=1, batch=10, views=views)
    torch.testing.assert_close(packed, single, rtol=1e-5, atol=1e-5)
    flat = mli.interpolate(theta0, theta_t, torch.tensor(mli.alpha_grid(5)), torch.tensor([7]))[0]  # member 1, alpha 2
    assert single[1, 2].item() == pytest.approx(mli.single_loss(net, flat, views.view(x, 1, 2), y, 0.15, batch=10))
    assert not torch.allclose(single, mli.curve_losses(net, *args, points=1, batch=10), rtol=1e-3, atol=0)


def test_evaluator_refuses_a_network_whose_fixed_pieces_are_not_the_zoos():
    from zoo.families import fixed_digest

    net = zoo.build("w_asym", asym_seed=3)
    theta0, theta_t = (t[None].numpy() for t in member_pair(net, 0))
    rows = pd.DataFrame({"member_id": ["m0"], "family": ["w_asym"], "index": [0], "label_smoothing": [0.0]})
    x, y = torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.long)
    evaluate = mli.Evaluator(x, y, mli.resolved(mli.MliConfig(zoo="z", alphas=3, device="cpu")))
    assert evaluate(mli.Task("w_asym", 3, rows, theta0, theta_t, fixed_digest(net))).shape == (1, 3)
    with pytest.raises(ValueError, match=r"family='w_asym': this worker builds .* but the zoo's are 000000000000\.\.\."):
        evaluate(mli.Task("w_asym", 3, rows, theta0, theta_t, "0" * 64))


def test_config_refuses_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="MliConfig: unknown keys \\['alpha'\\]"):
        mli.MliConfig.from_dict({"zoo": "z", "alpha": 25})
    for bad, says in (({"members": 0}, "members=0"), ({"alphas": 2}, "alphas=2"), ({"device": "tpu"}, "device='tpu'"),
                      ({"autocast": True, "device": "cpu"}, "autocast=True"), ({"families": ["resnet"]}, "family='resnet'"),
                      ({"eval_data": "augmented"}, "eval_data='augmented'.*augmented_per_alpha")):
        with pytest.raises(ValueError, match=says):
            mli.MliConfig(zoo="z", **bad)


def test_device_auto_resolves_to_cuda_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = mli.resolved(mli.MliConfig(zoo="z", workers=2))
    assert cfg.device == "cuda" and cfg.n_workers() == 1 and cfg.n_points() == mli.CUDA_POINTS
    assert mli.resolved(mli.MliConfig(zoo="z", autocast=True)).autocast
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = mli.resolved(mli.MliConfig(zoo="z", workers=2))
    assert cfg.device == "cpu" and cfg.n_workers() == 2 and cfg.n_points() == 1  # the process pool
    with pytest.raises(ValueError, match="autocast=True: must be False when device 'auto' resolves to cpu"):
        mli.resolved(mli.MliConfig(zoo="z", autocast=True))


def test_flags_derive_from_the_config():
    from pipelines import cli
    from pipelines.mli_cmd import mli_config

    args = cli.parser().parse_args(["mli", "--zoo", "z", "--families", "standard,w_asym", "--eval-data",
                                    "augmented_per_alpha", "--alphas", "7", "--autocast", "--device", "cuda"])
    assert mli_config(args) == mli.MliConfig(zoo="z", families=("standard", "w_asym"), eval_data="augmented_per_alpha",
                                             alphas=7, autocast=True, device="cuda")
    assert mli_config(cli.parser().parse_args(["mli", "--zoo", "z"])) == mli.MliConfig(zoo="z")


def curve_frame(family: str, losses: np.ndarray, first: int = 0) -> pd.DataFrame:
    """Curve rows of `len(losses)` ok members of `family` on the 25-point grid."""
    n = len(losses)
    return pd.DataFrame({"member_id": [f"{family}-{first + i:03d}" for i in range(n)], "family": family,
                         "index": range(first, first + n), "status": "ok", "alphas": [A25] * n,
                         "losses": list(losses), "train_loss_recorded": losses[:, -1]})


def test_table_is_computed_from_the_stored_curves(tmp_path):
    rng = np.random.default_rng(0)
    bumps = rng.uniform(0, 0.4, (12, 1)) * np.exp(-(((A25 - rng.uniform(0.2, 0.6, (12, 1))) / 0.1) ** 2))
    standard = 2.3 * (1 - A25) ** 2 + 0.4 + bumps
    w_asym = 2.3 * (1 - A25) ** 2 + 0.4 + rng.normal(0, 0.002, (10, 25))
    mli.write_curves(tmp_path, curve_frame("standard", standard[:7]))
    mli.write_curves(tmp_path, curve_frame("standard", standard[7:], first=7))
    mli.write_curves(tmp_path, curve_frame("w_asym", w_asym))
    diverged = curve_frame("w_asym", w_asym[:1], first=10).assign(status="diverged", alphas=None, losses=None)
    mli.write_curves(tmp_path, diverged)
    (tmp_path / "family=w_asym" / ".part-x.parquet.tmp").write_bytes(b"half-written")

    curves = mli.read_curves(tmp_path)
    assert len(curves) == 23
    table = mli.table4(curves).set_index("family")
    for fam, losses in (("standard", standard), ("w_asym", w_asym)):
        m, row = mli.mli_metrics(A25, losses), table.loc[fam]
        assert row.n == len(losses)
        assert row.delta_mean == pytest.approx(m["delta"].mean()) and row.delta_std == pytest.approx(m["delta"].std(ddof=1))
        assert row.monotonic_pct == pytest.approx(100 * m["monotonic"].mean())
        assert row.local_mean == pytest.approx(m["local"].mean()) and row.global_mean == pytest.approx(m["global"].mean())
        assert row.global_line_mean == pytest.approx(m["global_line"].mean())
        assert row.global_line_std == pytest.approx(m["global_line"].std(ddof=1))
    assert table.loc["w_asym"].n_diverged == 1 and table.loc["standard"].n_diverged == 0
    m_std, m_w = mli.mli_metrics(A25, standard), mli.mli_metrics(A25, w_asym)
    assert table.loc["w_asym"].p_local == pytest.approx(stats.ttest_ind(m_w["local"], m_std["local"]).pvalue)
    with warnings.catch_warnings():  # every line score is 1 here: constant samples, scipy warns, p is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        p_line = stats.ttest_ind(m_w["global_line"], m_std["global_line"]).pvalue
    assert table.loc["w_asym"].p_global_line == pytest.approx(p_line, nan_ok=True)
    assert np.isnan(table.loc["standard"].p_delta)

    mli.write_tables(mli.table4(curves), tmp_path, "about these curves")
    pd.testing.assert_frame_equal(mli.read_table4(tmp_path), mli.table4(curves), check_dtype=False)
    side = mli.beside_paper(mli.table4(curves)).set_index(["family", "column"])
    assert side.loc[("w_asym", "n"), "ours"] == 10 and side.loc[("w_asym", "monotonic_pct"), "paper"] == 100.0
    assert side.loc[("standard", "global_line_mean"), "paper"] == 0.823  # the paper's numbers fit the line
    assert np.isnan(side.loc[("standard", "global_mean"), "paper"])
    md = (tmp_path / "table4.md").read_text()
    assert "| W-Asym ResNet-8 | 10 | 1 | 0 |" in md and "about these curves" in md and "0.079 ± 0.109" in md
    assert "global convexity (paper's chord) ↑ | global convexity (companion's line) ↑ |" in md
    assert "| 0.548 ± 0.139 | — | 0.823 ± 0.229 |" in md  # the paper's standard row: chord empty, line filled
    assert "p(global, chord) | p(global, line) |" in md
    tex = (tmp_path / "table4.tex").read_text()
    assert "\\toprule" in tex and "companion's line" in tex and tex.count("\\pm") == 2 * 4


def diverged_result(cfg, data_sha: str):
    """A member whose training went non-finite in epoch 0, as the engine records it."""
    from zoo.records import METRICS, MemberResult

    theta = zoo.flatten(zoo.init_weights(zoo.build(cfg.family), cfg.seed)).numpy()
    return MemberResult(cfg, "diverged", 0, {k: float("nan") for k in METRICS}, theta, theta, 0.0, "cpu", data_sha)


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory, cifar):
    """Two trained members of standard and of W-Asym (256 images, 1 epoch), one diverged W-Asym."""
    from zoo.recipe import Recipe
    from zoo.store import commit, init_zoo
    from zoo.train import train_member

    recipe = Recipe(n_train=256, n_test=128, batch_size=64, epochs=1)
    path = tmp_path_factory.mktemp("zoo")
    z = init_zoo(path, zoo_seed=0, families={"standard": 0, "w_asym": 1}, recipe=recipe.to_dict(),
                 recipe_overrides=recipe.overrides(), data=cifar.identity)
    for fam, asym_seed in (("standard", 0), ("w_asym", 1)):
        commit(z, [train_member(zoo.sample_member(0, i, fam), cifar, recipe, asym_seed=asym_seed) for i in range(2)])
    commit(z, [diverged_result(zoo.sample_member(0, 2, "w_asym"), cifar.identity["sha256"])])
    return path, recipe


def parquet_files(out) -> dict:
    return {p: p.stat().st_mtime_ns for p in sorted(out.rglob("*.parquet"))}


def test_stage_reproduces_recorded_losses_writes_outputs_and_resumes(tiny_zoo, cifar, cifar_root, capsys):
    from pipelines import cli
    from zoo.train.evaluate import evaluate_flat
    from zoo.store import open_zoo

    path, recipe = tiny_zoo
    assert cli.main(["mli", "--zoo", str(path), "--alphas", "7", "--workers", "2", "--data", str(cifar_root)]) == 0
    out, z = path / "mli", open_zoo(path)
    curves = mli.read_curves(out).merge(z.members(), on=["member_id", "family", "index", "status"])
    ok = curves[curves.status == "ok"]
    assert len(ok) == 4 and (curves.status == "diverged").sum() == 1
    train = recipe.apply_subset(cifar)
    x, y = torch.from_numpy(train.train_x), torch.from_numpy(train.train_y)
    for fam, asym_seed in (("standard", 0), ("w_asym", 1)):
        rows = ok[ok.family == fam].sort_values("index")
        end = np.array([losses[-1] for losses in rows.losses])
        np.testing.assert_allclose(end, rows.train_loss, rtol=1e-4)  # L(1) == the recorded train loss
        init, ids = z.weights(fam, "init")
        assert list(ids) == list(rows.member_id)
        start = evaluate_flat(zoo.build(fam, asym_seed), torch.from_numpy(init), x, y,
                              torch.tensor(rows.label_smoothing.to_numpy(), dtype=torch.float32))["loss"]
        np.testing.assert_allclose([losses[0] for losses in rows.losses], start.numpy(), rtol=1e-4)

    table = pd.read_csv(out / "table4.csv").set_index("family")
    assert table.n.to_dict() == {"standard": 2, "w_asym": 2} and table.n_diverged.to_dict() == {"standard": 0, "w_asym": 1}
    assert (out / "figure5.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "un-augmented" in (out / "table4.md").read_text()
    assert "symzoo mli: [5/5 100.0%]" in capsys.readouterr().err  # 4 curves evaluated, the diverged one counted
    measurement = json.loads((out / "manifest.json").read_text())["measurement"]
    assert measurement["eval_data"] == "clean" and "augmented" not in measurement

    before = parquet_files(out)
    legacy = json.loads((out / "manifest.json").read_text())  # written before eval_data: `augmented: false`
    legacy["measurement"] = {**{k: v for k, v in measurement.items() if k != "eval_data"}, "augmented": False}
    (out / "manifest.json").write_text(json.dumps(legacy))
    mli.run(mli.MliConfig(zoo=str(path), data=str(cifar_root), alphas=7, workers=1))
    assert parquet_files(out) == before  # resume: nothing re-evaluated, nothing rewritten
    assert "symzoo mli: [" not in capsys.readouterr().err  # nothing to do, no progress
    with pytest.raises(ValueError, match="measured otherwise"):
        mli.run(mli.MliConfig(zoo=str(path), data=str(cifar_root), alphas=7, n_eval=64, workers=1))


def test_augmented_subset_is_fixed_by_the_seed(tiny_zoo, cifar_root, tmp_path):
    path, recipe = tiny_zoo
    cfg = mli.MliConfig(zoo=str(path), out=str(tmp_path), data=str(cifar_root), families=("standard",), members=1,
                        alphas=3, n_eval=64, eval_data="augmented_fixed", workers=1)
    curves = mli.read_curves(mli.run(cfg))
    assert len(curves) == 1 and np.isfinite(curves.losses[0]).all()
    assert "augmented copy" in (tmp_path / "table4.md").read_text()
    x, y = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), torch.arange(8)
    a, b = mli.augmented_copy(x, y, recipe, 3), mli.augmented_copy(x, y, recipe, 3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], x[a[1]])


def test_stage_per_alpha_augmentation_is_recorded_and_reproducible(tiny_zoo, cifar_root, tmp_path):
    from pipelines.report import _mli_section
    from zoo.store import open_zoo

    path, recipe = tiny_zoo
    cfg = mli.MliConfig(zoo=str(path), out=str(tmp_path / "mli"), data=str(cifar_root), families=("standard",),
                        members=1, alphas=3, n_eval=64, eval_data="augmented_per_alpha", workers=1)
    losses = mli.read_curves(mli.run(cfg)).losses[0]
    z = open_zoo(path)
    member = z.members(family="standard").sort_values("index").iloc[0]
    x, y, about = mli.eval_set(z.manifest, cfg)
    net, (final, _) = zoo.build("standard", 0), z.weights("standard", "final")
    views = mli.AlphaDraws(recipe, cfg.eval_seed, (int(member["index"]),))
    want = mli.single_loss(net, torch.from_numpy(final[0]), views.view(x, 0, 2), y, member.label_smoothing)
    assert losses[2] == pytest.approx(want, rel=1e-6)  # L(1) on member 0's own draw for alpha index 2
    assert json.loads((tmp_path / "mli" / "manifest.json").read_text())["measurement"]["eval_data"] == "augmented_per_alpha"
    report = "\n".join(_mli_section(tmp_path))
    assert "eval_data: augmented_per_alpha" in report and "companion's line" in report
    with pytest.raises(ValueError, match="eval_data"):
        mli.run(mli.MliConfig(**{**cfg.__dict__, "eval_data": "clean"}))


def test_stage_runs_auto_on_cuda_when_there_is_one(tiny_zoo, cifar_root, tmp_path, monkeypatch):
    from pipelines.mli import stage

    class Stop(Exception):
        pass

    def capture(tasks, x, y, cfg, *args, **kwargs):
        raise Stop(cfg)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(stage, "evaluate_tasks", capture)  # stops before anything touches CUDA
    with pytest.raises(Stop) as stopped:
        mli.run(mli.MliConfig(zoo=str(tiny_zoo[0]), out=str(tmp_path), data=str(cifar_root), members=1, alphas=3))
    cfg = stopped.value.args[0]
    assert cfg.device == "cuda" and cfg.n_workers() == 1 and cfg.n_points() == mli.CUDA_POINTS
