"""LMC speed on CPU: (pair, alpha) test-loss points per second through the stage's path (the MLI
evaluator, one point at a time per process, `--workers` spawned processes), and weight matching's
seconds per standard pair.

Pairs are synthetic (two seeded inits per pair) and so are the uint8 images: the speed of a
forward pass does not depend on the values; weight matching's does a little (it stops after a
pass without improvement), so its figure is for random inits, an upper end for trained nets
(benchmarks/align_speed.py measures trained ones). Prints the hardware and n.

    python benchmarks/lmc_speed.py [--pairs 4] [--alphas 25] [--images 1000] [--workers 2]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

import zoo
from pipelines import mli
from pipelines.hardware import describe as hardware
from pipelines.lmc import LmcConfig, aligned_to


def pair_weights(family: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """[n, P] theta_a and theta_b, two seeded inits per pair."""
    net = zoo.build(family)
    flat = [zoo.flatten(zoo.init_weights(net, s)).numpy() for s in range(2 * n)]
    return np.stack(flat[0::2]), np.stack(flat[1::2])


def tasks(family: str, theta_a: np.ndarray, theta_b: np.ndarray) -> list[mli.Task]:
    """One task per pair, as the stage cuts them when pairs <= workers."""
    rows = pd.DataFrame({"index": range(len(theta_a)), "label_smoothing": 0.0})
    return [mli.Task(family, 0, rows.iloc[i : i + 1].reset_index(drop=True), theta_a[i : i + 1], theta_b[i : i + 1])
            for i in range(len(theta_a))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--alphas", type=int, default=25)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (args.images,), generator=gen)
    evaluation = LmcConfig(zoo="-", alphas=args.alphas, device="cpu", workers=args.workers).evaluation()
    print(f"hardware: {hardware()}")
    print(f"n: {args.pairs} pairs x {args.alphas} alphas per family, {args.images} images, {args.workers} workers")
    for family in ("standard", "sigma_asym", "w_asym"):
        theta_a, theta_b = pair_weights(family, args.pairs)
        start = time.perf_counter()
        for _ in mli.evaluate_curves(tasks(family, theta_a, theta_b), x, y, evaluation):
            pass
        wall = time.perf_counter() - start
        points = args.pairs * args.alphas
        print(f"{family}: {points / wall:.2f} points/s ({points * args.images / wall:,.0f} images/s), "
              f"{wall:.1f} s incl. process start-up")
    seconds = aligned_to(*pair_weights("standard", args.pairs), 100)[1]
    print(f"weight matching (random inits): {seconds.mean():.3f} s per pair (n={args.pairs}, max {seconds.max():.3f})")


if __name__ == "__main__":
    main()
