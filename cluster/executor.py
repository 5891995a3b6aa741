"""The Ray executor of `symzoo generate`: each job a Ray task with retries, embedded or on a cluster.

Without an address Ray starts embedded on this machine (every core or GPU, dashboard off, its
own log lines kept out of the terminal). With `address` (or $RAY_ADDRESS) the same call drives
an existing cluster. Ray tasks, not Tune trials: resume comes from the store, which is the only
source of truth, so Tune's experiment state would be a second one that can disagree (a
`Tuner.restore` after a driver kill re-ran finished trials), and a task costs milliseconds where
an un-reused trial costs seconds.
"""
from __future__ import annotations

import logging
import os
import socket

import ray

from zoo.data import Cifar10
from zoo.generate import Job, Work, run_job


def cluster_address(address: str | None) -> str | None:
    """`address`, else $RAY_ADDRESS, else None (embedded); a host:port must answer."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "auto" and not address.startswith("ray://"):
        _check_reachable(address)
    return address


def connect(address: str | None) -> None:
    """Ray at `address` as `cluster_address` resolved (and checked) it; None starts it embedded."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=True, configure_logging=False)
    else:
        ray.init(include_dashboard=False, num_cpus=os.cpu_count(), configure_logging=True,
                 logging_level=logging.ERROR, log_to_driver=False)


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise ValueError(f"address={address!r}: no Ray head answers there ({e}); start one with "
                         "`ray start --head`, or leave --address out to run Ray embedded") from e


class RayExecutor:
    """Jobs as Ray tasks: one GPU per job where the cluster has GPUs, else one CPU per job."""

    def __init__(self, address: str | None, *, max_retries: int = 3):
        connect(cluster_address(address))
        self.resources = ray.cluster_resources()
        self.max_retries = max_retries

    def device_kind(self) -> str:
        return "gpu" if self.resources.get("GPU", 0) > 0 else "cpu"

    def run(self, work: Work, jobs: list[Job], data: Cifar10, on_done) -> list[tuple[Job, BaseException]]:
        gpu = self.device_kind() == "gpu"
        task = ray.remote(run_job).options(num_gpus=1 if gpu else 0, num_cpus=1, max_retries=self.max_retries,
                                           retry_exceptions=True)
        data_ref = ray.put(data)
        pending = {task.remote(work, job, data_ref, "cuda" if gpu else "cpu"): job for job in jobs}
        failed = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            try:
                on_done(job, ray.get(ready[0]))
            except Exception as e:  # noqa: BLE001  retries exhausted: report, let the others finish
                failed.append((job, e))
        return failed
