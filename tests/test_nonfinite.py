"""Non-finite steps (Recipe.nonfinite): "skip" (the companion's GradScaler) and "freeze", on the
resident and packed engines (CPU, tiny real data), the store, resume and the report."""
import dataclasses
import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch

import zoo.train.common as common
import zoo.train.packed as packed
from zoo import sample_member, store
from zoo.recipe import LEGACY, Recipe
from zoo.train import new_member, resident, resident_batches, train_epoch, train_member
from zoo.train.packed import Pack, train_pack
from pipelines.report import zoo_table

TINY = Recipe(batch_size=32, n_train=128, n_test=100, epochs=2, warmup_epochs=0.5, checkpoints=(0, 1, 2))
STEPS = 4  # TINY's steps per epoch
BAD = 1  # the member whose loss is poisoned


def members(n=3):
    spread = [(0.02, 0.1, 0.2), (0.01, 1e-3, 0.0), (0.008, 1e-5, 0.1)]
    return [dataclasses.replace(sample_member(0, i, "standard"), lr=lr, weight_decay=wd, label_smoothing=s,
                                member_id="") for i, (lr, wd, s) in zip(range(n), spread)]


def poison(monkeypatch, module, call: int, row: int | None = None):
    """Make the `call`-th training forward's input NaN (row `row` of a pack's [N, B, ...] input, or
    all of it), through `module`'s `normalize`; evaluation has its own and is untouched."""
    calls, normalize = itertools.count(), module.normalize

    def poisoned(x):
        out = normalize(x)
        if next(calls) == call:
            out = out.clone()
            out[slice(None) if row is None else row] = math.nan
        return out

    monkeypatch.setattr(module, "normalize", poisoned)


def train(engine: str, cfgs, recipe: Recipe, data):
    if engine == "packed":
        return train_pack(cfgs, data, recipe)
    return [train_member(c, data, recipe) for c in cfgs]


@pytest.fixture(scope="module")
def clean(cifar):
    """members() trained without a non-finite step, per engine (the same under either policy)."""
    return {e: train(e, members(), TINY, cifar) for e in ("resident", "packed")}


def poison_epoch_1(monkeypatch, engine: str) -> None:
    """Poison member BAD's first step of epoch 1 (resident members train one after another)."""
    if engine == "packed":
        poison(monkeypatch, packed, STEPS, row=BAD)
    else:
        poison(monkeypatch, common, BAD * 2 * STEPS + STEPS)


def same(a, b) -> None:
    np.testing.assert_array_equal(a.params_final, b.params_final)
    assert a.metrics == b.metrics and a.status == b.status and a.diverged_epoch == b.diverged_epoch
    assert sorted(a.checkpoints) == sorted(b.checkpoints)


# --- the option -------------------------------------------------------------------------------

def test_nonfinite_defaults_to_the_companion_and_is_validated():
    assert Recipe().nonfinite == "skip" and Recipe(nonfinite="freeze").overrides() == {"nonfinite": "freeze"}
    with pytest.raises(ValueError, match=r"^nonfinite='clip': must be one of \('skip', 'freeze'\)$"):
        Recipe(nonfinite="clip")
    assert LEGACY["nonfinite"] == "freeze"  # what zoos made before the field did
    old = {k: v for k, v in Recipe().to_dict().items() if k not in ("nonfinite", "init")}
    assert Recipe.recorded(old).nonfinite == "freeze" and Recipe.recorded(old).init == "kaiming_normal"
    assert Recipe.recorded(Recipe().to_dict()) == Recipe()


# --- one step: what a skipped step leaves -------------------------------------------------------

def optimizer_state(net, opt):
    params = list(net.parameters())
    state = [opt.state[p] for p in params]
    return [torch.cat([t.detach().reshape(-1) for t in ts]) for ts in
            (params, [s["exp_avg"] for s in state], [s["exp_avg_sq"] for s in state], [s["step"] for s in state])]


