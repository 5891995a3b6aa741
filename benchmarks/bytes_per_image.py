"""Memory traffic of one training image through each packed forward, and the floor it sets on an
H200 (issue #16, item 6). Arithmetic from a CPU run, not a GPU measurement.

Every aten op of a training step's loss and backward (the uint8 batch normalised, the forward,
the smoothed cross-entropy, the gradient wrt the [N, F] parameter buffer) is seen by a
TorchDispatchMode, which adds up the bytes of each tensor the op reads and writes (a strided view
counts the memory it spans; ops that return views of their input move nothing). That is the
traffic of an eager step in which no intermediate stays in cache between ops: a floor for eager
GPU kernels that each stream their operands once, and an upper bound where cuDNN or inductor keep
data on chip. The step runs twice, at batch B1 and B2 per member; the difference over the
N * (B2 - B1) images between is the traffic per training image (what does not grow with the
batch, parameter reads and gradient writes, cancels), and the intercept is what a step costs per
member regardless of its batch.

Then: seconds per member at 4.3 TB/s (H200 HBM3e peak) for 25 epochs x 50,000 images, and the
members per GPU-hour that bandwidth would allow at best. The paper recipe's AdamW step (7 [N, F]
fp32 streams per step, ~2.2 MB per member) is added as its share per image at batch 512.

    python benchmarks/bytes_per_image.py [--members 2] [--batches 2,4] [--family standard]
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before torch imports triton: the fused kernels run on CPU here

import argparse  # noqa: E402
from collections import Counter  # noqa: E402

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

from pipelines.hardware import describe  # noqa: E402
from zoo import build  # noqa: E402
from zoo.train.evaluate import normalize, smoothed_ce  # noqa: E402
from zoo.train.grouped import IMPLS, fused_unavailable, grouped_forward, grouped_net  # noqa: E402
from zoo.train.vmap import packed_forward  # noqa: E402

HBM_BYTES_PER_S = 4.3e12  # H200 HBM3e peak bandwidth
EPOCHS, TRAIN_IMAGES, BATCH = 25, 50_000, 512  # the member: 25 epochs of CIFAR-10 at batch 512
ADAMW_STREAMS = 7  # fp32 [N, F] streams per step: read p, g, m, v; write p, m, v


def span_bytes(t: torch.Tensor) -> int:
    """Bytes of memory a (possibly strided or expanded) tensor covers."""
    if t.numel() == 0:
        return 0
    span = 1 + sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride()))
    return min(t.numel(), span) * t.element_size()


class CountBytes(TorchDispatchMode):
    """Sums, over every dispatched op, the bytes of its tensor inputs and outputs, per op name."""

    def __init__(self):
        super().__init__()
        self.by_op = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns):
            return out  # a view: no data moves
        tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
        self.by_op[func.__name__] += sum(span_bytes(t) for t in tensors)
        return out


def step_bytes(family: str, impl: str, members: int, batch: int, dtype: torch.dtype | None) -> Counter:
    """{op: bytes} moved by one step's loss and gradient on the CPU: x [N, B, 3, 32, 32] uint8."""
    base = build(family)
    net = base if impl in ("vmap", "eager") else grouped_net(base, members)
    params = {k: p.detach().expand(members, *p.shape).clone().requires_grad_(True) for k, p in base.named_parameters()}
    x = torch.randint(0, 256, (members, batch, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (members, batch))
    with CountBytes() as count, torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        h = normalize(x)
        if impl == "vmap":
            logits = packed_forward(net, params, h)
        elif impl == "eager":  # one member on the family's own network, as the resident path runs it
            logits = torch.func.functional_call(net, {k: v[0] for k, v in params.items()}, (h[0],))[None]
        else:
            logits = grouped_forward(net, params, h, channels_last=impl == "grouped_cl", fused=impl == "grouped_fused")
        loss = smoothed_ce(logits, y[: len(logits)], torch.zeros(len(logits))).mean(1).sum()
        torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return count.by_op


def per_image(family, impl, members, batches, dtype) -> tuple[float, float, Counter]:
    """(bytes per training image, bytes per step per member not growing with the batch,
    {op: bytes per training image})."""
    n = 1 if impl == "eager" else members
    b1, b2 = batches
    c1, c2 = (step_bytes(family, impl, n, b, dtype) for b in (b1, b2))
    ops = Counter({op: (c2[op] - c1[op]) / (n * (b2 - b1)) for op in c1 | c2})
    slope = sum(ops.values())
    return slope, (sum(c1.values()) - slope * n * b1) / n, ops


def row(impl: str, dtype_name: str, image_bytes: float, step_fixed: float, adamw: float) -> str:
    total = image_bytes + (step_fixed + adamw) / BATCH
    seconds = total * EPOCHS * TRAIN_IMAGES / HBM_BYTES_PER_S
    return (f"{impl:<14}{dtype_name:<6}{image_bytes / 1e6:>10.2f}{step_fixed / 1e6:>11.2f}{total / 1e6:>10.2f}"
            f"{seconds:>10.2f}{3600 / seconds:>12,.0f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="standard", choices=["standard", "w_asym", "sigma_asym"])
    p.add_argument("--members", type=int, default=2, help="N of the packed rows (default 2)")
    p.add_argument("--batches", default="2,4", help="two batch sizes per member, B1,B2 (default 2,4)")
    p.add_argument("--top", type=int, default=0, help="also list the K ops moving the most bytes per image")
    args = p.parse_args(argv)
    batches = tuple(int(b) for b in args.batches.split(","))
    torch.set_num_threads(1)
    params = sum(p.numel() for p in build(args.family).parameters())
    adamw = ADAMW_STREAMS * 4 * params
    print(f"counted on: {describe()}; "
          f"floor for: NVIDIA H200 at {HBM_BYTES_PER_S / 1e12:.1f} TB/s HBM, {EPOCHS} epochs x {TRAIN_IMAGES:,} "
          f"images, batch {BATCH}, AdamW {adamw / 1e6:.2f} MB/step/member added per image")
    print(f"ARITHMETIC from bytes read + written per aten op (TorchDispatchMode), {args.family}, N={args.members}, "
          f"batches {batches}: not a GPU measurement")
    print(f"{'impl':<14}{'dtype':<6}{'MB/image':>10}{'MB/step':>11}{'MB total':>10}{'s/member':>10}{'members/h':>12}")
    for impl in ("eager",) + IMPLS:
        if impl == "grouped_fused" and fused_unavailable():
            print(f"{impl:<14}skipped: {fused_unavailable()}")
            continue
        for name, dtype in (("bf16", torch.bfloat16), ("fp32", None)):
            image, fixed, ops = per_image(args.family, impl, args.members, batches, dtype)
            print(row(impl, name, image, fixed, adamw), flush=True)
            if args.top:
                print("    " + ", ".join(f"{op} {b / 1e6:.2f}" for op, b in ops.most_common(args.top)))
    print("eager: one member on the family's network (the resident path's forward). MB/step: per member, "
          "not growing with the batch (parameters, their gradients); MB total: per image at batch "
          f"{BATCH} with MB/step and AdamW shared over the batch; s/member: that x {EPOCHS * TRAIN_IMAGES:,} "
          f"images / {HBM_BYTES_PER_S / 1e12:.1f} TB/s; members/h: the ceiling 3600 / s/member.\n"
          "CPU autocast is not CUDA's: it runs group_norm in bf16 (CUDA: fp32) and does not cast under "
          "vmap here (vmap bf16 = fp32), so the unfused bf16 rows understate a GPU's traffic; grouped_fused "
          "reads and writes bf16 on both.")


if __name__ == "__main__":
    main()
