"""The Ray executor of `symzoo mli`: each task (a chunk of at most `chunk` members of one family)
a Ray task, embedded or on a cluster.

The driver reads the zoo and sends each task with its members' weights (init and trained, [n, P]
float32 each: 10 MB at 16 members), so workers need neither the zoo nor the out folder; the
evaluation images go to the object store once. A worker runs the local path's `Evaluator` and keeps
it (images on its device, one network per family, built there and checked against the zoo's
fixed_sha256) for the run's next task. A member's curve does not depend on how tasks are cut (a
packed forward holds one member's rows), so it is the local executor's, bit for bit, on the same
device (tests/test_mli_ray.py, on CPU). The driver writes each task's curves as they arrive:
it stays the only writer of the out folder (an s3:// out works through its local stand-in), and a
killed driver loses only the tasks in flight, which a rerun redoes.

Connection check, retries and dead-node reports are generate's (cluster.executor): a task whose
worker or node died is resubmitted and logged; a deterministic error fails its task at once, the
others still run and store their curves, and the run then ends with one line naming the failed
tasks and members.
"""
from __future__ import annotations

import sys
import warnings

import numpy as np
import ray
import torch

from pipelines.mli.config import MliConfig
from pipelines.mli.evaluate import Evaluator, Task
from zoo.generate import SweepFailed
from zoo.recipe import Recipe

from .executor import (IN_FLIGHT_PER_SLOT, MAX_RETRIES, cluster_address, connect, first_line, in_flight_bound,
                       run_tasks)

WEIGHTS_IN_FLIGHT = 1 << 30  # bytes of task weights queued in the object store at once: ~100 tasks of 16 members


class RayMliExecutor:
    """MLI tasks as Ray tasks: one CPU each, and `gpus_per_task` of a GPU where Ray has GPUs.
    Ray connects (and its address is checked) when this is built, before anything is written."""

    def __init__(self, address: str | None, *, gpus_per_task: float, max_retries: int = MAX_RETRIES):
        connect(cluster_address(address))
        resources = ray.cluster_resources()
        self.cluster_gpus = resources.get("GPU", 0)
        self.gpus = gpus_per_task if self.cluster_gpus > 0 else 0
        self.cpu_slots = max(1, int(resources.get("CPU", 1)))
        # a task's GPUs come from one node: slots are counted per node (+1e-9: 0.6 / 0.2 is 2.999...)
        self.node_gpus = [n["Resources"].get("GPU", 0) for n in ray.nodes() if n["Alive"]]
        self.gpu_slots = sum(int(g / self.gpus + 1e-9) for g in self.node_gpus) if self.gpus else 0
        self.max_retries = max_retries

    def device(self, asked: str) -> str:
        """Where the tasks run: "cuda" (each worker's own GPU) where Ray has GPUs and gpus_per_task > 0,
        unless `asked` is "cpu"; else "cpu". Refuses GPU tasks that no node could take."""
        if asked == "cpu" or (asked == "auto" and not self.gpus):
            return "cpu"
        if not self.gpus:
            why = "gpus_per_task is 0" if self.cluster_gpus else "the cluster has no GPU"
            raise ValueError(f"device={asked!r}: executor ray has no GPU for its tasks ({why}); use cpu or auto")
        if not self.gpu_slots:
            most = max(self.node_gpus)
            raise ValueError(f"gpus_per_task={self.gpus!r}: more than the {most:g} GPU(s) of the cluster's largest node, "
                             f"so Ray could never schedule a task; use at most {most:g}")
        return "cuda"

    def slots(self, cfg: MliConfig) -> int:
        """Tasks the cluster evaluates at once (`cfg` resolved)."""
        return self.cpu_slots if cfg.on_cpu() else self.gpu_slots

    def run(self, tasks: list[Task], x: torch.Tensor, y: torch.Tensor, cfg: MliConfig, recipe: Recipe | None,
            on_done) -> None:
        """`on_done(task, L [n, A])` in this process as each task arrives; raises SweepFailed after
        the others if any task failed for good."""
        remote = ray.remote(evaluate_task).options(num_cpus=1, num_gpus=0 if cfg.on_cpu() else self.gpus,
                                                   max_retries=0, retry_exceptions=False)
        images = [ray.put((x.numpy(), y.numpy()))]  # in a list: the worker gets the reference, keyed to its Evaluator
        failed = run_tasks(lambda task: remote.remote(images, cfg, recipe, task), tasks, on_done,
                           name=lambda task: task.name, max_retries=self.max_retries,
                           max_in_flight=in_flight(self.slots(cfg), tasks), log=log)
        if failed:
            raise SweepFailed(failure_line(failed, len(tasks)))


def in_flight(slots: int, tasks: list[Task]) -> int:
    """Tasks submitted at once: generate's bound, past the cluster's size at start so that an
    autoscaler sees the demand, but each task carries its weights into the object store: cut to
    WEIGHTS_IN_FLIGHT bytes of them, never below IN_FLIGHT_PER_SLOT tasks a slot."""
    task_bytes = max((t.theta0.nbytes + t.theta_t.nbytes for t in tasks), default=1)
    return max(IN_FLIGHT_PER_SLOT * slots, min(in_flight_bound(slots), WEIGHTS_IN_FLIGHT // task_bytes))


_WORKER: dict = {}  # this worker process's Evaluator, with the (images, config) it was built for


def evaluate_task(images: list, cfg: MliConfig, recipe: Recipe | None, task: Task) -> np.ndarray:
    """A task's curves L [n, A], in a Ray worker: one torch thread per task, as the local CPU pool."""
    key = (images[0].hex(), cfg)
    if _WORKER.get("key") != key:
        _WORKER.clear()  # the old Evaluator's images go before the new one's come
        torch.set_num_threads(1)
        x, y = ray.get(images[0])
        with warnings.catch_warnings():  # the object store's arrays are read-only; nothing writes to them
            warnings.simplefilter("ignore", UserWarning)
            _WORKER.update(key=key, evaluate=Evaluator(torch.from_numpy(x), torch.from_numpy(y), cfg, recipe))
    return _WORKER["evaluate"](task)


def failure_line(failed: list[tuple[Task, BaseException]], total: int) -> str:
    """One line: how many tasks failed, the first one's members and error, the others' names."""
    task, e = failed[0]
    ids = list(task.rows.member_id)
    members = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
    others = [t.name for t, _ in failed[1:]]
    also = f"; also {', '.join(others[:5])}" + (f" and {len(others) - 5} more" if len(others) > 5 else "")
    stored = "the other tasks' curves are stored; " if len(failed) < total else ""
    return (f"{len(failed)} of {total} MLI tasks failed: {task.name} (members {members}): {type(e).__name__}: "
            f"{first_line(e)}{also if others else ''}; {stored}rerun the same command to evaluate the missing curves")


def log(msg: str) -> None:
    print(f"symzoo mli: {msg}", file=sys.stderr, flush=True)
