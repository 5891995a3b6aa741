"""The steps of one GPU measurement session; `benchmarks/gpu_session.sh` runs each in its own process.

    python benchmarks/gpu_session.py STEP --out DIR [--dry-run]

Every row is appended to a file under DIR as soon as it is measured (JSON lines, or text for the
profiler tables), so a step killed by its timeout or a CUDA fault keeps what it measured.
--dry-run runs the same code on the CPU at tiny sizes (fp32, torch.compile with the "eager"
backend: it checks the plumbing, not inductor), which tests/test_gpu_session.py does in CI.

Steps (the order the shell script runs them in, safe to risky):
  env                 versions, GPU, clocks                                  -> env.json
  conv                the 9 conv shapes of ResNet-8 at N members x B images: grouped NCHW, grouped
                      NHWC and block-diagonal dense, forward / data-gradient / weight-gradient,
                      TFLOP/s of the members' work and the top kernel's name  -> conv.jsonl
  norm                per-member GroupNorm (autocast fp32, bf16, the fused op of zoo.train.fused_norm
                      when it exists): error against fp64 first, then GB/s    -> norm.jsonl
  profile_eager,      torch.profiler of one packed step (eager / compiled): device time by category
  profile_compiled    and the top operators                                  -> profile.txt
  throughput_eager,   benchmarks/train_throughput.py: one member alone, then packs of N per forward,
  throughput_compiled eager / compiled, in one process each                  -> throughput.jsonl
  memory              peak memory of one eager step per pack size against packed.estimate_peak_bytes
                                                                              -> memory.jsonl
  risky_n128,         N=128 (throughput and memory), CUDA-graph replay, compiled channels_last:
  risky_graph         what earlier sessions saw fault or do not know yet
"""
from __future__ import annotations

import argparse
import functools
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from zoo import build, sample_member  # noqa: E402
from zoo.recipe import Recipe  # noqa: E402
from zoo.train import resident  # noqa: E402
from zoo.train.grouped import IMPLS, GroupedNorm, check_impl  # noqa: E402

KNOWN_IMPLS = ("vmap", "grouped", "grouped_cl")  # measured before; any other forward in IMPLS is new, so later
GPU = {"members": 64, "batch": 512, "dtype": torch.bfloat16, "packs": (8, 16, 32, 64), "steps": 20, "reps": 10,
       "compiled_impls": ["grouped", "vmap"]}
DRY = {"members": 2, "batch": 4, "dtype": torch.float32, "packs": (1, 2), "steps": 2, "reps": 1,
       "compiled_impls": ["grouped"]}


class Session:
    """Where rows go and at which sizes they are measured."""

    def __init__(self, out: Path, dry_run: bool):
        self.out, self.dry_run = out, dry_run
        self.size = DRY if dry_run else GPU
        self.device = torch.device("cpu" if dry_run else "cuda")
        out.mkdir(parents=True, exist_ok=True)

    def row(self, file: str, row: dict) -> None:
        """Append one JSON row to `file` under the output folder, and print it."""
        line = json.dumps(row, default=str)
        with open(self.out / file, "a") as f:
            f.write(line + "\n")
        print(line, flush=True)

    def text(self, file: str, text: str) -> None:
        with open(self.out / file, "a") as f:
            f.write(text + "\n")
        print(text, flush=True)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def seconds(self, fn) -> float:
        """Median seconds of `fn()` over the session's repetitions, after two warm-up calls."""
        for _ in range(2):
            fn()
        times = []
        for _ in range(self.size["reps"]):
            self.sync()
            start = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]

    def top_kernel(self, fn) -> str:
        """Name of the kernel (CPU: operator) that took the most time in one call of `fn`."""
        acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA]
                                                        if self.device.type == "cuda" else [])
        with torch.profiler.profile(activities=acts) as prof:
            fn()
            self.sync()
        events = [e for e in prof.events() if self.device.type != "cuda" or e.device_type.name == "CUDA"]
        if not events:
            return "?"
        key = "device_time" if self.device.type == "cuda" else "cpu_time"
        best = max(events, key=lambda e: getattr(e, key, 0.0) or 0.0)
        return best.name[:120]


