"""The fused GroupNorm + affine + residual + ReLU kernels (zoo/train/fused_norm.py) and the
"grouped_fused" packed forward, against float64 PyTorch and against separate members.

The kernels run on CUDA, or on the CPU under Triton's interpreter, which must be switched on
(TRITON_INTERPRET=1) before triton is first imported, and `import torch._dynamo` imports it. So
in a CPU session `test_kernels_under_the_triton_interpreter` reruns this file in a subprocess with
the variable set, and the kernel tests run there; the rest of the session never sees it. On a
GPU machine the kernel tests also run in-process, on CUDA.
"""
import importlib.util
import os
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from zoo import build, init_weights, unflatten
from zoo.layout import flatten, trainable_masks
from zoo.recipe import Recipe
from zoo.train import resident, resident_batches
from zoo.train.evaluate import normalize
from zoo.train.grouped import check_impl, grouped_forward, grouped_net
from zoo.train.packed import Pack
from zoo.train.vmap import stack_params, unstack_params
from conftest import REPO
from test_train import members

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
HAS_TRITON = importlib.util.find_spec("triton") is not None
DEVICE = "cpu" if INTERPRETED or not torch.cuda.is_available() else "cuda"
kernels = pytest.mark.skipif(not HAS_TRITON or DEVICE == "cpu" and not INTERPRETED,
                             reason="runs in test_kernels_under_the_triton_interpreter's subprocess")
MICRO = Recipe(batch_size=4, n_train=16, n_test=16, epochs=1, warmup_epochs=0.5, checkpoints=(0, 1))


def reference(x, weight, bias, residual, relu, eps=1e-5):
    """PyTorch's GroupNorm(1, C) per member slab, then affine, residual, ReLU: x [B, N*C, H, W], weight [N, C]."""
    b, nc = x.shape[:2]
    h = F.group_norm(x.reshape(b * weight.shape[0], weight.shape[1], *x.shape[2:]), 1, eps=eps).view_as(x)
    y = h * weight.reshape(1, nc, 1, 1) + bias.reshape(1, nc, 1, 1)
    y = y if residual is None else y + residual
    return y.relu() if relu else y


def op_inputs(n, c, hw, dtype, *, has_residual, seed=0, scale=3.0, shift=2.0):
    """x, residual [B=3, N*C, H, W] and weight, bias [N, C] in float64; weight is a column slice of
    a wider buffer, as Pack.views hands it over (not contiguous)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, n * c, *hw, generator=gen, dtype=torch.float64) * scale + shift
    buf = torch.randn(n, 3 * c, generator=gen, dtype=torch.float64)
    weight, bias = buf[:, :c], buf[:, c : 2 * c]
    residual = torch.randn(x.shape, generator=gen, dtype=torch.float64) if has_residual else None
    return [t.to(dtype) if t is not None else None for t in (x, weight, bias, residual)]


def values_and_grads(fn, x, weight, bias, residual, grad_out):
    """fn's output and the gradients of <output, grad_out> wrt x, weight, bias (and residual)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, weight, bias, residual) if t is not None]
    out = fn(*leaves, *([None] if residual is None else []))
    grads = torch.autograd.grad(out, leaves, grad_out.to(out.dtype))
    return out.detach(), grads


@kernels
@pytest.mark.parametrize("tile", [4096, 16])  # one tile per slab; many tiles, ragged in both C and H*W
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("has_residual", [False, True])
def test_fused_norm_matches_float64_values_and_gradients(monkeypatch, tile, relu, has_residual):
    from zoo.train import fused_norm

    monkeypatch.setattr(fused_norm, "TILE", tile)
    x, w, b, r = op_inputs(2, 5, (6, 7), torch.float64, has_residual=has_residual)
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    want, want_grads = values_and_grads(lambda *a: reference(*a, relu), x, w, b, r, grad_out)
    dev = [t.float().to(DEVICE) if t is not None else None for t in (x, w, b, r)]
    got, got_grads = values_and_grads(lambda *a: fused_norm.group_norm_act(*a, relu=relu), *dev, grad_out.to(DEVICE))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.cpu().double(), want, rtol=1e-5, atol=1e-5)
    for name, g, wg in zip(["x", "weight", "bias", "residual"], got_grads, want_grads):
        torch.testing.assert_close(g.cpu().double(), wg, rtol=1e-4, atol=1e-5, msg=name)


