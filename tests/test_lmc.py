"""Linear mode connectivity: replicates in the zoo, the barrier, and `symzoo lmc` end to end on a
tiny zoo with its resume. Statistical claims (which family has the lower barrier) live in the
report and benchmarks/lmc_speed.py, not here."""
import json

import numpy as np
import pandas as pd
import pytest

import zoo
from pipelines.lmc import ALIGNED, LmcConfig, barriers, read_curves, table1
from zoo.generate import GenerateConfig, plan_members

TINY_RECIPE = {"epochs": 1, "n_train": 256, "n_test": 256, "batch_size": 64, "init": "kaiming_normal"}  # smoke's


def lmc(*args) -> int:
    from pipelines.cli import main

    return main(["lmc", *map(str, args)])


@pytest.fixture(scope="module")
def replicate_zoo(tmp_path_factory, cifar_root):
    """2 members x 2 replicates per family, 1 epoch on 256 images (the smoke recipe)."""
    from zoo.generate import run

    path = str(tmp_path_factory.mktemp("lmc") / "zoo")
    run(GenerateConfig(zoo=path, members=2, replicates=2, executor="local", data=str(cifar_root), recipe=TINY_RECIPE))
    return path


def test_barrier_is_the_midpoint_loss_above_the_endpoints_mean():
    alphas = np.linspace(0, 1, 5)
    losses = np.array([[1.0, 2.0, 4.0, 2.0, 3.0],   # 4 - (1 + 3) / 2
                       [2.0, 1.5, 1.0, 1.5, 2.0],   # a valley: negative
                       [1.0, 1.25, 1.5, 1.75, 2.0]])  # a straight line: zero
    np.testing.assert_allclose(barriers(alphas, losses), [2.0, -1.0, 0.0])
    with pytest.raises(ValueError, match="A odd"):
        barriers(np.linspace(0, 1, 4), np.ones((1, 4)))
    with pytest.raises(ValueError, match="evenly spaced"):
        barriers([0.0, 0.3, 1.0], np.ones((1, 3)))


def test_table1_statistics_and_t_test_against_standard():
    alphas = list(np.linspace(0, 1, 3))
    rows = [("standard", "ok", [1.0, 3.0, 1.0]), ("standard", "ok", [1.0, 2.0, 1.0]), ("w_asym", "ok", [1.0, 1.0, 1.0]),
            ("w_asym", "ok", [2.0, 2.5, 2.0]), ("w_asym", "diverged", None)]
    curves = pd.DataFrame([{"variant": v, "pair": f"p{i}", "status": s, "alphas": alphas if c else None, "losses": c,
                            "align_s": np.nan} for i, (v, s, c) in enumerate(rows)])
    t = table1(curves).set_index("variant")
    assert t.loc["standard", "barrier_mean"] == pytest.approx(1.5) and t.loc["w_asym", "barrier_mean"] == pytest.approx(0.25)
    assert t.loc["standard", "barrier_std"] == pytest.approx(np.std([2.0, 1.0], ddof=1))
    assert t.loc["w_asym", "n"] == 2 and t.loc["w_asym", "n_diverged"] == 1
    assert 0 < t.loc["w_asym", "p_barrier"] < 1 and np.isnan(t.loc["standard", "p_barrier"])


@pytest.mark.parametrize("field,value,pattern", [("alphas", 24, "alphas=24.*odd int >= 3"),
                                                 ("pairs", 0, "pairs=0.*None or an int >= 1"),
                                                 ("align_iter", 0, "align_iter=0.*an int >= 1"),
                                                 ("families", ("resnet",), "family='resnet'.*allowed: standard")])
def test_config_refuses_bad_values_naming_the_field(field, value, pattern):
    with pytest.raises(ValueError, match=pattern):
        LmcConfig(zoo="z", **{field: value})


