"""The training engine: recipe, addressed augmentation, resident and packed paths (tiny real data, CPU)."""
import dataclasses
import hashlib
import math
import warnings

import numpy as np
import pytest
import torch

from zoo import build, init_weights, sample_member
from zoo.train.augment import FILL, DrawPrefetcher, PackDraws, augment, draw_epoch, epoch_order
from zoo.train.evaluate import normalize
from zoo.train.vmap import packed_forward, stack_params, unstack_params
from zoo.train.grouped import grouped_forward, grouped_net
from zoo.layout import flatten, trainable_masks
from zoo.train.packed import (ADAM_BETAS, ADAM_EPS, LaggedFlag, Pack, activation_bytes, adamw_, auto_pack_size, estimate_peak_bytes,
                              split_packs, train_pack)
from zoo.recipe import Recipe
from zoo.records import METRICS
from zoo.train import resident, resident_batches, train_member, train_members
from conftest import run_python

TINY = Recipe(batch_size=32, n_train=128, n_test=100, epochs=2, warmup_epochs=0.5, checkpoints=(0, 1, 2))


def members(family, n=3):
    """Sampled members with lr / weight decay / smoothing spread wide, so a mix-up between
    members would show."""
    spread = [(0.3, 0.1, 0.2), (0.02, 1e-3, 0.0), (0.008, 1e-5, 0.1)]
    return [dataclasses.replace(sample_member(0, i, family), lr=lr, weight_decay=wd, label_smoothing=s,
                                member_id="") for i, (lr, wd, s) in zip(range(n), spread)]


def displacement_error(a, b) -> float:
    """||(b_final - b_init) - (a_final - a_init)|| / ||a_final - a_init||: relative disagreement of two
    training runs. Adam turns float noise on ~1e-9 gradients into visible steps of single entries,
    so elementwise equality is too strict; a mix-up of data, lr or decay gives O(1)."""
    da, db = a.params_final - a.params_init, b.params_final - b.params_init
    return float(np.linalg.norm(db - da) / np.linalg.norm(da))


# --- recipe ---------------------------------------------------------------------------------

def test_recipe_round_trip_and_overrides():
    r = Recipe(batch_size=64, epochs=3, checkpoints=[5, 0, 5])
    assert r.checkpoints == (0, 5)
    assert Recipe.from_dict(r.to_dict()) == r
    assert r.overrides() == {"batch_size": 64, "epochs": 3, "checkpoints": [0, 5]}
    assert Recipe().overrides() == {}
    assert r.member_epochs(sample_member(0, 0)) == 3
    assert Recipe().member_epochs(sample_member(0, 0)) == sample_member(0, 0).epochs


@pytest.mark.parametrize("bad, field", [
    ({"batch_size": 0}, "batch_size"), ({"translate": 17}, "translate"), ({"cutout": -1}, "cutout"),
    ({"precision": "fp16"}, "precision"), ({"checkpoints": (1, -2)}, "checkpoints"), ({"epochs": 0}, "epochs"),
    ({"flip": 1}, "flip"), ({"warmup_epochs": math.inf}, "warmup_epochs"), ({"lr": 0.1}, "unknown keys"),
])
def test_recipe_rejects_bad_input(bad, field):
    with pytest.raises(ValueError, match=field):
        Recipe.from_dict(bad)


def test_lr_schedule_is_the_triangle():
    f = Recipe(warmup_epochs=5).lr_factors(epochs=20, steps_per_epoch=10)
    assert f.shape == (200,) and f[0] == 0 and f.argmax() == 50 and f[50] == 1
    assert np.all(np.diff(f[:51]) > 0) and np.all(np.diff(f[50:]) < 0) and f[-1] == pytest.approx(1 / 150)
    short = Recipe(warmup_epochs=5).lr_factors(epochs=4, steps_per_epoch=10)  # peak moves to epochs / 2
    assert short.argmax() == 20 and short[20] == 1
    assert Recipe(warmup_epochs=0).lr_factors(epochs=2, steps_per_epoch=4)[0] == 1


def test_steps_per_epoch_refuses_a_batch_larger_than_the_data():
    assert Recipe(batch_size=32).steps_per_epoch(100) == 3  # drop_last
    with pytest.raises(ValueError, match="batch_size=512"):
        Recipe().steps_per_epoch(100)