# --- env ---------------------------------------------------------------------------------------

SMI_FIELDS = "name,memory.total,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu"


def step_env(s: Session) -> None:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "numpy": __import__("numpy").__version__,
            "cpu": platform.processor() or platform.machine(), "impls": IMPLS}
    try:
        import triton
        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=p.total_memory / 2**30, sms=p.multi_processor_count,
                    free_gib=torch.cuda.mem_get_info()[0] / 2**30)
    info["nvidia_smi"] = _smi()
    with open(s.out / "env.json", "w") as f:
        json.dump(info, f, indent=1, default=str)
    print(json.dumps(info, default=str), flush=True)


def _smi() -> str:
    try:
        return subprocess.run(["nvidia-smi", f"--query-gpu={SMI_FIELDS}", "--format=csv"], capture_output=True,
                              text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"nvidia-smi: {e}"


# --- conv --------------------------------------------------------------------------------------

def conv_shapes(family: str = "standard") -> list[dict]:
    """The family's convolutions as run in a forward: channels, kernel, stride, padding, input side."""
    net, shapes = build(family), []

    def hook(module, inputs, _):
        shapes.append({"c_in": module.in_channels, "c_out": module.out_channels, "k": module.kernel_size[0],
                       "stride": module.stride[0], "padding": module.padding[0], "side": inputs[0].shape[-1]})

    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(hook)
    net(torch.zeros(1, 3, 32, 32))
    return shapes


def conv_operands(shape: dict, n: int, b: int, variant: str, dtype, device) -> tuple:
    """(x, w, groups) for N members' conv: grouped ([N*C_out, C_in, k, k], groups=N) in NCHW or
    NHWC, or one dense conv with the block-diagonal [N*C_out, N*C_in, k, k] weight."""
    ci, co, k = shape["c_in"], shape["c_out"], shape["k"]
    x = torch.randn(b, n * ci, shape["side"], shape["side"], dtype=dtype, device=device)
    w = torch.randn(n * co, ci, k, k, dtype=dtype, device=device) / (ci * k * k) ** 0.5
    if variant == "grouped_nhwc":
        x, w = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    if variant != "dense_blockdiag":
        return x, w, n
    dense = torch.zeros(n * co, n * ci, k, k, dtype=dtype, device=device)
    for i in range(n):
        dense[i * co:(i + 1) * co, i * ci:(i + 1) * ci] = w[i * co:(i + 1) * co]
    return x, dense, 1


def step_conv(s: Session) -> None:
    n, b, dtype = s.size["members"], s.size["batch"], s.size["dtype"]
    for shape in conv_shapes():
        side_out = (shape["side"] + 2 * shape["padding"] - shape["k"]) // shape["stride"] + 1
        flops = 2 * b * n * shape["c_out"] * shape["c_in"] * shape["k"] ** 2 * side_out**2  # the members' work
        for variant in ("grouped_nchw", "grouped_nhwc", "dense_blockdiag"):
            x, w, groups = conv_operands(shape, n, b, variant, dtype, s.device)
            conv = functools.partial(F.conv2d, stride=shape["stride"], padding=shape["padding"], groups=groups)
            dy = torch.randn_like(conv(x, w))
            for name, mask in (("forward", None), ("data_grad", (True, False, False)),
                               ("weight_grad", (False, True, False))):
                fn = (lambda: conv(x, w)) if mask is None else functools.partial(
                    torch.ops.aten.convolution_backward, dy, x, w, None, [shape["stride"]] * 2,
                    [shape["padding"]] * 2, [1, 1], False, [0, 0], groups, list(mask))
                sec = s.seconds(fn)
                s.row("conv.jsonl", {**shape, "members": n, "batch": b, "dtype": str(dtype), "variant": variant,
                                     "pass": name, "ms": 1e3 * sec, "tflops": flops / sec / 1e12,
                                     "kernel": s.top_kernel(fn)})
            del x, w, dy


# --- GroupNorm ---------------------------------------------------------------------------------

NORM_SHAPES = ((16, 32), (32, 16), (64, 8))  # (channels, side) of ResNet-8's three widths


def norm_variants(n: int, c: int, device) -> dict:
    """name -> (input dtype, forward(x, weight [N*C], bias [N*C]) -> y): the grouped forward's
    GroupedNorm under autocast (GroupNorm runs in fp32) and on bf16 directly, and
    zoo.train.fused_norm's Triton kernel where it runs."""
    module = GroupedNorm(nn.GroupNorm(1, c), n).to(device)

    def grouped(x, w, b):
        return functional_call(module, {"weight": w.view(n, c), "bias": b.view(n, c)}, (x,))

    def autocast(x, w, b):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return grouped(x, w, b)

    out = {"autocast_fp32": (torch.bfloat16, autocast), "bf16": (torch.bfloat16, grouped)}
    fused = _fused_norm(device)
    if fused is not None:
        out["fused"] = (torch.bfloat16, lambda x, w, b: fused(x, w.view(n, c), b.view(n, c), eps=module.eps))
    return out


@functools.lru_cache(maxsize=None)  # say once why the row is skipped
def _fused_norm(device: torch.device):
    """zoo.train.fused_norm.group_norm_act where it imports and runs on `device`, else None."""
    try:
        from zoo.train import fused_norm
    except Exception as e:  # missing, or Triton absent: the row is skipped, the step goes on
        print(f"fused GroupNorm row skipped: zoo.train.fused_norm not importable ({type(e).__name__}: {e})")
        return None
    why = fused_norm.unavailable(device)
    if why:
        print(f"fused GroupNorm row skipped: {why}")
        return None
    return fused_norm.group_norm_act


def _norm_run(fn, x, w, b, dy):
    """(y, dx, dw, db) of one forward and backward."""
    x, w, b = (t.detach().requires_grad_(True) for t in (x, w, b))
    y = fn(x, w, b)
    dx, dw, db = torch.autograd.grad(y, (x, w, b), dy.to(y.dtype))
    return y, dx, dw, db


def step_norm(s: Session) -> None:
    n, batch = s.size["members"], s.size["batch"]
    for c, side in NORM_SHAPES:
        gen = torch.Generator(s.device).manual_seed(0)
        x64 = 3 * torch.randn(batch, n * c, side, side, generator=gen, device=s.device, dtype=torch.float64) + 1
        w64, b64 = (1 + 0.1 * torch.randn(n * c, generator=gen, device=s.device, dtype=torch.float64) for _ in "wb")
        dy64 = torch.randn(x64.shape, generator=gen, device=s.device, dtype=torch.float64)
        variants = norm_variants(n, c, s.device)
        for name, (dtype, fn) in variants.items():
            x = x64.to(dtype)  # the fp64 reference sees the same rounded input
            ref = _norm_run(variants["bf16"][1], x.double(), w64, b64, dy64)  # the plain op in fp64
            got = _norm_run(fn, x, w64.float(), b64.float(), dy64)
            errors = {f"rel_err_{k}": float((g.detach().double() - r).norm() / r.norm())
                      for k, g, r in zip(("y", "dx", "dw", "db"), got, ref)}
            del ref
            y, dx = got[0], got[1]
            fwd = s.seconds(lambda: fn(x, w64.float(), b64.float()))
            both = s.seconds(lambda: _norm_run(fn, x, w64.float(), b64.float(), dy64.to(dtype)))
            moved = x.nbytes + y.nbytes  # read x, write y; the backward reads x and dy, writes dx
            s.row("norm.jsonl", {"channels": c, "side": side, "members": n, "batch": batch, "variant": name, **errors,
                                 "forward_ms": 1e3 * fwd, "forward_gb_s": moved / fwd / 1e9,
                                 "fwd_bwd_ms": 1e3 * both,
                                 "fwd_bwd_gb_s": (moved + x.nbytes + y.nbytes + dx.nbytes) / both / 1e9})
            del got, y, dx


# --- profile -----------------------------------------------------------------------------------

CATEGORIES = (  # (category, kernel-name pattern), first match wins
    ("conv", r"conv|cudnn|implicit|dgrad|wgrad|xmma|winograd|fprop|depthwise"),
    ("norm", r"group_norm|layer_norm|norm_|welford|native_group"),
    ("matmul", r"gemm|bmm|matmul|cutlass|addmm|\bmm\b"),
    ("index/copy", r"index|gather|scatter|copy|cat|memcpy|memset|fill|flip|where"),
    ("reduce", r"reduce|sum|mean|max|min|softmax|argmax"),
    ("triton fused", r"^triton_"),
)


def category(name: str) -> str:
    for cat, pattern in CATEGORIES:
        if re.search(pattern, name, re.IGNORECASE):
            return cat
    return "elementwise/other"


def profiled_pack(s: Session, compiled: bool):
    """A pack of N members at batch B, one step per epoch, warmed up (and compiled) by two epochs."""
    from zoo.train.packed import Pack

    n, b = s.size["members"], s.size["batch"]
    recipe = Recipe(batch_size=b, n_train=b, n_test=b)
    pack = Pack([sample_member(0, i, "standard") for i in range(n)], recipe, resident(_data(b), recipe, s.device),
                compile=compiled, impl="grouped")
    for epoch in range(2):
        pack.train_epoch(epoch, [0.5], next_epoch=epoch + 1)
    return pack


def step_profile(s: Session, compiled: bool) -> None:
    pack = profiled_pack(s, compiled)
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA]
                                                    if s.device.type == "cuda" else [])
    s.sync()
    with torch.profiler.profile(activities=acts) as prof:
        pack.train_epoch(2, [0.5])
        s.sync()
    device_events = [e for e in prof.events() if e.device_type.name == "CUDA"]
    key = "device_time" if device_events else "self_cpu_time_total"
    events = device_events or [e for e in prof.events() if e.name.startswith("aten::")]
    totals: dict[str, float] = {}
    for e in events:
        totals[category(e.name)] = totals.get(category(e.name), 0.0) + (getattr(e, key, 0.0) or 0.0)
    whole = sum(totals.values()) or 1.0
    title = (f"packed step x{pack.buf.shape[0]} grouped, batch {s.size['batch']}, "
             f"{'compiled' if pack.compiled is not None else 'eager'} ({'device' if device_events else 'CPU'} time)")
    lines = [f"=== {title}", f"{'category':<20} {'ms':>10} {'share':>7}"]
    lines += [f"{c:<20} {t / 1e3:>10.3f} {t / whole:>7.1%}" for c, t in sorted(totals.items(), key=lambda kv: -kv[1])]
    sort = "cuda_time_total" if device_events else "self_cpu_time_total"
    s.text("profile.txt", "\n".join(lines) + "\n" + prof.key_averages().table(sort_by=sort, row_limit=20) + "\n")


