"""Weight-matching cost: seconds to align standard ResNet-8 members to a reference on CPU.

Members are synthetic (seeded init plus seeded noise, so GroupNorm affines and the head bias are
not at their init values): the cost of a linear assignment does not depend on training, though
the number of coordinate-descent passes may. Two timings, one torch thread unless told:
- per pair: `zoo.align` called on one member at a time (its set-up included), n pairs;
- per member in a batch: one call aligning all n members to the reference, over `--repeats` runs.

    python benchmarks/align_speed.py [--pairs 32] [--repeats 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import zoo
from zoo.alignment import align
from pipelines.hardware import describe as hardware

FAMILY = "standard"  # the family align accepts without force


@torch.no_grad()
def members(n: int) -> np.ndarray:
    """[n, P] seeded synthetic members."""
    rows = []
    for seed in range(n):
        net = zoo.init_weights(zoo.build(FAMILY), seed)
        vec = zoo.flatten(net)
        rows.append((vec + 0.1 * torch.randn(vec.shape, generator=torch.Generator().manual_seed(1000 + seed))).numpy())
    return np.stack(rows)


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=32, help="members aligned to the reference, n")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the batched alignment")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = members(args.pairs + 1)
    ref, batch = weights[0], weights[1:]
    align(batch[:1], ref, FAMILY)  # warm-up: imports, first allocations
    pair = [seconds(lambda: align(row[None], ref, FAMILY)) for row in batch]
    per_member = [seconds(lambda: align(batch, ref, FAMILY)) / len(batch) for _ in range(args.repeats)]
    print(f"hardware: {hardware()}, torch threads {args.threads}")
    print(f"weight matching, family {FAMILY}, P = {ref.size}, n = {len(batch)} pairs (synthetic members)")
    print(f"  per pair (one call each):      mean {statistics.mean(pair):.4f} s  median {statistics.median(pair):.4f} s"
          f"  (min {min(pair):.4f}, max {max(pair):.4f})")
    print(f"  per member, batch of {len(batch)} in one call: mean {statistics.mean(per_member):.4f} s  "
          f"median {statistics.median(per_member):.4f} s  over {args.repeats} runs")


if __name__ == "__main__":
    main()