# --- augmentation ----------------------------------------------------------------------------

def test_epoch_draws_are_addressed_and_in_range():
    r = Recipe(batch_size=100)
    a, b = draw_epoch(7, 3, 1050, r), draw_epoch(7, 3, 1050, r)
    for x, y in zip(dataclasses.astuple(a), dataclasses.astuple(b)):
        assert torch.equal(x, y)
    assert not torch.equal(a.order, draw_epoch(7, 4, 1050, r).order)
    assert not torch.equal(a.order, draw_epoch(8, 3, 1050, r).order)
    assert a.order.shape == (10, 100) and len(set(a.order.flatten().tolist())) == 1000  # drop_last
    assert torch.equal(a.order.flatten(), torch.from_numpy(epoch_order(7, 3, 1050)[:1000]))
    assert a.shift.min() == 0 and a.shift.max() == 4 and a.corner.min() == 0 and a.corner.max() == 28
    assert 0.45 < a.flip.float().mean() < 0.55


def test_augment_ops_are_flip_shift_and_square():
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    flip = torch.tensor([True, False, False])
    shift = torch.tensor([[2, 2], [0, 4], [2, 2]])  # centred, (-2, +2), centred
    corner = torch.tensor([[0, 0], [0, 0], [10, 20]])
    out = augment(x, flip, shift, corner, Recipe(cutout=0))
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[2], x[2])
    assert torch.equal(out[1, :, 2:, :30], x[1, :, :30, 2:])  # content moved down 2 and left 2
    assert (out[1, :, :2] == torch.tensor(FILL, dtype=torch.uint8).view(3, 1, 1)).all()
    cut = augment(x, flip, shift, corner, Recipe(flip=False, translate=0))
    changed = (cut[2] != x[2]).any(0)
    assert changed[10:14, 20:24].sum() >= 15 and changed.sum() == changed[10:14, 20:24].sum()
    assert (cut[2, :, 10:14, 20:24] == torch.tensor(FILL, dtype=torch.uint8).view(3, 1, 1)).all()


def test_resident_batches_follow_the_addressed_order(cifar):
    r = dataclasses.replace(TINY, flip=False, translate=0, cutout=0)
    res = resident(cifar, r, "cpu")
    batches = list(resident_batches(res, r, seed=5, epoch=1))
    order = epoch_order(5, 1, 128)[:128]
    assert torch.equal(torch.cat([x for x, _ in batches]), res.train_x[order])
    assert torch.equal(torch.cat([y for _, y in batches]), res.train_y[order])


def test_prefetched_pack_draws_are_the_members_draws():
    """The background thread's compact buffers hold draw_epoch's values bit for bit, whichever
    epoch was prefetched (a prefetch of another epoch is dropped, not returned)."""
    r, seeds, n = Recipe(batch_size=10, translate=16, cutout=1), [3, 9, 3], 57
    pre = DrawPrefetcher(seeds, n, r, torch.device("cpu"))
    dst = PackDraws.empty(3, 5, 10, host=False)
    for fetch, epoch in ((None, 0), (1, 1), (5, 2), (None, 2)):
        if fetch is not None:
            pre.prefetch(fetch)
        pre.copy_into(dst, epoch)
        want = [draw_epoch(s, epoch, n, r) for s in seeds]
        for field, got in zip(("order", "flip", "shift", "corner"), dst.tensors()):
            assert got.dtype == (torch.bool if field == "flip" else torch.int64)
            assert torch.equal(got, torch.stack([getattr(w, field) for w in want])), (field, epoch)
    assert dst.shift.max() == 32  # 2 * translate survives the uint8 host buffer


def test_lagged_flag_reads_one_push_late():
    flag = LaggedFlag()
    assert flag.push(torch.tensor(False)) is True  # nothing before
    assert flag.push(torch.tensor(True)) is False
    assert flag.push(torch.tensor(True)) is True


# --- packed == separate ----------------------------------------------------------------------