# --- throughput and memory ---------------------------------------------------------------------

def _data(n_train: int):
    from train_throughput import synthetic

    return synthetic(max(n_train, 1000))


def throughput(s: Session, *, packs, impls, compile: str, extra=()) -> None:
    import train_throughput

    argv = ["--device", s.device.type, "--batch", str(s.size["batch"]), "--steps", str(s.size["steps"]),
            "--packs", ",".join(map(str, packs)), "--impls", ",".join(impls), "--compile", compile,
            "--no-ffcv", "--jsonl", str(s.out / "throughput.jsonl"), *extra]
    data = _session_data()
    train_throughput.main(argv + (["--data", data] if data else ["--synthetic"]))


def _session_data() -> str | None:
    import os

    root = os.environ.get("SYMZOO_DATA")
    return root if root and (Path(root) / "cifar-10-batches-py" / "test_batch").exists() else None


def ordered_impls() -> list[str]:
    """The forwards this process can run, those measured before first, new ones (the fused
    GroupNorm's) after: a fault in a new one loses no earlier row."""
    runnable = []
    for impl in [i for i in KNOWN_IMPLS if i in IMPLS] + [i for i in IMPLS if i not in KNOWN_IMPLS]:
        try:
            runnable.append(check_impl(impl))
        except ValueError as e:
            print(f"{impl} skipped: {e}")
    return runnable


