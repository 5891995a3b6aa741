"""The packed engine on a CUDA GPU: the CPU tests of test_train.py, repeated where it runs fastest,
and what only a GPU has (CUDA-graph replay, the memory estimate against a measured peak).

Skipped without CUDA (CI has none). On a lent GPU, `bash benchmarks/gpu_session.sh` runs them.
fp32 comparisons run with TF32 off and deterministic cuDNN, so they test the code, not the
tensor cores' rounding. A fresh GPU machine has no CIFAR-10 copy: then the tests train on
learnable synthetic images (`learnable_images`), which is all the engine's tests need.
"""
import dataclasses
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo import build, init_weights, load_cifar10, sample_member
from zoo.train.vmap import packed_forward, stack_params
from zoo.train.grouped import IMPLS, grouped_forward, grouped_net
from zoo.layout import flatten
from zoo.data import Cifar10
import zoo.train.packed as packed
from zoo.train.packed import PACK_SIZES, Pack, auto_pack_size, estimate_peak_bytes, train_pack
from zoo.recipe import Recipe
from zoo.train import resident, resident_batches, train_member
from conftest import MATERIALIZE
from test_train import displacement_error, members

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

FP32 = Recipe(batch_size=64, n_train=512, n_test=256, epochs=2, warmup_epochs=0.5, checkpoints=(0, 2),
              precision="fp32")
BF16 = dataclasses.replace(FP32, batch_size=256, n_train=4096, precision="auto")  # auto = bf16 on cuda


def learnable_images(n_train: int = 5000, n_test: int = 1000) -> Cifar10:
    """Each class a fixed random picture, each image its class's picture under noise: a ResNet-8
    learns it within an epoch."""
    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 256, (10, 3, 32, 32))
    y = rng.integers(0, 10, n_train + n_test)
    x = (0.6 * pictures[y] + 0.4 * rng.integers(0, 256, (len(y), 3, 32, 32))).astype(np.uint8)
    return Cifar10(x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                   {"sha256": "learnable-synthetic", "official": False, "name": "learnable synthetic images"})


@pytest.fixture(scope="module")
def cifar(request):
    """CIFAR-10 where a copy is at hand (conftest's fixture), else `learnable_images`."""
    root = os.environ.get("SYMZOO_DATA")
    if (root and (Path(root) / "cifar-10-batches-py" / "test_batch").exists()) or MATERIALIZE.exists():
        return load_cifar10(request.getfixturevalue("cifar_root"))
    return learnable_images()


@pytest.fixture(autouse=True)
def exact_fp32():
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False):
        yield
    torch.backends.cuda.matmul.allow_tf32 = matmul


@pytest.mark.parametrize("family", ["standard", "w_asym", "sigma_asym"])
def test_forwards_agree_on_cuda_and_with_cpu(family):
    net, n = build(family), 4
    gen = torch.Generator().manual_seed(1)
    flat = torch.stack([flatten(init_weights(build(family), s)) for s in range(n)])
    flat = flat + 0.05 * torch.randn(flat.shape, generator=gen)
    x = torch.randn(n, 8, 3, 32, 32, generator=gen)
    reference = packed_forward(net, stack_params(net, flat), x)  # CPU
    gnet = grouped_net(net, n).cuda()
    params = stack_params(net.cuda(), flat.cuda())
    xc = x.cuda()
    outs = {"vmap": packed_forward(net, params, xc), "grouped": grouped_forward(gnet, params, xc),
            "grouped_cl": grouped_forward(gnet, params, xc, channels_last=True)}
    for name, out in outs.items():
        torch.testing.assert_close(out.cpu(), reference, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("impl", IMPLS)
def test_packed_training_equals_resident_on_cuda(cifar, impl):
    cfgs = members("w_asym")
    solo = [train_member(c, cifar, FP32, device="cuda") for c in cfgs]
    packed = train_pack(cfgs, cifar, FP32, device="cuda", impl=impl)
    for s, p in zip(solo, packed):
        assert s.status == p.status == "ok" and p.device.startswith("cuda:")
        np.testing.assert_array_equal(s.params_init, p.params_init)
        assert displacement_error(s, p) < 1e-2
        assert p.metrics["test_acc"] == pytest.approx(s.metrics["test_acc"], abs=0.02)


@pytest.mark.parametrize("impl", IMPLS)
def test_bf16_packs_learn_and_mask_a_diverging_member(cifar, impl):
    """Under nonfinite="freeze", as test_train.py's CPU twin."""
    cfgs = [dataclasses.replace(sample_member(0, i), lr=lr, member_id="") for i, lr in enumerate((3e-3, 1e6, 1e-2, 5e-3))]
    out = train_pack(cfgs, cifar, dataclasses.replace(BF16, nonfinite="freeze"), device="cuda", impl=impl)
    assert out[1].status == "diverged" and np.isfinite(out[1].params_final).all()
    for i in (0, 2, 3):
        r = out[i]
        assert r.status == "ok"
        assert r.metrics["train_loss_plain"] < r.checkpoints[0][1]["train_loss_plain"] - 0.1, r.metrics


@pytest.mark.parametrize("impl", ["vmap", "grouped"])
def test_compiled_pack_matches_eager_on_cuda(cifar, impl):
    res = resident(cifar, BF16, "cuda")
    cfgs = members("sigma_asym")
    batches = [next(resident_batches(res, BF16, c.seed, 0)) for c in cfgs]
    x, y = torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])
    eager = Pack(cfgs, BF16, res, impl=impl).loss_and_grad(x, y)
    pack = Pack(cfgs, BF16, res, impl=impl, compile=True)
    compiled = pack.loss_and_grad(x, y)
    assert pack.compiled is not None, "torch.compile fell back to eager"
    torch.testing.assert_close(compiled[0], eager[0], rtol=2e-2, atol=2e-2)
    rel = (compiled[1] - eager[1]).norm(dim=1) / eager[1].norm(dim=1)
    assert (rel < 5e-2).all(), rel