@pytest.mark.parametrize("nonfinite, kept", [("skip", [0, 2, 3]), ("freeze", [0])])
def test_resident_non_finite_step_is_as_if_it_were_not_there(cifar, monkeypatch, nonfinite, kept):
    """GradScaler's skip: a poisoned step leaves params, AdamW moments and step count bit for bit
    as training on the other batches alone does ("skip"); "freeze" also drops every later step."""
    cfg, res = members()[0], resident(cifar, TINY, "cpu")
    batches = list(resident_batches(res, TINY, cfg.seed, 0))
    lrs = np.array([1e-3, 2e-3, 3e-3, 4e-3])
    net, opt = new_member(cfg, TINY, asym_seed=0, device="cpu")
    ref_net, ref_opt = new_member(cfg, TINY, asym_seed=0, device="cpu")
    assert not train_epoch(ref_net, ref_opt, [batches[i] for i in kept], lrs[kept], 0.0, None, nonfinite=nonfinite)
    poison(monkeypatch, common, 1)
    assert train_epoch(net, opt, batches, lrs, 0.0, None, nonfinite=nonfinite)
    for a, b in zip(optimizer_state(net, opt), optimizer_state(ref_net, ref_opt)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("nonfinite", ["skip", "freeze"])
def test_packed_non_finite_step_leaves_the_member_and_spares_its_pack_mates(cifar, monkeypatch, nonfinite):
    """The poisoned member's params, m, v and step count stay bit for bit through its bad step
    (and every later one under "freeze"); its pack-mates' equal a pack without the poison."""
    recipe, res = dataclasses.replace(TINY, nonfinite=nonfinite), resident(cifar, TINY, "cpu")
    ref, pack = Pack(members(), recipe, res), Pack(members(), recipe, res)
    factors = recipe.lr_factors(2, STEPS)[:STEPS]
    ref.train_epoch(0, factors)
    poison(monkeypatch, packed, 1, row=BAD)
    pack._load_epoch(0, factors)
    rows = lambda: [t[BAD].clone() for t in (pack.buf, pack.m, pack.v, pack.t)]
    for s in range(STEPS):
        before = rows()
        pack._step()
        frozen = s == 1 or (s > 1 and nonfinite == "freeze")
        assert all(torch.equal(a, b) for a, b in zip(before, rows())) == frozen, s
    assert pack.diverged_at.tolist() == [-1, 0, -1] and pack.active.tolist() == [True, nonfinite == "skip", True]
    assert pack.t.tolist() == [STEPS, STEPS - 1 if nonfinite == "skip" else 1, STEPS]
    for a, b in zip((pack.buf, pack.m, pack.v), (ref.buf, ref.m, ref.v)):
        assert torch.equal(a[[0, 2]], b[[0, 2]])


# --- a whole member: what is recorded -----------------------------------------------------------

@pytest.mark.parametrize("engine", ["resident", "packed"])
def test_skip_trains_on_and_records_the_first_non_finite_epoch(cifar, clean, monkeypatch, engine):
    poison_epoch_1(monkeypatch, engine)
    got = train(engine, members(), TINY, cifar)
    bad, ref = got[BAD], clean[engine][BAD]
    assert bad.status == "ok" and bad.diverged_epoch == 1 and all(math.isfinite(v) for v in bad.metrics.values())
    assert sorted(bad.checkpoints) == [0, 1, 2] and np.isfinite(bad.params_final).all()
    np.testing.assert_array_equal(bad.checkpoints[1][0], ref.checkpoints[1][0])  # before the bad epoch
    assert not np.array_equal(bad.params_final, ref.params_final)  # one step fewer,
    assert not np.array_equal(bad.params_final, bad.checkpoints[1][0])  # then trained on
    for i in (0, 2):
        same(got[i], clean[engine][i])


@pytest.mark.parametrize("engine", ["resident", "packed"])
def test_freeze_stops_the_member_at_its_first_non_finite_step(cifar, clean, monkeypatch, engine):
    poison_epoch_1(monkeypatch, engine)
    got = train(engine, members(), dataclasses.replace(TINY, nonfinite="freeze"), cifar)
    bad, ref = got[BAD], clean[engine][BAD]
    assert bad.status == "diverged" and bad.diverged_epoch == 1 and all(math.isnan(v) for v in bad.metrics.values())
    assert sorted(bad.checkpoints) == [0, 1]
    np.testing.assert_array_equal(bad.params_final, ref.checkpoints[1][0])  # the bad step was epoch 1's first
    for i in (0, 2):
        same(got[i], clean[engine][i])


@pytest.mark.parametrize("engine", ["resident", "packed"])
def test_skip_calls_a_member_diverged_when_its_final_weights_are_non_finite(cifar, clean, tmp_path, engine):
    """lr * weight decay overflows float32 on the first step with lr > 0: a taken step (finite loss
    and gradient) leaves non-finite weights, every later one is skipped. The store keeps them."""
    cfgs = members()
    cfgs[BAD] = dataclasses.replace(cfgs[BAD], lr=1e38, weight_decay=1e3, member_id="")
    got = train(engine, cfgs, TINY, cifar)
    bad = got[BAD]
    assert bad.status == "diverged" and bad.diverged_epoch == 0 and all(math.isnan(v) for v in bad.metrics.values())
    assert not np.isfinite(bad.params_final).all() and sorted(bad.checkpoints) == [0, 1, 2]
    for i in (0, 2):
        same(got[i], clean[engine][i])
    z = store.init_zoo(tmp_path / "zoo", zoo_seed=0, families={"standard": 0}, recipe=TINY.to_dict(),
                       recipe_overrides=TINY.overrides(), data={"sha256": bad.data_sha, "name": "cifar"})
    store.commit(z, got)
    w, ids = store.open_zoo(z.path).weights("standard", which="final", status=None)
    np.testing.assert_array_equal(w[list(ids).index(bad.config.member_id)], bad.params_final)
    assert store.verify(z.path, move=False).clean


# --- resume and the report ---------------------------------------------------------------------

def test_resume_refuses_a_changed_nonfinite_and_reads_old_zoos_as_freeze(tmp_path):
    def make(path, recipe):
        return store.init_zoo(path, zoo_seed=0, families={"standard": 0}, recipe=recipe, recipe_overrides={},
                              data={"sha256": "d" * 64, "name": "synthetic"})

    skip, freeze = Recipe().to_dict(), Recipe(nonfinite="freeze").to_dict()
    make(tmp_path / "new", skip)
    with pytest.raises(store.ManifestMismatch, match="recipe.nonfinite: 'skip' in the zoo, 'freeze' now"):
        make(tmp_path / "new", freeze)
    make(tmp_path / "old", {k: v for k, v in freeze.items() if k != "nonfinite"})  # made before the field
    make(tmp_path / "old", freeze)  # resumes: it was made freezing
    with pytest.raises(store.ManifestMismatch, match="recipe.nonfinite: 'freeze' in the zoo, 'skip' now"):
        make(tmp_path / "old", skip)


def test_zoo_table_counts_non_finite_steps_and_final_weights():
    members = pd.DataFrame({"family": ["sigma_asym"] * 4, "status": ["ok", "ok", "diverged", "ok"],
                            "diverged_epoch": pd.array([None, 3, 1, None], dtype="Int64"),
                            "test_acc": [0.5, 0.1, math.nan, 0.7], "train_acc": [0.5, 0.1, math.nan, 0.7]})
    skip = zoo_table(members, 4, "skip")
    assert "| non-finite step (any epoch) | final weights non-finite |" in skip
    assert "| sigma_asym | 4 | 4 | 3 | 1 | 2 | 1 | 1 |" in skip and "sigma_asym 24" in skip
    freeze = zoo_table(members.assign(status=["ok", "diverged", "diverged", "ok"]), 4, "freeze")
    assert "| sigma_asym | 4 | 4 | 2 | 2 | 2 | n/a | 0 |" in freeze and "nonfinite: freeze" in freeze
