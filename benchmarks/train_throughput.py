"""Training throughput of the zoo engines, side by side in one run, and an optional accuracy check.

Rows (all on the device chosen, ResNet-8 of --family, batch --batch per member):
  resident x1      one member at a time, the baseline (zoo.train, torch.optim.AdamW)
  ffcv x1          one member, batches from an FFCV Loader (when ffcv is importable)
  packed xN IMPL   N members in one step (zoo.train.packed), for N in --packs and each forward of
                   --impls (vmap: zoo.train.vmap; grouped: zoo.train.grouped); eager, and compiled
                   with --compile (rows printed as they finish: a CUDA fault in compiled
                   code kills the process, the rows above it stay)
Each row trains one warm-up epoch of --steps steps (compilation happens there), then times
one epoch of --steps steps. Reported: images/s summed over the members, members per hour at
25 epochs x 50,000 images (training steps only: evaluation and file writing excluded), the
ratio to the baseline, and peak GPU memory. Targets on one H100/H200 (issue 3): >= 4,000
members per GPU-hour, >= 15x the baseline.

--accuracy then trains --accuracy-members sampled members (zoo seed 0) of standard and W-Asym
on the full training set with the paper recipe (packed on cuda with the first of --impls,
resident on cpu) and prints mean
test accuracy next to the paper's 73.8% / 64.0%. Sampled epoch counts (10..40) leave about two
members per pack at 64 members; --accuracy-epochs 25 fills the packs (and departs from Table 8).

  GPU, everything:  python benchmarks/train_throughput.py --compile --accuracy
  CPU smoke run:    python benchmarks/train_throughput.py --batch 32 --steps 3 --packs 2,4
  GPU session:      benchmarks/gpu_session.sh runs this in steps within one device call
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import numpy as np
import torch


from zoo import load_cifar10, sample_member
from zoo.data import Cifar10, DataError
from zoo.train.grouped import IMPLS, check_impl, fused_unavailable
from zoo.train.packed import Pack
from zoo.recipe import Recipe
from zoo.train import device_label, new_member, resident, resident_batches, train_epoch, train_members
from pipelines.hardware import describe

MEMBER_IMAGES = 25 * 50_000  # a member's training images at 25 epochs of full CIFAR-10
PAPER_TEST_ACC = {"standard": 0.738, "w_asym": 0.640}  # paper, mean test accuracy


def synthetic(n_train: int) -> Cifar10:
    """Random images: throughput does not depend on the pixels."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, n_train)
    return Cifar10(x, y, x[:1000], y[:1000], {"sha256": "synthetic", "official": False, "name": "random images"})


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_epochs(run_epoch, device: torch.device) -> float:
    """Seconds of the second of two epochs (the first warms up and compiles)."""
    run_epoch(0)
    sync(device)
    start = time.perf_counter()
    run_epoch(1)
    sync(device)
    return time.perf_counter() - start


def solo_epoch(res, recipe: Recipe, family: str, device, batches_of):
    """(run_epoch, note) for one member of `family` fed by batches_of(seed, epoch)."""
    cfg = sample_member(0, 0, family)
    net, opt = new_member(cfg, recipe, asym_seed=0, device=device)
    lrs = np.full(recipe.steps_per_epoch(len(res.train_y)), 0.5 * cfg.lr)
    autocast = recipe.autocast_dtype(device)
    return (lambda epoch: train_epoch(net, opt, batches_of(cfg.seed, epoch), lrs, cfg.label_smoothing, autocast,
                                             nonfinite=recipe.nonfinite),
            lambda: "eager")


def ffcv_epoch(data, res, recipe: Recipe, family: str, device, beton_dir: str):
    from zoo.train.ffcv import ffcv_batches, train_loader, write_betons

    loader = train_loader(write_betons(recipe.apply_subset(data), beton_dir)["train"], recipe, device)
    return solo_epoch(res, recipe, family, device, lambda seed, epoch: ffcv_batches(loader, seed, epoch))


