"""The driver at 100,000 planned members: planning, scheduling and progress tracking, overhead only.

    python benchmarks/driver_scale.py [--members 100000] [--packs 64,1] [--in-flight bound,all]

The real code runs: zoo.generate.plan_members and plan_jobs, then zoo.generate._execute (the
progress bar and its per-job bookkeeping) over cluster.executor.RayExecutor.run on an embedded
Ray. Only the training is swapped: each task runs `no_training`, which returns run_job's summary
at once, so nothing is trained or committed and every figure is the driver's and Ray's overhead.
Each (pack size, in-flight bound) runs in a fresh process with its own Ray, so each peak RSS is
its own; "all" submits every job at once (the executor before the bound), "bound" is the default.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import redirect_stderr
from pathlib import Path

# the embedded Ray of this benchmark never has other nodes: keep it on 127.0.0.1
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
REPO = Path(__file__).resolve().parents[1]
NO_DEVICE = "none (overhead only)"  # the device a no_training summary names


def no_training(work, job, data, device) -> dict:
    """run_job's summary, returned at once: nothing trained, nothing committed."""
    return {"job": job.name, "members": len(job.configs), "diverged": 0, "wall_s": 0.0, "device": NO_DEVICE,
            "file": "", "raced": 0, "commit_retries": 0}


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssSampler:
    """Peak RSS of this process over a block, sampled every `every_s` (ru_maxrss covers the whole
    life of the process, the set-up included)."""

    def __init__(self, every_s: float = 0.05):
        self.every_s, self.peak, self.stop = every_s, 0.0, threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        while not self.stop.wait(self.every_s):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> RssSampler:
        self.peak = rss_mb()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, rss_mb())


class TimeLimit(Exception):
    """The run passed its time limit: all-at-once submission is quadratic, 100,000 jobs take an hour."""


class Counting:
    """An executor that counts how often each job reaches on_done, then passes it on; past
    `deadline` (a perf_counter) it stops the run."""

    def __init__(self, inner, deadline: float):
        self.inner, self.deadline, self.seen, self.devices = inner, deadline, Counter(), set()
        self.first_at = None  # perf_counter of the first on_done: workers started, imports done

    def device_kind(self) -> str:
        return self.inner.device_kind()

    def run(self, work, jobs, data, on_done):
        def counted(job, summary):
            self.first_at = self.first_at or time.perf_counter()
            self.seen[job.name] += 1
            self.devices.add(summary["device"])
            on_done(job, summary)
            if time.perf_counter() > self.deadline:
                raise TimeLimit

        return self.inner.run(work, jobs, data, counted)


def tiny_data():
    """A 256-image stand-in for CIFAR-10: put in Ray's object store and handed to every task by
    reference like the real one, which no_training never reads."""
    import numpy as np

    from zoo.data import Cifar10

    x, y = np.zeros((256, 3, 32, 32), np.uint8), np.zeros(256, np.int64)
    return Cifar10(x, y, x, y, {"name": "zeros"})


def drive(members: int, pack_size: int, in_flight: str, limit_s: float = 600) -> dict:
    """Plan `members` standard members, cut packs of `pack_size`, run them all through _execute
    on an embedded Ray with `in_flight` "bound" (the default) or "all", stopping after `limit_s`;
    timings, RSS, and what the progress tracking saw."""
    import ray

    from cluster.executor import RayExecutor
    from zoo.generate import Work, _execute, plan_jobs, plan_members
    from zoo.recipe import Recipe

    recipe, start_mb = Recipe(), rss_mb()
    t = time.perf_counter()
    planned = plan_members(0, ("standard",), members)
    jobs = plan_jobs(planned, pack_size=pack_size, epochs_of=recipe.member_epochs)
    plan_s = time.perf_counter() - t
    ray_executor = RayExecutor(None, max_in_flight=len(jobs) if in_flight == "all" else None, job_fn=no_training)
    executor = Counting(ray_executor, deadline=time.perf_counter() + limit_s)
    work = Work(zoo="unused (nothing is committed)", recipe=recipe.to_dict(), asym_seed=0, engine="auto",
                compile=False, impl="vmap")
    data, err, finished = tiny_data(), io.StringIO(), True
    try:
        with RssSampler() as rss, redirect_stderr(err):
            t = time.perf_counter()
            try:
                _execute(executor, work, jobs, data, total=len(planned), already=0)
            except TimeLimit:
                finished = False
            run_s, first_s = time.perf_counter() - t, executor.first_at - t
    finally:
        ray.shutdown()
    return {"members": members, "pack_size": pack_size, "in_flight": in_flight, "jobs": len(jobs),
            "finished": finished, "bound": ray_executor.max_in_flight, "plan_s": plan_s, "run_s": run_s, "first_s": first_s,
            "start_mb": start_mb, "peak_mb": rss.peak, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            **tracked(jobs, executor, err.getvalue())}