@kernels
def test_fused_norm_keeps_the_variance_of_a_slab_far_from_zero():
    """Mean 1000, std 1: E[x^2] - E[x]^2 in fp32 loses ~1e6 * 2^-24 of a unit variance per term;
    per-tile M2 combined with Chan's update keeps it."""
    from zoo.train.fused_norm import group_norm_act

    x, w, b, _ = op_inputs(2, 8, (16, 16), torch.float64, has_residual=False, scale=1.0, shift=1000.0)
    got = group_norm_act(x.float().to(DEVICE), w.float().to(DEVICE), b.float().to(DEVICE))
    torch.testing.assert_close(got.cpu().double(), reference(x, w, b, None, False), rtol=0, atol=2e-3)


@kernels
@pytest.mark.parametrize("relu", [False, True])
def test_fused_norm_reads_and_writes_bf16(relu):
    """bf16 in and out, fp32 inside: within a few bf16 roundings (2^-8 relative) of float64 on the
    same bf16 inputs; weight and bias gradients are fp32 sums and stay close."""
    from zoo.train.fused_norm import group_norm_act

    x, w, b, r = op_inputs(2, 8, (8, 8), torch.bfloat16, has_residual=True)
    w, b = w.float(), b.float()
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    want, want_grads = values_and_grads(lambda *a: reference(*a, relu), *(t.double() for t in (x, w, b, r)), grad_out)
    dev = [t.to(DEVICE) for t in (x, w, b, r)]
    got, got_grads = values_and_grads(lambda *a: group_norm_act(*a, relu=relu), *dev, grad_out.to(DEVICE))
    assert got.dtype == got_grads[0].dtype == got_grads[3].dtype == torch.bfloat16
    assert got_grads[1].dtype == got_grads[2].dtype == torch.float32
    torch.testing.assert_close(got.cpu().double(), want, rtol=2e-2, atol=2e-2)
    for name, g, wg in zip(["x", "weight", "bias", "residual"], got_grads, want_grads):
        torch.testing.assert_close(g.cpu().double(), wg, rtol=2e-2, atol=3e-2, msg=name)


def separate_logits_and_grads(family, flat, x):
    """Each member on its own network: logits [N, B, 10] and d sum(logits^2) / d flat [N, P]."""
    logits, grads = [], []
    for member, images in zip(flat, x):
        net = unflatten(build(family), member)
        out = net(images)
        out.square().sum().backward()
        masks = trainable_masks(net)
        grads.append(torch.cat([p.grad[masks[k]] if masks[k] is not None else p.grad.flatten()
                                for k, p in net.named_parameters()]))
        logits.append(out.detach())
    return torch.stack(logits), torch.stack(grads)


@kernels
@pytest.mark.parametrize("family", ["standard", "w_asym", "sigma_asym"])
def test_grouped_fused_equals_separate_members(family):
    """Packed == separate with the fused norms, fp32 on both sides: the kernels differ from
    PyTorch's GroupNorm only in summation order (~1e-7 relative per statistic), which eight
    layers and their backward grow to ~1e-5; the tolerances are test_train.py's for grouped vs
    vmap. A member mix-up or a wrong affine row would be O(1)."""
    net, n = build(family), 3
    gen = torch.Generator().manual_seed(1)
    flat = torch.stack([flatten(init_weights(build(family), s)) for s in range(n)])
    flat = flat + 0.05 * torch.randn(flat.shape, generator=gen)  # norm affines off 1/0, biases nonzero
    x = torch.randn(n, 2, 3, 16, 16, generator=gen)
    gnet = grouped_net(net, n).to(DEVICE)
    leaf = flat.to(DEVICE).requires_grad_(True)
    logits = grouped_forward(gnet, stack_params(net.to(DEVICE), leaf), x.to(DEVICE), fused=True)
    (grad,) = torch.autograd.grad(logits.square().sum(), leaf)
    want_logits, want_grads = separate_logits_and_grads(family, flat, x)
    torch.testing.assert_close(logits.detach().cpu(), want_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad.cpu(), want_grads, rtol=1e-3, atol=1e-4)