def pack_epoch(res, recipe: Recipe, family: str, n: int, compiled: bool, impl: str, cuda_graph: bool = False):
    """(run_epoch, note) for a pack of n members; the note says whether compilation held. Each
    epoch draws the next on the background thread, as train_pack does."""
    pack = Pack([sample_member(0, i, family) for i in range(n)], recipe, res, compile=compiled, impl=impl,
                cuda_graph=cuda_graph)
    factors = np.full(recipe.steps_per_epoch(len(res.train_y)), 0.5)
    fell_back = "compile failed: eager fallback"
    return (lambda epoch: pack.train_epoch(epoch, factors, next_epoch=epoch + 1),
            lambda: ("compiled" if pack.compiled is not None else fell_back) if compiled else "eager")


def measure_row(name: str, members: int, make_epoch, device, images: int, baseline: list, rows: list,
                saved=lambda rows: None) -> None:
    """Time one row, print it at once, append it to `rows` and call `saved(rows)`; the first row
    measured is the baseline."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        run_epoch, note = make_epoch()
        seconds = timed_epochs(run_epoch, device)
    except torch.cuda.OutOfMemoryError:
        print(f"{name:<34} out of GPU memory", flush=True)
        return
    rate = members * images / seconds
    baseline[:] = baseline or [rate]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    mem = f"{peak:6.1f}" if peak is not None else "     -"
    print(f"{name:<34} {rate:>12,.0f} {3600 * rate / MEMBER_IMAGES:>14,.0f} {rate / baseline[0]:>8.2f}x {mem}  "
          f"{note()}", flush=True)
    rows.append({"row": name, "members": members, "images_per_s": rate, "members_per_hour": 3600 * rate / MEMBER_IMAGES,
                 "vs_baseline": rate / baseline[0], "peak_gib": peak, "note": note()})
    saved(rows)


def throughput(args, data: Cifar10, device: torch.device, saved) -> list[dict]:
    """Every row, printed as measured; `saved(rows)` after each (a run cut short keeps its rows)."""
    images = args.steps * args.batch
    recipe = Recipe(batch_size=args.batch, n_train=images, n_test=min(1000, len(data.test_y)))
    res, fam, baseline, rows = resident(data, recipe, device), args.family, [], []
    print(f"{'engine':<34} {'images/s':>12} {'members/hour':>14} {'vs x1':>9} {'GiB':>6}  note", flush=True)
    measure_row("resident x1 (baseline)", 1, lambda: solo_epoch(res, recipe, fam, device, lambda s, e: (
        resident_batches(res, recipe, s, e))), device, images, baseline, rows, saved)
    if args.ffcv and has_ffcv():
        measure_row("ffcv x1", 1, lambda: ffcv_epoch(data, res, recipe, fam, device, args.beton_dir), device,
                    images, baseline, rows, saved)
    elif args.ffcv:
        print(f"{'ffcv x1':<34} skipped: ffcv is not importable", flush=True)
    for compiled in {"no": (False,), "yes": (False, True), "only": (True,)}[args.compile]:
        for n in args.packs:
            for impl in args.impls:
                label = f"packed x{n} {impl}" + (" compiled" if compiled else "") + (" graph" * args.cuda_graph)
                measure_row(label, n, lambda: pack_epoch(res, recipe, fam, n, compiled, impl, args.cuda_graph), device,
                            images, baseline, rows, saved)
    return rows


def has_ffcv() -> bool:
    try:
        import ffcv  # noqa: F401
    except ImportError:
        return False
    return True


def accuracy(args, data: Cifar10, device: torch.device) -> None:
    recipe = Recipe(epochs=args.accuracy_epochs)
    engine = (f"packed ({args.impls[0]}, {'compiled' if args.compile != 'no' else 'eager'})" if device.type == "cuda"
              else "resident")
    print(f"\naccuracy: {args.accuracy_members} members per family, zoo seed 0, full CIFAR-10 "
          f"({data.identity['name']}), recipe overrides {recipe.overrides() or 'none (paper)'}, {engine}", flush=True)
    for family, paper in PAPER_TEST_ACC.items():
        cfgs = [sample_member(0, i, family) for i in range(args.accuracy_members)]
        start = time.perf_counter()
        out = train_members(cfgs, data, recipe, device=device, engine="auto", compile=args.compile != "no",
                            impl=args.impls[0])
        wall = time.perf_counter() - start
        ok = [r.metrics["test_acc"] for r in out if r.status == "ok"] or [float("nan")]
        n_ok = sum(r.status == "ok" for r in out)
        chance = sum(r.metrics["train_acc"] < 0.2 for r in out if r.status == "ok")
        print(f"{family:<10} test acc mean {statistics.mean(ok):.1%} median {statistics.median(ok):.1%} "
              f"(n={n_ok} ok, {len(out) - n_ok} diverged, {chance} at chance) | paper mean {paper:.1%} | "
              f"{wall:.0f} s, {3600 * len(out) / wall:,.0f} members/hour with evaluation", flush=True)


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    p.add_argument("--family", default="standard", choices=["standard", "w_asym", "sigma_asym"],
                   help="family of the timed members (default standard)")
    p.add_argument("--batch", type=int, default=512, help="images per step per member (default 512)")
    p.add_argument("--steps", type=int, default=20, help="steps per timed epoch (default 20)")
    p.add_argument("--packs", default="16,64,128", help="comma-separated pack sizes N (default 16,64,128)")
    runnable = ",".join(i for i in IMPLS if i != "grouped_fused" or not fused_unavailable())
    p.add_argument("--impls", default=runnable, help=f"packed forwards to time (default: those this machine runs, {runnable})")
    p.add_argument("--compile", nargs="?", const="yes", default="no", choices=["no", "yes", "only"],
                   help="also time packed rows under torch.compile (only: compiled rows alone); the "
                        "accuracy run compiles unless no")
    p.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN time its algorithms per shape")
    p.add_argument("--skip-throughput", action="store_true", help="no throughput rows (with --accuracy)")
    p.add_argument("--cuda-graph", action="store_true", help="packed rows replay their step as a CUDA graph")
    p.add_argument("--json", default=None, help="also write the rows and the hardware to this JSON file")
    p.add_argument("--jsonl", default=None, help="also append each row, as measured, to this JSON-lines file")
    p.add_argument("--no-ffcv", dest="ffcv", action="store_false", help="skip the FFCV row")
    p.add_argument("--beton-dir", default=None, help="where .beton files are written (default a temporary folder)")
    p.add_argument("--data", default=None, help="CIFAR-10 root (default $SYMZOO_DATA); random images if absent")
    p.add_argument("--synthetic", action="store_true", help="time on random images without looking for CIFAR-10")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default torch's)")
    p.add_argument("--accuracy", action="store_true", help="then train members to report test accuracy")
    p.add_argument("--accuracy-members", type=int, default=64, help="members per family (default 64)")
    p.add_argument("--accuracy-epochs", type=int, default=None,
                   help="epochs of every member (default: sampled, Table 8)")
    args = p.parse_args(argv)
    args.beton_dir = args.beton_dir or tempfile.mkdtemp(prefix="symzoo-beton-")
    args.packs = [int(n) for n in args.packs.split(",") if n]
    args.impls = [check_impl(i) for i in args.impls.split(",") if i]
    return args


def load_data(args) -> Cifar10:
    """CIFAR-10 from --data, or random images (--synthetic, or no copy found and no --accuracy)."""
    if args.synthetic:
        return synthetic(args.steps * args.batch)
    try:
        return load_cifar10(args.data)
    except DataError as e:
        if args.accuracy:
            raise
        print(f"no CIFAR-10 ({str(e).splitlines()[0][:80]}...): timing on random images")
        return synthetic(args.steps * args.batch)


def main(argv=None) -> None:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    device = torch.device(args.device)
    data = load_data(args)
    hardware = f"{describe()}, {torch.get_num_threads()} torch threads, training on {device_label(device)}"
    print(f"hardware: {hardware}\ndata: {data.identity['name']}; batch {args.batch}/member, {args.steps} timed "
          f"steps after a warm-up epoch; family {args.family}; cudnn.benchmark {args.cudnn_benchmark}\n", flush=True)
    context = {"hardware": hardware, "torch": torch.__version__, "batch": args.batch, "family": args.family,
               "data": data.identity["name"], "cudnn_benchmark": args.cudnn_benchmark}

    def saved(rows):
        if args.json:
            with open(args.json, "w") as f:
                json.dump({**context, "rows": rows}, f, indent=1)
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps({**context, **rows[-1]}) + "\n")

    if not args.skip_throughput:
        throughput(args, data, device, saved)
    if args.accuracy:
        accuracy(args, data, device)


if __name__ == "__main__":
    main()