def test_stacked_adamw_matches_torch_adamw():
    lr, wd = torch.tensor([0.3, 0.01, 1e-4]), torch.tensor([0.1, 0.0, 1e-3])
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(3, 50, generator=gen)
    grads = [torch.randn(3, 50, generator=gen) for _ in range(5)]
    p, m, v = p0.clone(), torch.zeros(3, 50), torch.zeros(3, 50)
    for step, g in enumerate(grads, 1):
        adamw_(p, g, m, v, lr=lr, wd=wd, step=step)
    for i in range(3):
        q = torch.nn.Parameter(p0[i].clone())
        opt = torch.optim.AdamW([q], lr=float(lr[i]), weight_decay=float(wd[i]))
        for g in grads:
            q.grad = g[i].clone()
            opt.step()
        torch.testing.assert_close(p[i], q.detach(), rtol=1e-5, atol=1e-6)


def test_adamw_takes_its_step_as_a_device_tensor():
    """A float64 step tensor (what a CUDA graph replays) gives, bit for bit, the update with the
    bias corrections as Python numbers (how the packed path computed them before)."""
    (b1, b2), gen = ADAM_BETAS, torch.Generator().manual_seed(3)
    lr, wd = torch.tensor([0.1, 1e-3]), torch.tensor([1e-2, 0.0])
    p, m, v = torch.randn(2, 40, generator=gen), torch.zeros(2, 40), torch.zeros(2, 40)
    q, mq, vq = p.clone(), m.clone(), v.clone()
    t = torch.zeros((), dtype=torch.float64)
    for step in range(1, 300):
        g = torch.randn(2, 40, generator=gen)
        t += 1
        adamw_(p, g, m, v, lr=lr, wd=wd, step=t)
        q.mul_(1 - lr[:, None] * wd[:, None])
        mq.lerp_(g, 1 - b1)
        vq.mul_(b2).addcmul_(g, g, value=1 - b2)
        q.sub_(lr[:, None] / (1 - b1**step) * (mq / (vq.sqrt() / (1 - b2**step) ** 0.5).add_(ADAM_EPS)))
    for a, b in ((p, q), (m, mq), (v, vq)):
        assert torch.equal(a, b)


def test_parameter_views_backward_is_one_concatenation(cifar):
    """The [N, F] gradient comes from one split's backward, not a zero-filled buffer per view."""
    pack = Pack(members("standard", 2), TINY, resident(cifar, TINY, "cpu"))
    views = pack.views(pack.buf.detach().requires_grad_(True))
    assert len(views) == 29
    for v in views.values():  # view <- split_with_sizes <- buf; slicing would show SliceBackward
        assert "SplitWithSizes" in type(v.grad_fn.next_functions[0][0]).__name__


def test_cuda_graph_is_refused_off_cuda(cifar):
    with pytest.raises(ValueError, match="cuda_graph=True: .*cuda device"):
        Pack(members("standard", 1), TINY, resident(cifar, TINY, "cpu"), cuda_graph=True)


