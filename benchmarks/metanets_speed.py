"""Metanetwork speed: seconds per training epoch over 1,000 members of the standard family
(P = 78,042, batch 128, AdamW, MSE), with peak memory, per metanetwork and device.

Each measurement runs in its own process, so its peak memory is its own: on CPU the process's
peak resident set (ru_maxrss, the 1000 x 78,042 float32 inputs, 312 MB, included), on CUDA
torch.cuda.max_memory_allocated. Wall time is printed with the process's CPU time, the
steadier figure on a shared machine. An epoch is one shuffled pass of AdamW steps over all 1,000
members, after one warm-up step; StatNN's statistics are computed once per data set (as in the
stage) and timed separately as "featurize".

DeepSets is the heavy one: phi's activations are [128, 78,042, 64] floats, 2.6 GB each. The
stage computes phi in closed form (ScalarPhi) and sums it in chunks of 8,192 elements under
torch.utils.checkpoint (metanets/deepsets.py; a stage config sets another chunk with
`metanet_options: {deepsets: {chunk: N}}`: memory changes, results do not). The "naive" variant
is the textbook Linear-LN-ReLU over all elements at once; it is compared with the chunked one at
a batch small enough for the naive one to fit (--naive-batch, default 16), and the ratio is printed.
Inputs are seeded random numbers: the speed does not depend on their values.

    python benchmarks/metanets_speed.py [--members 1000] [--device auto] [--threads 2]

Measured on an AMD EPYC VM, 2 logical cores shared with other jobs (load ~3-6, so wall times
are inflated; CPU times are the steadier figure), torch 2.13 CPU, 2 threads, 1,000 members:
    mlp       1.6 s CPU / epoch, peak 1.2 GB      dmc      75 s CPU, peak 3.0 GB
    deepsets 88 s CPU, peak 1.6 GB (batch 128)   statnn  0.4 s CPU + 9.4 s featurize once, 0.8 GB
    DeepSets at batch 16, chunked / naive: CPU time x1.24 (the checkpoint's second phi forward),
    peak memory 945 / 1,994 MB (x0.47). The naive activations grow linearly with the batch, so
    at batch 128 they would need roughly 8 x 1.4 GB, about 11 GB; the chunked run peaks at 1.6 GB.
No GPU was available for these numbers.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch


import zoo
from metanets.base import seeded_init
from metanets.deepsets import mlp_block
from metanets.registry import METANETS, build
from metanets.train import featurize_all
from pipelines.hardware import describe as hardware


def make_net(name: str, layout) -> torch.nn.Module:
    """The stage's metanetwork, or DeepSets with the naive phi over all elements at once."""
    if name != "deepsets-naive":
        return build(name, layout)
    net = build("deepsets", layout, chunk=layout.size)
    net.head[1].phi = mlp_block(1, 64)
    return net


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux reports KiB


def measure(name: str, members: int, batch: int, device: torch.device) -> dict:
    """One epoch of `name` in this process: seconds and peak memory."""
    layout = zoo.layout(zoo.build("standard"))
    x = np.random.default_rng(0).standard_normal((members, layout.size), dtype=np.float32)
    y = torch.from_numpy(np.random.default_rng(1).standard_normal(members, dtype=np.float32)).to(device)
    net = seeded_init(make_net(name, layout), 0).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    start = time.perf_counter()
    feats = featurize_all(net, x, device)
    sync()
    featurize_s = time.perf_counter() - start
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)

    def step(idx):
        loss = torch.nn.functional.mse_loss(net.forward_features(feats[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    net.train()
    step(torch.arange(min(batch, members), device=device))  # warm-up
    sync()
    order = torch.randperm(members, generator=torch.Generator().manual_seed(2)).to(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(0, members, batch):
        step(order[i : i + batch])
    sync()
    epoch_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    return {"metanet": name, "batch": batch, "members": members, "device": str(device), "epoch_s": epoch_s,
            "cpu_s": cpu_s, "featurize_s": featurize_s, "peak_mb": peak_mb(device)}


def in_child(name: str, members: int, batch: int, device: str, threads: int) -> dict:
    """`measure` in a fresh process, so that peak memory is this measurement's alone."""
    code = (f"import json, torch; torch.set_num_threads({threads}); import sys; sys.path.insert(0, 'benchmarks'); "
            f"from metanets_speed import measure; "
            f"print(json.dumps(measure({name!r}, {members}, {batch}, torch.device({device!r}))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        return {"metanet": name, "batch": batch, "members": members, "device": device,
                "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def line(r: dict) -> str:
    head = f"{r['metanet']:<15} {r['device']:<6} batch {r['batch']:>4}"
    if "error" in r:
        return f"{head}  FAILED: {r['error']}"
    return (f"{head}  {r['epoch_s']:8.2f} s/epoch (CPU time {r['cpu_s']:8.2f} s)  "
            f"{r['members'] / r['epoch_s']:8.1f} members/s  featurize {r['featurize_s']:6.2f} s  peak {r['peak_mb']:7.0f} MB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--members", type=int, default=1000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--naive-batch", type=int, default=16, help="batch of the naive-vs-chunked DeepSets comparison")
    p.add_argument("--device", default="auto", help="auto (cpu, and cuda when there is one) | cpu | cuda")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads per measurement")
    p.add_argument("--metanets", default=",".join(METANETS))
    args = p.parse_args()
    devices = ["cpu", "cuda"] if args.device == "auto" and torch.cuda.is_available() else \
        ["cpu"] if args.device == "auto" else [args.device]
    print(hardware(), f"| {args.threads} torch threads on CPU | members {args.members}, P = 78,042 (standard)")
    for device in devices:
        for name in args.metanets.split(","):
            print(line(in_child(name, args.members, args.batch, device, args.threads)), flush=True)
        if "deepsets" in args.metanets.split(","):
            pair = [in_child(n, args.members, args.naive_batch, device, args.threads) for n in ("deepsets-naive", "deepsets")]
            for r in pair:
                print(line(r), flush=True)
            if not any("error" in r for r in pair):
                naive, chunked = pair
                print(f"  DeepSets chunked / naive at batch {args.naive_batch} on {device}: wall time x"
                      f"{chunked['epoch_s'] / naive['epoch_s']:.2f}, CPU time x{chunked['cpu_s'] / naive['cpu_s']:.2f}, "
                      f"peak memory x{chunked['peak_mb'] / naive['peak_mb']:.2f}")


if __name__ == "__main__":
    main()
