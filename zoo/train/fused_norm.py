"""GroupNorm(1, C) per (image, member) slab, per-channel affine, optional residual add and ReLU,
in one Triton pass forward and one backward (issue #16, item 1).

    out = act(w_c * (x - mean) * rstd + b_c + residual),  mean, rstd over the slab's C*H*W entries

on the grouped forward's activations [B, N*C, H, W] (`zoo.train.grouped`): the slab of image b and
member n is the contiguous block of C*H*W entries at (b*N + n)*C*H*W, and its affine is row n of
the [N, C] weight and bias. Entries are read in their own dtype (bf16 under autocast, fp32 on the
CPU path) and written in it; mean, variance, the affine and the backward's sums are fp32. Today's
chain (cast to fp32, GroupNorm, affine, residual add, ReLU as separate ops reading and writing
fp32) becomes one read of x (and the residual) and one write of out forward, and one read of x,
out and the incoming gradient and one write of dx (and the residual's gradient) backward.

Each program owns one slab and makes two passes over it, in [BLOCK_C, BLOCK_HW] tiles: the
statistics (per-tile mean and M2 combined with Chan et al.'s parallel update, so a large mean
does not cancel the variance as E[x^2] - E[x]^2 can), then the normalised output. The second
pass re-reads a slab of at most 32 KB (bf16), which the GPU's L2 still holds. The backward is the
same two passes: the sums of dx_hat and dx_hat * x_hat, and per-channel partial sums of the
weight and bias gradients written per slab (summed over images afterwards, deterministic, no
atomics), then dx = rstd * (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat)).

Design credit: Liger-Kernel's Triton group norm (github.com/linkedin/Liger-Kernel,
src/liger_kernel/ops/group_norm.py): one program per (row, group), a statistics pass then an
output pass, the backward's c1/c2 sums. It is not used as a dependency because it does not fit
here: no residual or activation fusion (the point of this op, most of the bytes), statistics as
E[x^2] - E[x]^2 and stored in the input dtype (bf16 here), weight and bias gradients by
atomic_add (in the input dtype, and run-to-run non-deterministic), and a torch.autograd.Function
rather than a torch.library op that torch.compile can trace around.

FiGLU (sigma-Asym) is not fused: its gate sigmoid(F x) mixes the C channels of each pixel through a
1x1 conv, which is not a per-entry operation; its members run GN + affine + residual here and the
family's FiGLU after (`zoo.train.grouped`).

Runs on CUDA tensors, or on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1 set before
triton is imported; tests/test_fused_norm.py does so in a subprocess). `unavailable` says why not.
"""
import torch
import triton
import triton.language as tl

TILE = 4096  # entries per [BLOCK_C, BLOCK_HW] tile: 16 fp32 registers per thread at 8 warps


