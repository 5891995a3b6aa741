import dataclasses

import numpy as np
import pytest

from zoo import MemberConfig, sample_member
from conftest import run_python


def test_sampler_is_pure_across_processes_and_orders():
    code = "import zoo; print([zoo.sample_member(7, i, 'w_asym').member_id for i in (5, 0, 3)])"
    here = str([sample_member(7, i, "w_asym").member_id for i in (5, 0, 3)])
    assert run_python(code) == here
    assert sample_member(7, 3) == sample_member(7, 3)
    reverse = [sample_member(7, i) for i in reversed(range(4))][::-1]
    assert reverse == [sample_member(7, i) for i in range(4)]


def test_sampled_ranges_follow_table_8():
    cfgs = [sample_member(0, i) for i in range(2000)]
    lr = np.array([c.lr for c in cfgs])
    wd = np.array([c.weight_decay for c in cfgs])
    ls = np.array([c.label_smoothing for c in cfgs])
    ep = np.array([c.epochs for c in cfgs])
    assert 0.005 <= lr.min() and lr.max() <= 0.5
    assert 1e-5 <= wd.min() and wd.max() <= 1e-1
    assert 0 <= ls.min() and ls.max() <= 0.2
    assert ep.min() == 10 and ep.max() == 40
    # log-uniform: the exponent is uniform, so its mean sits mid-range
    assert abs(np.log10(lr / 0.5).mean() + 1.0) < 0.05
    assert abs(np.log10(wd).mean() + 3.0) < 0.1


def test_member_ids_are_unique_and_family_specific():
    ids = {sample_member(0, i, f).member_id for i in range(300) for f in ("standard", "w_asym")}
    assert len(ids) == 600
    a, b = sample_member(0, 4, "standard"), sample_member(0, 4, "w_asym")
    assert (a.lr, a.epochs, a.seed) == (b.lr, b.epochs, b.seed)  # paired design across families
    assert sample_member(1, 4).member_id != a.member_id


@pytest.mark.parametrize("field,value,allowed", [
    ("lr", 0.0, "> 0"), ("lr", float("nan"), "> 0"), ("label_smoothing", 1.0, r"\[0, 1\)"),
    ("epochs", 0, ">= 1"), ("weight_decay", -1.0, ">= 0"), ("family", "vit", "allowed"),
])
def test_config_validation_names_field_value_and_range(field, value, allowed):
    good = sample_member(0, 0)
    with pytest.raises(ValueError, match=rf"{field}=.*{allowed}"):
        dataclasses.replace(good, **{field: value})


def test_member_id_cannot_be_forged():
    good = sample_member(0, 0)
    with pytest.raises(ValueError, match="member_id"):
        MemberConfig(**dict(good.hparams(), member_id="0" * 16))
    assert MemberConfig(**good.hparams()) == good


def test_replicate_zero_keeps_the_id_and_seed_of_zoos_made_before_replicates():
    a = sample_member(0, 3, "standard")
    assert a == sample_member(0, 3, "standard", 0) and a.replicate == 0
    assert (a.member_id, a.seed) == ("212000769a9263c6", 2759024241435433886)  # as the code before replicates made it


def test_replicates_differ_from_their_member_only_in_seed_and_id():
    base = sample_member(7, 5, "w_asym")
    reps = [sample_member(7, 5, "w_asym", r) for r in (1, 2)]
    for rep in reps:
        same = {k: v for k, v in rep.hparams().items() if k not in ("seed", "replicate")}
        assert same == {k: v for k, v in base.hparams().items() if k not in ("seed", "replicate")}
    assert len({base.seed, *(r.seed for r in reps)}) == 3 and len({base.member_id, *(r.member_id for r in reps)}) == 3
    code = "import zoo; print([zoo.sample_member(7, 5, 'w_asym', r).seed for r in (2, 1)])"
    assert run_python(code) == str([reps[1].seed, reps[0].seed])
    with pytest.raises(ValueError, match="replicate=-1.*an int >= 0"):
        sample_member(7, 5, "w_asym", -1)