@pytest.mark.parametrize("family", ["standard", "w_asym"])
def test_packed_gradients_match_single_members(cifar, family):
    cfgs = members(family)
    res = resident(cifar, TINY, "cpu")
    pack = Pack(cfgs, TINY, res)
    first = [next(resident_batches(res, TINY, c.seed, 0)) for c in cfgs]
    losses, grad = pack.loss_and_grad(torch.stack([x for x, _ in first]), torch.stack([y for _, y in first]))
    grad = unstack_params(pack.net, pack.views(grad))
    for i, (c, (x, y)) in enumerate(zip(cfgs, first)):
        net = TINY.init_weights(build(family), c)
        loss = torch.nn.functional.cross_entropy(net(normalize(x)), y, label_smoothing=c.label_smoothing)
        loss.backward()
        masks = trainable_masks(net)
        single = torch.cat([p.grad[masks[n]] if masks[n] is not None else p.grad.flatten()
                            for n, p in net.named_parameters()])
        torch.testing.assert_close(losses[i], loss.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad[i], single, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("family", ["standard", "w_asym", "sigma_asym"])
def test_grouped_forwards_and_gradients_equal_vmap(family):
    """The two packed forwards are one function: logits and d(loss)/d(params) agree."""
    net, n = build(family), 4
    gen = torch.Generator().manual_seed(1)
    flat0 = torch.stack([flatten(init_weights(build(family), s)) for s in range(n)])
    flat0 = flat0 + 0.05 * torch.randn(flat0.shape, generator=gen)  # norm affines off 1/0, biases nonzero
    x = torch.randn(n, 6, 3, 32, 32, generator=gen)
    out = {}
    gnet = grouped_net(net, n)
    forwards = {"vmap": lambda p: packed_forward(net, p, x), "grouped": lambda p: grouped_forward(gnet, p, x),
                "grouped_cl": lambda p: grouped_forward(gnet, p, x, channels_last=True)}
    for name, forward in forwards.items():
        flat = flat0.clone().requires_grad_(True)
        logits = forward(stack_params(net, flat))
        (grad,) = torch.autograd.grad(logits.square().sum(), flat)
        out[name] = logits.detach(), grad
    for name in ("grouped", "grouped_cl"):
        assert out[name][0].shape == (n, 6, 10)
        torch.testing.assert_close(out[name][0], out["vmap"][0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out[name][1], out["vmap"][1], rtol=1e-3, atol=1e-4)


def test_grouped_net_refuses_a_leaf_it_cannot_pack():
    net = build("standard")
    net.stem.act = torch.nn.GELU()
    with pytest.raises(TypeError, match="GELU.*impl='vmap'"):
        grouped_net(net, 2)


@pytest.fixture(scope="module")
def separate(cifar):
    """Each of members(family) trained alone on the resident path, per family."""
    return {f: [train_member(c, cifar, TINY) for c in members(f)] for f in ("standard", "w_asym")}


@pytest.mark.parametrize("family, impl", [("standard", "vmap"), ("w_asym", "vmap"), ("standard", "grouped"),
                                          ("w_asym", "grouped"), ("w_asym", "grouped_cl")])
def test_packed_training_equals_separate_training(cifar, separate, family, impl):
    packed = train_pack(members(family), cifar, TINY, impl=impl)
    for solo, pk in zip(separate[family], packed):
        assert pk.config == solo.config and pk.status == solo.status == "ok"
        np.testing.assert_array_equal(pk.params_init, solo.params_init)
        assert displacement_error(solo, pk) < 2e-3
        assert sorted(pk.checkpoints) == sorted(solo.checkpoints) == [0, 1, 2]
        np.testing.assert_array_equal(pk.checkpoints[0][0], pk.params_init)
        np.testing.assert_array_equal(pk.checkpoints[2][0], pk.params_final)
        for k in METRICS:
            assert pk.checkpoints[2][1][k] == pk.metrics[k]
            assert pk.metrics[k] == pytest.approx(solo.metrics[k], abs=0.02)
        assert pk.data_sha == solo.data_sha == cifar.identity["sha256"] and pk.device == "cpu"


def test_padding_slots_change_nothing(cifar, separate):
    padded = train_pack(members("standard"), cifar, TINY, slots=5)
    assert len(padded) == 3
    for solo, pk in zip(separate["standard"], padded):
        assert pk.status == "ok" and displacement_error(solo, pk) < 2e-3
        assert sorted(pk.checkpoints) == [0, 1, 2]


def test_split_packs():
    group = list(range(70))
    eager = split_packs(group, 64, compile=False)
    assert [(len(p), s) for p, s in eager] == [(35, None), (35, None)]
    compiled = split_packs(group, 64, compile=True)
    assert [(len(p), s) for p, s in compiled] == [(64, 64), (6, 8)]
    assert sum((p for p, _ in compiled), []) == group
    assert [s for _, s in split_packs(list(range(3)), 64, compile=True)] == [4]
    assert [s for _, s in split_packs([0], 64, compile=True)] == [1]


def test_w_asym_fixed_entries_stay_exactly_fixed(cifar, separate):
    net = build("w_asym")
    fixed = {n: b.clone() for n, b in net.named_buffers()}
    res = resident(cifar, TINY, "cpu")
    pack = Pack(members("w_asym"), TINY, res)
    pack.train_epoch(0, np.ones(TINY.steps_per_epoch(128)))
    for name, b in pack.net.named_buffers():
        assert torch.equal(b, fixed[name]), name
    views = pack.views(pack.buf)
    held = [views[name][:, ~mask] for name, mask in trainable_masks(pack.net).items() if mask is not None]
    assert held and all((h == 0).all() for h in held)  # zero, no gradient, no decay: never reach eq. (2)


def test_diverging_member_is_masked_and_its_pack_mates_finish(cifar, separate):
    """Under nonfinite="freeze"; "skip" is tests/test_nonfinite.py's."""
    cfgs, freeze = members("standard"), dataclasses.replace(TINY, nonfinite="freeze")
    cfgs[1] = dataclasses.replace(cfgs[1], lr=1e6, weight_decay=0.1, member_id="")
    packed = train_pack(cfgs, cifar, freeze)
    bad = packed[1]
    assert bad.status == "diverged" and bad.diverged_epoch in (0, 1)
    assert np.isfinite(bad.params_final).all() and all(math.isnan(v) for v in bad.metrics.values())
    assert all(e <= bad.diverged_epoch for e in bad.checkpoints)
    for i in (0, 2):
        assert packed[i].status == "ok" and displacement_error(separate["standard"][i], packed[i]) < 2e-3
    alone = train_member(cfgs[1], cifar, freeze)
    assert alone.status == "diverged" and alone.diverged_epoch == bad.diverged_epoch
    assert np.isfinite(alone.params_final).all()


def test_a_pack_whose_members_all_diverge_stops_and_keeps_their_last_finite_state(cifar, monkeypatch):
    """The all-diverged check is read an epoch late (LaggedFlag): the pack stops after one more
    epoch, which changes nothing, and well before its last (nonfinite="freeze": under "skip" a pack
    trains every epoch)."""
    r = dataclasses.replace(TINY, epochs=4, checkpoints=(0, 1, 2, 3, 4), nonfinite="freeze")
    cfgs = [dataclasses.replace(c, lr=1e6, weight_decay=0.1, member_id="") for c in members("standard", 2)]
    trained = []
    train_epoch = Pack.train_epoch
    monkeypatch.setattr(Pack, "train_epoch", lambda self, epoch, *a, **k: (trained.append(epoch),
                                                                           train_epoch(self, epoch, *a, **k)))
    packed = train_pack(cfgs, cifar, r)
    assert trained == list(range(max(pk.diverged_epoch for pk in packed) + 2))
    for cfg, pk in zip(cfgs, packed):
        alone = train_member(cfg, cifar, r)
        assert pk.status == alone.status == "diverged" and pk.diverged_epoch == alone.diverged_epoch
        assert np.isfinite(pk.params_final).all() and all(e <= pk.diverged_epoch for e in pk.checkpoints)


# --- memory: the pack size that fits ---------------------------------------------------------

def test_activation_estimate_is_per_image_and_grows_with_precision():
    fp32, bf16 = activation_bytes("standard", "grouped", None), activation_bytes("standard", "grouped")
    assert 0.5e6 < bf16 < fp32 < 2e6  # about 1 MB of saved activations per 32x32 image in a ResNet-8
    assert activation_bytes("w_asym", "grouped", None) == pytest.approx(fp32, rel=0.05)  # same activations
    peaks = [estimate_peak_bytes("standard", n, 512) for n in (8, 16, 32)]
    assert peaks[0] < peaks[1] < peaks[2] and peaks[2] - peaks[1] == pytest.approx(2 * (peaks[1] - peaks[0]), rel=0.01)
    with pytest.raises(ValueError, match="impl"):
        activation_bytes("standard", "fused")


def test_auto_pack_size_is_the_largest_size_that_fits():
    est = {n: estimate_peak_bytes("standard", n, 512) for n in (8, 16, 32, 64, 128)}
    assert auto_pack_size("cpu", "standard", 512, free_bytes=est[64]) == 64
    assert auto_pack_size("cpu", "standard", 512, free_bytes=est[64] - 1) == 32
    assert auto_pack_size("cpu", "standard", 512, (8, 128), free_bytes=est[64]) == 8
    assert auto_pack_size("cpu", "standard", 512, free_bytes=10 * est[128]) == 128
    assert auto_pack_size("cpu", "standard", 512) in (8, 16, 32, 64, 128)  # this host's free memory
    with pytest.raises(ValueError, match="GiB free"):
        auto_pack_size("cpu", "standard", 512, free_bytes=est[8] - 1)
    with pytest.raises(ValueError, match="sizes"):
        auto_pack_size("cpu", "standard", 512, (0, 8), free_bytes=est[128])


# --- determinism and the engine front --------------------------------------------------------

def digest(result) -> str:
    return hashlib.sha256(result.params_final.tobytes()).hexdigest()[:16]


SUBPROCESS = """
import hashlib, torch
torch.set_num_threads(1)
from zoo import load_cifar10, sample_member
from zoo.recipe import Recipe
from zoo.train import train_member
r = train_member(sample_member(0, 0, "sigma_asym"), load_cifar10({root!r}), Recipe.from_dict({recipe!r}))
print(hashlib.sha256(r.params_final.tobytes()).hexdigest()[:16])
"""


def test_training_is_deterministic_on_cpu(cifar, cifar_root):
    r = Recipe(batch_size=32, n_train=64, n_test=50, epochs=1)
    cfg = sample_member(0, 0, "sigma_asym")
    a, b = train_member(cfg, cifar, r), train_member(cfg, cifar, r)
    np.testing.assert_array_equal(a.params_final, b.params_final)
    assert a.metrics == b.metrics and not np.array_equal(a.params_final, a.params_init)
    assert run_python(SUBPROCESS.format(root=str(cifar_root), recipe=r.to_dict())) == digest(a)
    p, q = train_pack([cfg], cifar, r), train_pack([cfg], cifar, r)
    np.testing.assert_array_equal(p[0].params_final, q[0].params_final)


def test_train_members_groups_by_epochs_and_keeps_order(cifar):
    r = Recipe(batch_size=32, n_train=64, n_test=50)
    cfgs = [dataclasses.replace(sample_member(0, i, "standard"), epochs=e, member_id="")
            for i, e in enumerate([2, 1, 2, 1])]
    out = train_members(cfgs, cifar, r, engine="packed", pack_size=2)
    assert [o.config for o in out] == cfgs and all(o.status == "ok" for o in out)
    solo = train_members(cfgs[1:2], cifar, r, engine="resident")
    assert displacement_error(solo[0], out[1]) < 2e-3


@pytest.mark.parametrize("kwargs, field", [
    ({"engine": "gpu"}, "engine"), ({"pack_size": 0}, "pack_size"), ({"impl": "fused"}, "impl"),
])
def test_train_members_rejects_bad_input(cifar, kwargs, field):
    with pytest.raises(ValueError, match=field):
        train_members([sample_member(0, 0)], cifar, TINY, **kwargs)
    with pytest.raises(ValueError, match="one family"):
        train_members([sample_member(0, 0, "standard"), sample_member(0, 0, "w_asym")], cifar, TINY)


def test_failed_compile_falls_back_to_eager(cifar):
    res = resident(cifar, TINY, "cpu")
    x, y = next(resident_batches(res, TINY, 1, 0))
    eager, fallback = Pack(members("standard", 1), TINY, res), Pack(members("standard", 1), TINY, res)

    def broken(*args):
        raise RuntimeError("inductor: misaligned address")

    fallback.compiled = broken
    with pytest.warns(UserWarning, match="misaligned address"):
        got = fallback.loss_and_grad(x[None], y[None])
    assert fallback.compiled is None
    for a, b in zip(got, eager.loss_and_grad(x[None], y[None])):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_compiled_packs_share_code_without_recompiling(cifar, monkeypatch):
    """Packs of one family and size reuse one compiled loss: no call after the first recompiles
    (a lazily filled cache read inside the trace used to add a guard, and a recompile, per
    device), and a worker may hold a version per family, forward and size (RECOMPILES)."""
    import torch._dynamo.config as dynamo

    from zoo.train import evaluate
    from zoo.train.packed import RECOMPILES

    monkeypatch.setattr(evaluate, "_MEAN_STD", {})  # as in a fresh worker, whatever ran before
    res = resident(cifar, TINY, "cpu")
    batch = [next(resident_batches(res, TINY, c.seed, 0)) for c in members("standard", 2)]
    x, y = torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])
    first = Pack(members("standard", 2), TINY, res, compile=True)
    assert dynamo.recompile_limit >= RECOMPILES
    first.loss_and_grad(x, y)
    with dynamo.patch(error_on_recompile=True), warnings.catch_warnings():
        warnings.simplefilter("error")  # an eager fallback warns: fail on it instead
        first.loss_and_grad(x, y)
        second = Pack([sample_member(0, i, "standard") for i in (7, 8)], TINY, res, compile=True)
        got = second.loss_and_grad(x, y)
    assert first.compiled is not None and second.compiled is not None
    want = Pack([sample_member(0, i, "standard") for i in (7, 8)], TINY, res).loss_and_grad(x, y)
    assert torch.allclose(got[0], want[0], atol=1e-5) and torch.allclose(got[1], want[1], atol=1e-4)