def _forward_kernel(x_ptr, res_ptr, w_ptr, b_ptr, out_ptr, mean_ptr, rstd_ptr, members, C, HW, eps,
                    HAS_RES: tl.constexpr, RELU: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    slab = tl.program_id(0)
    base = slab.to(tl.int64) * C * HW
    rows = tl.arange(0, BLOCK_C)[:, None]
    cols = tl.arange(0, BLOCK_HW)[None, :]
    count = 0.0
    mean = 0.0
    m2 = 0.0
    for c0 in range(0, C, BLOCK_C):
        for h0 in range(0, HW, BLOCK_HW):
            mask = (c0 + rows < C) & (h0 + cols < HW)
            v = tl.load(x_ptr + base + (c0 + rows) * HW + h0 + cols, mask=mask, other=0.0).to(tl.float32)
            n = tl.sum(mask.to(tl.float32))
            tile_mean = tl.sum(v) / n
            d = tl.where(mask, v - tile_mean, 0.0)
            delta = tile_mean - mean
            total = count + n
            mean += delta * n / total
            m2 += tl.sum(d * d) + delta * delta * count * n / total
            count = total
    rstd = 1.0 / tl.sqrt(m2 / count + eps)
    tl.store(mean_ptr + slab, mean)
    tl.store(rstd_ptr + slab, rstd)
    member = slab % members
    for c0 in range(0, C, BLOCK_C):
        w = tl.load(w_ptr + member * C + c0 + rows, mask=c0 + rows < C, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + member * C + c0 + rows, mask=c0 + rows < C, other=0.0).to(tl.float32)
        for h0 in range(0, HW, BLOCK_HW):
            mask = (c0 + rows < C) & (h0 + cols < HW)
            offs = base + (c0 + rows) * HW + h0 + cols
            y = (tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) - mean) * rstd * w + b
            if HAS_RES:
                y += tl.load(res_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            if RELU:
                y = tl.maximum(y, 0.0)
            tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


def _backward_kernel(g_ptr, x_ptr, out_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr, dres_ptr, dw_ptr, db_ptr,
                     members, C, HW, RELU: tl.constexpr, STORE_DRES: tl.constexpr, BLOCK_C: tl.constexpr,
                     BLOCK_HW: tl.constexpr):
    slab = tl.program_id(0)
    base = slab.to(tl.int64) * C * HW
    rows = tl.arange(0, BLOCK_C)[:, None]
    cols = tl.arange(0, BLOCK_HW)[None, :]
    member = slab % members
    mean = tl.load(mean_ptr + slab)
    rstd = tl.load(rstd_ptr + slab)
    s1 = 0.0  # sum over the slab of dx_hat
    s2 = 0.0  # sum over the slab of dx_hat * x_hat
    for c0 in range(0, C, BLOCK_C):
        w = tl.load(w_ptr + member * C + c0 + rows, mask=c0 + rows < C, other=0.0).to(tl.float32)
        dw = tl.zeros([BLOCK_C], tl.float32)
        db = tl.zeros([BLOCK_C], tl.float32)
        for h0 in range(0, HW, BLOCK_HW):
            mask = (c0 + rows < C) & (h0 + cols < HW)
            offs = base + (c0 + rows) * HW + h0 + cols
            x_hat = (tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) - mean) * rstd
            gy = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)  # 0 off the slab: sums stay exact
            if RELU:
                gy = tl.where(tl.load(out_ptr + offs, mask=mask, other=0.0) > 0, gy, 0.0)
            if STORE_DRES:
                tl.store(dres_ptr + offs, gy.to(dres_ptr.dtype.element_ty), mask=mask)
            s1 += tl.sum(gy * w)
            s2 += tl.sum(gy * w * x_hat)
            dw += tl.sum(gy * x_hat, axis=1)
            db += tl.sum(gy, axis=1)
        channels = c0 + tl.arange(0, BLOCK_C)
        tl.store(dw_ptr + slab * C + channels, dw, mask=channels < C)
        tl.store(db_ptr + slab * C + channels, db, mask=channels < C)
    s1 = s1 / (C * HW)
    s2 = s2 / (C * HW)
    for c0 in range(0, C, BLOCK_C):
        w = tl.load(w_ptr + member * C + c0 + rows, mask=c0 + rows < C, other=0.0).to(tl.float32)
        for h0 in range(0, HW, BLOCK_HW):
            mask = (c0 + rows < C) & (h0 + cols < HW)
            offs = base + (c0 + rows) * HW + h0 + cols
            x_hat = (tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) - mean) * rstd
            gy = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            if RELU:
                gy = tl.where(tl.load(out_ptr + offs, mask=mask, other=0.0) > 0, gy, 0.0)
            dx = (gy * w - s1 - x_hat * s2) * rstd
            tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


_forward_kernel = triton.jit(_forward_kernel)  # interpreted when TRITON_INTERPRET=1 was set at import
_backward_kernel = triton.jit(_backward_kernel)


def unavailable(device: torch.device) -> str | None:
    """Why the kernels cannot run on `device` in this process, or None."""
    if device.type == "cuda" or triton.knobs.runtime.interpret:
        return None
    return f"tensors on {device} need Triton's interpreter (TRITON_INTERPRET=1 before triton is imported)"