def step_memory(s: Session, sizes) -> None:
    from zoo.train.packed import HEADROOM, Pack, activation_bytes, estimate_peak_bytes

    b = s.size["batch"]
    recipe = Recipe(batch_size=b, n_train=b, n_test=b)
    res = resident(_data(b), recipe, s.device)
    dtype = recipe.autocast_dtype(s.device)
    for n in sizes:
        if s.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if s.device.type == "cuda" else 0
        try:
            pack = Pack([sample_member(0, i, "standard") for i in range(n)], recipe, res, impl="grouped")
            pack.train_epoch(0, [0.5])
            s.sync()
            peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if s.device.type == "cuda" else None
            note = "ok"
        except torch.cuda.OutOfMemoryError as e:
            peak, note = None, f"out of memory: {str(e)[:100]}"
        estimate = estimate_peak_bytes("standard", n, b, impl="grouped", dtype=dtype, n_train=b)
        s.row("memory.jsonl", {"members": n, "batch": b, "impl": "grouped", "dtype": str(dtype), "peak_gib": peak,
                               "estimate_gib": estimate / HEADROOM / 2**30, "with_headroom_gib": estimate / 2**30,
                               "activation_mb_per_image": activation_bytes("standard", "grouped", dtype) / 1e6,
                               "note": note})
        pack = None