def test_cuda_graph_replay_trains_as_eager_and_masks_divergence(cifar):
    """The captured step reads every per-step value from device tensors: replaying it trains as
    the eager loop does, a diverging member included (nonfinite="freeze", as test_train.py's CPU
    twin; "skip" is the next test's)."""
    cfgs, freeze = members("w_asym"), dataclasses.replace(FP32, nonfinite="freeze")
    cfgs[1] = dataclasses.replace(cfgs[1], lr=1e6, weight_decay=0.1, member_id="")
    eager = train_pack(cfgs, cifar, freeze, device="cuda", impl="grouped")
    graph = train_pack(cfgs, cifar, freeze, device="cuda", impl="grouped", cuda_graph=True)
    assert [g.status for g in graph] == [e.status for e in eager] == ["ok", "diverged", "ok"]
    assert graph[1].diverged_epoch == eager[1].diverged_epoch
    for e, g in zip(eager, graph):
        np.testing.assert_array_equal(g.params_init, e.params_init)
        if e.status == "ok":
            assert displacement_error(e, g) < 1e-3
            assert sorted(g.checkpoints) == sorted(e.checkpoints)


def test_cuda_graph_replay_skips_a_non_finite_step_as_eager_does(cifar, monkeypatch):
    """nonfinite="skip": member 1's input turns NaN at step 1 (through a device tensor, which the
    graph reads at every replay, where test_nonfinite.py's host-side poison would be baked in at
    capture); after the epoch the graph's params, m, v, step counts and diverged_at equal eager's
    bit for bit."""
    recipe, cfgs = FP32, members("w_asym")
    assert recipe.nonfinite == "skip"
    res = resident(cifar, recipe, "cuda")
    poison = torch.zeros(len(cfgs), 1, 1, 1, 1, device="cuda")  # added to the [N, B, 3, 32, 32] input
    normalize = packed.normalize
    monkeypatch.setattr(packed, "normalize", lambda x: normalize(x) + poison)
    steps = recipe.steps_per_epoch(len(res.train_y))
    factors = recipe.lr_factors(recipe.epochs, steps)[:steps]
    state = {}
    for graph in (False, True):
        pack = Pack(cfgs, recipe, res, impl="grouped", cuda_graph=graph)
        pack._load_epoch(0, factors)
        if graph:
            pack._capture()
        for s in range(steps):
            poison[1] = math.nan if s == 1 else 0.0
            if graph:
                pack.graph.replay()
            else:
                pack._step()
        poison.zero_()
        state[graph] = {"buf": pack.buf, "m": pack.m, "v": pack.v, "t": pack.t, "diverged_at": pack.diverged_at}
    assert state[True]["diverged_at"].tolist() == [-1, 0, -1]
    assert state[True]["t"].tolist() == [steps, steps - 1, steps]
    for name, eager in state[False].items():
        assert torch.equal(state[True][name], eager), name


def test_memory_estimate_bounds_the_measured_peak(cifar):
    """packed.estimate_peak_bytes (saved activations measured on the CPU) against one step's peak."""
    n, b = 8, 256
    recipe = Recipe(batch_size=b, n_train=b, n_test=b)  # bf16 autocast, as the sweep trains
    res = resident(cifar, recipe, "cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    pack = Pack([sample_member(0, i) for i in range(n)], recipe, res, impl="grouped")
    pack.train_epoch(0, [0.5])
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    estimate = estimate_peak_bytes("standard", n, b, n_train=b)
    assert 0.3 * estimate < peak < estimate, (peak / 2**20, estimate / 2**20)
    assert auto_pack_size("cuda", "standard", 512) in PACK_SIZES