def test_replicates_are_planned_per_index_and_validated():
    plan = plan_members(0, ("standard",), 3, replicates=2, replicate_members=2)
    assert [(c.index, c.replicate) for c in plan] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]
    assert plan_members(0, ("standard",), 3) == plan_members(0, ("standard",), 3, replicates=1)
    with pytest.raises(ValueError, match="replicates"):
        GenerateConfig(zoo="z", members=2, replicates=0)
    with pytest.raises(ValueError, match="replicate_members.*members=2"):
        GenerateConfig(zoo="z", members=2, replicates=2, replicate_members=3)


def test_lmc_end_to_end_then_resume(replicate_zoo, cifar_root, tmp_path, capsys):
    z = zoo.open_zoo(replicate_zoo)
    assert z.manifest["replicates"] == 2 and len(z.members()) == 12
    out = tmp_path / "lmc"
    args = ["--zoo", replicate_zoo, "--data", cifar_root, "--out", out, "--alphas", 5, "--workers", 1]
    assert lmc(*args) == 0
    curves = read_curves(out)
    assert sorted(curves.variant.unique()) == sorted(["standard", ALIGNED, "sigma_asym", "w_asym"])
    assert len(curves) == 8 and (curves.status == "ok").all()
    recorded = z.members(columns=["member_id", "test_loss_plain"]).set_index("member_id").test_loss_plain
    for r in curves.itertuples():  # the endpoints are the members: an aligned member computes its own function
        assert r.losses[0] == pytest.approx(recorded[r.member_a], abs=1e-5)
        assert r.losses[-1] == pytest.approx(recorded[r.member_b], abs=1e-5)
    aligned = curves[curves.variant == ALIGNED]
    assert (aligned.align_s > 0).all() and curves[curves.variant != ALIGNED].align_s.isna().all()
    table = pd.read_csv(out / "table1.csv").set_index("variant")
    assert (table.n == 2).all() and set(table.index) == {"standard", ALIGNED, "sigma_asym", "w_asym"}
    md = (out / "table1.md").read_text()
    assert "Standard + weight matching" in md and "not a reproduction" in md.lower() and "ResNet-20" in md
    assert "plain (un-smoothed) cross-entropy" in md and (out / "figure3.png").stat().st_size > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["measurement"]["replicates"] == 2 and manifest["measurement"]["n_images"] == 256

    before = (out / "table1.csv").read_text()
    next(out.glob("variant=w_asym/*.parquet")).unlink()
    capsys.readouterr()
    assert lmc(*args) == 0
    assert "[8/8 100.0%]" in capsys.readouterr().err  # 2 pairs evaluated again, after the 6 kept
    assert len(read_curves(out)) == 8 and (out / "table1.csv").read_text() == before  # the same curves again
    assert lmc(*args[:-4], "--alphas", 7, "--workers", 1) == 2
    assert "measured otherwise" in capsys.readouterr().err


def test_other_studies_use_replicate_zero_only(replicate_zoo):
    from pipelines.mli import select_members

    z = zoo.open_zoo(replicate_zoo)
    picked = select_members(z, "standard", None)
    assert list(picked.member_id) == [zoo.sample_member(0, i, "standard").member_id for i in range(2)]


def test_a_zoo_without_replicates_is_refused(cifar_root, tmp_path, capsys):
    from zoo.store import init_zoo

    path = tmp_path / "zoo"
    init_zoo(path, zoo_seed=0, families={"standard": 0}, recipe={}, recipe_overrides={}, data={"sha256": "x"})
    assert lmc("--zoo", path, "--data", cifar_root, "--out", tmp_path / "o") == 2
    assert "replicates >= 2" in capsys.readouterr().err


def test_run_says_why_lmc_is_skipped():
    from pipelines.presets import load_preset
    from pipelines.run import RunConfig, lmc_skipped

    def config(preset, **generate):
        p = load_preset(preset)
        return RunConfig(preset=p, out="o", generate=p.config("generate", zoo="z", **generate))

    assert "has no lmc section" in lmc_skipped(config("demo"))
    assert "1 replicate per member" in lmc_skipped(config("gpu", replicates=1))
    assert lmc_skipped(config("gpu")) is None
