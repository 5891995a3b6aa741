"""Ray's overhead per pack: the same packs trained and committed in-process and as Ray tasks.

    python benchmarks/sweep_overhead.py [--packs 6] [--n-train 512] [--data DIR]

Each pack is one member (the CPU layout) trained by zoo.generate.run_job on a small
subset. The Ray column includes task dispatch, argument transfer (the data set lives in Ray's
object store), the worker's first-use imports and the result's return; embedded Ray start-up is
reported separately because a sweep pays it once.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import ray

from cluster.executor import cluster_address, connect
from pipelines.hardware import describe
from zoo import load_cifar10, sample_member
from zoo.generate import Job, Work, run_job
from zoo.recipe import Recipe
from zoo.store import init_zoo


def new_zoo(folder: str, recipe: Recipe, data) -> str:
    init_zoo(folder, zoo_seed=0, families={"standard": 0}, recipe=recipe.to_dict(),
             recipe_overrides=recipe.overrides(), data=data.identity)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packs", type=int, default=6)
    ap.add_argument("--n-train", type=int, default=512)
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    recipe = Recipe(epochs=1, n_train=args.n_train, n_test=256, batch_size=64)
    data = recipe.apply_subset(load_cifar10(args.data))
    cfgs = [sample_member(0, i, "standard") for i in range(args.packs)]
    with tempfile.TemporaryDirectory() as tmp:
        zoo_a, zoo_b = new_zoo(f"{tmp}/a", recipe, data), new_zoo(f"{tmp}/b", recipe, data)
        work_a, work_b = (Work(zoo=z, recipe=recipe.to_dict(), asym_seed=0, engine="resident", compile=False,
                               impl="vmap") for z in (zoo_a, zoo_b))
        direct = []
        for c in cfgs:
            t = time.perf_counter()
            run_job(work_a, Job("standard", (c,)), data, "cpu")
            direct.append(time.perf_counter() - t)
        t = time.perf_counter()
        connect(cluster_address(None))
        startup = time.perf_counter() - t
        task, ref = ray.remote(run_job).options(num_cpus=1), ray.put(data)
        via_ray = []
        for c in cfgs:  # one at a time, so each measurement is one pack's round trip
            t = time.perf_counter()
            ray.get(task.remote(work_b, Job("standard", (c,)), ref, "cpu"))
            via_ray.append(time.perf_counter() - t)
    first, rest = via_ray[0] - direct[0], [r - d for r, d in zip(via_ray[1:], direct[1:])]
    print(describe())
    print(f"{args.packs} packs of 1 standard member, 1 epoch on {args.n_train} images, batch 64, committed to a zoo")
    print(f"{'':24}{'median s/pack':>14}")
    print(f"{'in-process':24}{statistics.median(direct):14.3f}")
    print(f"{'Ray task':24}{statistics.median(via_ray[1:]):14.3f}   (first task {via_ray[0]:.2f} s: worker start)")
    print(f"Ray overhead per pack: {statistics.median(rest):.3f} s = {statistics.median(rest) / statistics.median(direct):.1%} "
          f"of the pack's own time; first pack +{first:.2f} s; embedded Ray start {startup:.1f} s once per sweep")


if __name__ == "__main__":
    main()