def tracked(jobs, executor: Counting, log: str) -> dict:
    """What the progress tracking saw: how often each job reached on_done, and the final count."""
    names = {job.name for job in jobs}
    done = re.findall(r"(\d+)/(\d+) committed", log)
    return {"distinct_jobs": len(names), "tracked": len(executor.seen), "max_times": max(executor.seen.values(), default=0),
            "untracked": len(names - set(executor.seen)), "foreign": len(set(executor.seen) - names),
            "devices": sorted(executor.devices), "progress": [int(n) for n in done[-1]] if done else None}


def measure(members: int, pack_size: int, in_flight: str, limit_s: float = 600) -> dict:
    """`drive` in a fresh interpreter: its own Ray, its own peak RSS."""
    code = (f"import sys, json; sys.path[:0] = [{str(REPO)!r}, {str(REPO / 'benchmarks')!r}]\n"
            f"from driver_scale import drive\n"
            f"print(json.dumps(drive({members}, {pack_size}, {in_flight!r}, {limit_s})))")
    # workers start from the driver's environment: they import no_training from benchmarks/ too
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "benchmarks")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=limit_s + 600)  # planning, Ray's start and stop come on top
    if out.returncode:
        raise RuntimeError(f"drive({members}, {pack_size}, {in_flight!r}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def row(r: dict) -> str:
    """ms/pack: the whole run (first-job start-up included) over the jobs it tracked; then the
    same after the first job (what each further pack costs)."""
    if r["finished"]:
        ok = r["tracked"] == r["jobs"] and r["max_times"] == 1 and r["progress"] == [r["members"]] * 2
        note = "yes" if ok else "NO"
    else:
        note = f"stopped at the time limit after {r['tracked']} jobs"
    return (f"{r['pack_size']:>5} {r['jobs']:>7} {r['in_flight']:>6} {r['bound']:>7} {r['plan_s']:>7.1f} "
            f"{r['first_s']:>8.1f} {r['run_s']:>8.1f} {1000 * r['run_s'] / max(r['tracked'], 1):>8.2f} "
            f"{1000 * (r['run_s'] - r['first_s']) / max(r['tracked'] - 1, 1):>6.2f} "
            f"{r['start_mb']:>8.0f} {r['peak_mb']:>8.0f} {r['maxrss_mb']:>9.0f}  {note}")


def compare(bound: dict, every: dict) -> str:
    """All-at-once against the bound, per job tracked (a stopped run tracked fewer)."""
    per = [r["run_s"] / max(r["tracked"], 1) for r in (every, bound)]
    grew = [r["peak_mb"] - r["start_mb"] for r in (every, bound)]
    more = "" if every["finished"] else " (at least: stopped early, and each job costs more as more are in flight)"
    return (f"packs of {bound['pack_size']}: all at once / bound = {per[0] / per[1]:.2f}x time per job{more}, "
            f"{grew[0] / max(grew[1], 1):.2f}x driver RSS growth ({grew[0]:.0f} / {grew[1]:.0f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, default=100_000, help="planned members (one family)")
    ap.add_argument("--packs", default="64,1", help="pack sizes, comma-separated")
    ap.add_argument("--in-flight", default="bound,all", help="bound (the default executor) and/or all (every job at once)")
    ap.add_argument("--limit-s", type=float, default=300, help="each run stops after this many seconds of scheduling")
    args = ap.parse_args()
    from pipelines.hardware import describe

    print(describe())
    print(f"{args.members} planned standard members; training replaced by a function that returns at once: this "
          "measures the driver's and Ray's overhead only. Each row a fresh process and embedded Ray; shared machine, noisy.")
    print(f"{'pack':>5} {'jobs':>7} {'submit':>6} {'bound':>7} {'plan s':>7} {'first s':>8} {'run s':>8} {'ms/pack':>8} {'after':>6} "
          f"{'start MB':>8} {'peak MB':>8} {'maxrss MB':>9}  every job tracked once, progress at total")
    results = {}
    for pack in (int(p) for p in args.packs.split(",")):
        for mode in args.in_flight.split(","):
            results[pack, mode] = measure(args.members, pack, mode, args.limit_s)
            print(row(results[pack, mode]), flush=True)
    for pack in dict.fromkeys(p for p, _ in results):
        if (pack, "bound") in results and (pack, "all") in results:
            print(compare(results[pack, "bound"], results[pack, "all"]))
    print("first s: until the first job reported (Ray starts its workers); run s includes it. "
          "start MB: driver RSS before planning (torch and Ray imported); peak MB: sampled every 50 ms while running.")


if __name__ == "__main__":
    main()