@kernels
def test_fused_pack_gradients_equal_single_member_gradients(cifar):
    """Through Pack (the training step's forward, loss and gradient) with impl grouped_fused."""
    cfgs = members("standard")
    res = resident(cifar, MICRO, DEVICE)
    pack = Pack(cfgs, MICRO, res, impl="grouped_fused")
    first = [next(resident_batches(res, MICRO, c.seed, 0)) for c in cfgs]
    losses, grad = pack.loss_and_grad(torch.stack([x for x, _ in first]), torch.stack([y for _, y in first]))
    grad = unstack_params(pack.net, pack.views(grad)).cpu()
    for i, (c, (x, y)) in enumerate(zip(cfgs, first)):
        net = MICRO.init_weights(build("standard"), c).to(DEVICE)
        loss = F.cross_entropy(net(normalize(x)), y, label_smoothing=c.label_smoothing)
        loss.backward()
        masks = trainable_masks(net)
        single = torch.cat([p.grad[masks[k]] if masks[k] is not None else p.grad.flatten()
                            for k, p in net.named_parameters()]).cpu()
        torch.testing.assert_close(losses[i].cpu(), loss.detach().cpu(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad[i], single, rtol=1e-3, atol=1e-6)


def test_fused_twin_shares_the_grouped_leaves():
    net = build("sigma_asym")
    gnet = grouped_net(net, 2)
    twin = gnet.fused_twin
    assert type(twin.blocks[1]).__name__ == "FusedBasicBlock" and type(twin.stem).__name__ == "FusedConvNormAct"
    assert twin.blocks[1].norm2 is gnet.blocks[1].norm2 and twin.blocks[1].act2 is gnet.blocks[1].act2
    assert list(dict(twin.named_parameters())) == list(dict(net.named_parameters()))
    assert "fused_twin" not in dict(gnet.named_modules())
    gnet.double()  # moving the grouped net moves the twin's (shared) leaves
    assert twin.blocks[1].act2.mixing.dtype == torch.float64
    with pytest.raises(ValueError, match="channels_last=True, fused=True"):
        grouped_forward(gnet, {}, torch.zeros(2, 1, 3, 8, 8), channels_last=True, fused=True)


@pytest.mark.skipif(INTERPRETED or torch.cuda.is_available(), reason="needs a CPU-only process")
def test_grouped_fused_is_refused_in_one_line_without_a_gpu(monkeypatch):
    with pytest.raises(ValueError) as e:
        check_impl("grouped_fused", "packed_impl")
    message = str(e.value)
    assert "\n" not in message and re.search(r"packed_impl='grouped_fused': needs a CUDA device.*"
                                             r"allowed here: vmap, grouped, grouped_cl$", message)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ValueError, match=r"packed_impl='grouped_fused': needs triton .*allowed here: vmap"):
        check_impl("grouped_fused", "packed_impl")


@pytest.mark.skipif(INTERPRETED or not HAS_TRITON, reason="the driver of the interpreted run; needs triton")
def test_kernels_under_the_triton_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
           "not under_the_triton_interpreter and not refused_in_one_line"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-2000:]
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert re.match(r"\d+ passed, 2 deselected in", summary), summary  # nothing skipped