def _launch_shape(x: torch.Tensor, weight: torch.Tensor) -> tuple[int, int, int, dict]:
    """x [B, N*C, H, W], weight [N, C] -> (slabs B*N, C, H*W, tile constexprs)."""
    members, c = weight.shape
    hw = x.shape[2] * x.shape[3]
    block_hw = min(triton.next_power_of_2(hw), TILE)
    block_c = max(1, min(triton.next_power_of_2(c), TILE // block_hw))
    return x.shape[0] * members, c, hw, {"BLOCK_C": block_c, "BLOCK_HW": block_hw, "num_warps": 8}


@torch.library.custom_op("symzoo::group_norm_act", mutates_args=())
def _forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor | None,
             eps: float, relu: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [B, N*C, H, W], weight, bias [N, C] fp32, residual like x -> (out like x, mean, rstd [B*N] fp32)."""
    slabs, c, hw, tiles = _launch_shape(x, weight)
    out = torch.empty_like(x)
    mean, rstd = (x.new_empty(slabs, dtype=torch.float32) for _ in range(2))
    _forward_kernel[(slabs,)](x, x if residual is None else residual, weight, bias, out, mean, rstd,
                              weight.shape[0], c, hw, eps, HAS_RES=residual is not None, RELU=relu, **tiles)
    return out, mean, rstd


@_forward.register_fake
def _(x, weight, bias, residual, eps, relu):
    slabs = x.shape[0] * weight.shape[0]
    return torch.empty_like(x), x.new_empty(slabs, dtype=torch.float32), x.new_empty(slabs, dtype=torch.float32)


@torch.library.custom_op("symzoo::group_norm_act_backward", mutates_args=())
def _backward(grad: torch.Tensor, x: torch.Tensor, out: torch.Tensor | None, weight: torch.Tensor,
              mean: torch.Tensor, rstd: torch.Tensor, relu: bool,
              residual_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (dx like x, d residual like x (empty unless `residual_grad`), d weight, d bias [N, C] fp32).
    `out` (the forward's output) is read only for ReLU's mask."""
    slabs, c, hw, tiles = _launch_shape(x, weight)
    dx = torch.empty_like(x)
    dres = torch.empty_like(x) if residual_grad else x.new_empty(0)
    dw, db = (x.new_empty(slabs, c, dtype=torch.float32) for _ in range(2))  # per-slab partial sums
    _backward_kernel[(slabs,)](grad, x, x if out is None else out, weight, mean, rstd, dx,
                               dres if residual_grad else dx, dw, db, weight.shape[0], c, hw,
                               RELU=relu, STORE_DRES=residual_grad, **tiles)
    return dx, dres, dw.view(x.shape[0], *weight.shape).sum(0), db.view(x.shape[0], *weight.shape).sum(0)


@_backward.register_fake
def _(grad, x, out, weight, mean, rstd, relu, residual_grad):
    dres = torch.empty_like(x) if residual_grad else x.new_empty(0)
    return torch.empty_like(x), dres, weight.new_empty(weight.shape), weight.new_empty(weight.shape)


def _setup_context(ctx, inputs, output) -> None:
    x, weight, _, residual, _, relu = inputs
    out, mean, rstd = output
    ctx.relu, ctx.has_residual = relu, residual is not None
    ctx.save_for_backward(x, out if relu else None, weight, mean, rstd)


def _autograd(ctx, grad, _grad_mean, _grad_rstd):
    x, out, weight, mean, rstd = ctx.saved_tensors
    residual_grad = ctx.has_residual and ctx.relu  # without ReLU the residual's gradient is `grad` itself
    dx, dres, dw, db = _backward(grad.contiguous(), x, out, weight, mean, rstd, ctx.relu, residual_grad)
    if ctx.has_residual and not ctx.relu:
        dres = grad
    return dx, dw, db, dres if ctx.has_residual else None, None, None


_forward.register_autograd(_autograd, setup_context=_setup_context)


def group_norm_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor | None = None,
                   *, eps: float = 1e-5, relu: bool = False) -> torch.Tensor:
    """x [B, N*C, H, W] (bf16 or fp32), weight, bias [N, C], residual [B, N*C, H, W] or None ->
    act(GroupNorm(1, C) of each member's slab, affine, + residual), x's dtype and shape."""
    why = unavailable(x.device)
    if why:
        raise ValueError(f"packed_impl='grouped_fused': {why}")
    if x.dim() != 4 or x.shape[1] != weight.numel() or weight.shape != bias.shape:
        raise ValueError(f"x {tuple(x.shape)}, weight {tuple(weight.shape)}, bias {tuple(bias.shape)}: "
                         "expected x [B, N*C, H, W] and weight, bias [N, C]")
    residual = None if residual is None else residual.to(x.dtype).contiguous()
    return _forward(x.contiguous(), weight.float().contiguous(), bias.float().contiguous(), residual, eps, relu)[0]