STEPS = {
    "env": step_env,
    "conv": step_conv,
    "norm": step_norm,
    "profile_eager": lambda s: step_profile(s, compiled=False),
    "profile_compiled": lambda s: step_profile(s, compiled=True),
    "throughput_eager": lambda s: throughput(s, packs=[s.size["members"]], impls=ordered_impls(), compile="no"),
    "memory": lambda s: step_memory(s, s.size["packs"]),
    "throughput_compiled": lambda s: throughput(s, packs=[s.size["members"]], impls=s.size["compiled_impls"],
                                                compile="only"),
    "risky_n128": lambda s: (step_memory(s, [2 * s.size["members"]]),
                             throughput(s, packs=[2 * s.size["members"]], impls=["grouped"], compile="yes")),
    "risky_graph": lambda s: (throughput(s, packs=[s.size["members"]], impls=["grouped"], compile="yes",
                                         extra=["--cuda-graph"] if s.device.type == "cuda" else []),
                              throughput(s, packs=[s.size["members"]], impls=["grouped_cl"], compile="only")),
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=list(STEPS))
    p.add_argument("--out", required=True, type=Path, help="folder the rows are appended to")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, compile with the eager backend")
    args = p.parse_args(argv)
    if args.dry_run:
        torch.set_num_threads(1)
        # Pack calls torch.compile at run time: the eager backend traces with dynamo but skips
        # inductor's minutes of C++ compilation on a CPU
        torch.compile = functools.partial(torch.compile, backend="eager")
    elif not torch.cuda.is_available():
        sys.exit(f"{args.step}: no CUDA device here; use --dry-run for a CPU check of the plumbing")
    STEPS[args.step](Session(args.out, args.dry_run))


if __name__ == "__main__":
    main()
