"""The Ray executor of `symzoo generate`: each job a Ray task, embedded or on a cluster. Its
connection check and retrying task loop (`connect`, `run_tasks`) also run `symzoo mli`'s tasks
(cluster/mli.py).

Without an address Ray starts embedded on this machine (every core or GPU, dashboard off, its
own log lines kept out of the terminal). With `address` (or $RAY_ADDRESS) the same call drives
an existing cluster. Ray tasks, not Tune trials: resume comes from the store, which is the only
source of truth, so Tune's experiment state would be a second one that can disagree (a
`Tuner.restore` after a driver kill re-ran finished trials), and a task costs milliseconds where
an un-reused trial costs seconds.

Retries are the driver's, not Ray's (`max_retries=0` on the task): the driver resubmits a job
whose worker or node died, or that failed on transient I/O, so every retry is logged with its
cause, and a deterministic error (a full disk, a bad config) fails its job at once instead of
retraining it `max_retries` more times.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import sys
import tempfile
import threading
from collections import deque
from contextlib import contextmanager

import ray
import ray.exceptions as rex

from zoo.data import Cifar10
from zoo.generate import ClusterUnreachable, Job, Work, is_transient, log, run_job
from zoo.validate import check, is_int

CONNECT_TIMEOUT_S = 30.0  # a head that answers gRPC but not as Ray would otherwise hang ray.init for minutes
TOKEN_HINT = ("the cluster's auth token: set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the token the head was "
              "started with (`ray get-auth-token` on the head prints it); a stale ~/.ray/auth_token is read otherwise")
# a worker process or a whole node died under the task: the same job on another worker can succeed
DEATHS = (rex.WorkerCrashedError, rex.NodeDiedError, rex.LocalRayletDiedError, rex.ObjectLostError,
          rex.OutOfMemoryError)
MAX_RETRIES = 3  # resubmissions of a job whose worker or node died, or that failed on transient I/O
IN_FLIGHT_PER_SLOT = 4  # jobs queued per GPU (or CPU): a slot that frees finds its next job already at its node
IN_FLIGHT_MIN = 256  # an autoscaler sizes the cluster to the queued demand: a bound of 4 x the slots at start would starve it


def in_flight_bound(slots: float) -> int:
    """Jobs submitted to Ray at once. Not all of them: the driver's ray.wait scans every job in
    flight, so the sweep costs O(jobs^2), and each job in flight holds ~10 KB of the driver's
    memory (100,000 at once: 64 ms and 1 GB more, against 1.4 ms a job; benchmarks/driver_scale.py)."""
    return max(IN_FLIGHT_MIN, int(IN_FLIGHT_PER_SLOT * slots))


def cluster_address(address: str | None) -> str | None:
    """`address`, else $RAY_ADDRESS, else None (embedded); a host:port must speak gRPC like a Ray head."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "auto" and not address.startswith("ray://"):
        _check_grpc(address)
    return address


def _check_grpc(address: str, timeout: float = 3.0) -> None:
    """A Ray head's GCS is a gRPC server: it answers the HTTP/2 preface with a SETTINGS frame. A
    closed port, or a port that answers TCP but is some other server, fails here in seconds."""
    host, _, port = address.rpartition(":")
    try:
        s = socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout)
    except (OSError, ValueError) as e:
        raise ClusterUnreachable(f"address={address!r}: no Ray head answers there ({e}); start one with "
                                 "`ray start --head`, or leave --address out to run Ray embedded") from e
    with s:
        try:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
            frame = s.recv(9)
        except OSError:
            frame = b""
    if len(frame) < 9 or frame[3] != 4:
        raise ClusterUnreachable(f"address={address!r}: something answers there, but not a Ray head (no gRPC); "
                                 "use the GCS address that `ray start --head` printed (HOST:6379 by default)")


def connect(address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Ray at `address` as `cluster_address` resolved (and checked) it; None starts it embedded.

    With an address ray.init runs in a thread, so that a head that never completes the handshake
    costs `timeout` seconds and one line, not an endless wait; nothing is written to the zoo yet. Ray's
    core logs a warning a second while it retries (20 s on a refused token): kept off the
    terminal, and read to tell a refused token from a wrong address.
    """
    if ray.is_initialized():
        return
    if not address:
        # a new Ray of our own, never a `ray start` cluster this machine happens to run ("local"); in
        # the main thread, since Ray's processes die with the thread that started them (PDEATHSIG)
        ray.init(address="local", include_dashboard=False, num_cpus=os.cpu_count(), configure_logging=True,
                 logging_level=logging.ERROR, log_to_driver=False)
        return
    outcome: list[BaseException | None] = []
    thread = threading.Thread(target=lambda: outcome.append(_init(address)), daemon=True)
    with _captured_stderr() as captured:
        thread.start()
        thread.join(timeout)
    said = "".join(captured)
    if outcome and outcome[0] is None:
        return
    if "Unauthenticated" in said or "InvalidAuthToken" in said:
        raise ClusterUnreachable(f"address={address!r}: the Ray head refused this driver's auth token; set {TOKEN_HINT}")
    if not outcome:
        raise ClusterUnreachable(f"address={address!r}: the Ray head did not accept this driver within {timeout:.0f} s; "
                                 f"check that it is the head's GCS address, and {TOKEN_HINT}")
    raise ClusterUnreachable(f"address={address!r}: {first_line(outcome[0])}; check the address (`ray status` on "
                             "the head prints it)") from outcome[0]


def _init(address: str) -> BaseException | None:
    try:
        ray.init(address=address, log_to_driver=True, configure_logging=False)
    except BaseException as e:  # noqa: BLE001  handed to the main thread, which explains it
        return e
    return None


@contextmanager
def _captured_stderr():
    """File descriptor 2 into a temporary file (Ray's C++ core writes there, not to sys.stderr);
    the text lands in the yielded list on exit."""
    sys.stderr.flush()
    saved, text = os.dup(2), []
    with tempfile.TemporaryFile("w+") as f:
        os.dup2(f.fileno(), 2)
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            text.append(f.read())


def cause_of(e: BaseException) -> BaseException:
    """The user's exception inside a RayTaskError, else `e` itself."""
    return e.cause if isinstance(e, rex.RayTaskError) and e.cause is not None else e


def retry_reason(e: BaseException) -> str | None:
    """Why a retry can fix `e`, or None when it cannot (a deterministic error: fail the job now)."""
    if isinstance(e, DEATHS):
        return f"{type(e).__name__}: {first_line(e)}"
    inner = cause_of(e)
    if isinstance(inner, DEATHS) or is_transient(inner):
        return f"{type(inner).__name__}: {first_line(inner)}"
    return None


def first_line(e: BaseException) -> str:
    """The first sentence: Ray's messages run on for lines of advice."""
    return (str(e).strip().splitlines() or [""])[0].split(". ")[0][:300]


class RayExecutor:
    """Jobs as Ray tasks: one GPU per job where the cluster has GPUs, else one CPU per job."""

    def __init__(self, address: str | None, *, max_retries: int = MAX_RETRIES, max_in_flight: int | None = None,
                 job_fn=run_job):
        """`max_in_flight`: jobs submitted to Ray at once, >= 1; None = `in_flight_bound` of the
        cluster's slots. `job_fn(work, job, data, device) -> summary` is what each task runs:
        `run_job`, or a stand-in that returns at once (benchmarks/driver_scale.py)."""
        check("max_in_flight", max_in_flight, max_in_flight is None or (is_int(max_in_flight) and max_in_flight >= 1),
              "an int >= 1, or None (the default bound)")
        connect(cluster_address(address))
        self.resources = ray.cluster_resources()
        self.max_retries = max_retries
        slots = self.resources.get("GPU" if self.device_kind() == "gpu" else "CPU", 1)
        self.max_in_flight = max_in_flight or in_flight_bound(slots)
        self.job_fn = job_fn

    def device_kind(self) -> str:
        return "gpu" if self.resources.get("GPU", 0) > 0 else "cpu"

    def run(self, work: Work, jobs: list[Job], data: Cifar10, on_done) -> list[tuple[Job, BaseException]]:
        gpu = self.device_kind() == "gpu"
        task = ray.remote(self.job_fn).options(num_gpus=1 if gpu else 0, num_cpus=1, max_retries=0,
                                               retry_exceptions=False)
        data_ref, device = ray.put(data), "cuda" if gpu else "cpu"
        return run_tasks(lambda job: task.remote(work, job, data_ref, device), jobs, on_done,
                         name=lambda job: job.name, max_retries=self.max_retries, max_in_flight=self.max_in_flight)


def run_tasks(submit, items: list, on_done, *, name, max_retries: int, max_in_flight: int,
              log=log) -> list[tuple[object, BaseException]]:
    """Every item through `submit(item) -> ObjectRef` (a task with max_retries=0), at most
    `max_in_flight` at once, in order; `on_done(item, result)` in this process as each finishes.

    The driver retries an item whose worker or node died or that failed on transient I/O (`log`
    says so, naming it by `name(item)`); a deterministic error fails it at once. Returns the items
    that failed for good, each with the user's exception (not Ray's wrapper)."""
    alive, reported = _alive_nodes(), set()
    waiting = deque((item, 0) for item in items)  # (item, attempt)
    pending, failed = {}, []
    while waiting or pending:
        while waiting and len(pending) < max_in_flight:
            item, attempt = waiting.popleft()
            pending[submit(item)] = (item, attempt)
        ready, _ = ray.wait(list(pending), num_returns=1)
        item, attempt = pending.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except Exception as e:  # noqa: BLE001  retried if a retry can fix it, else reported
            alive = _report_dead_nodes(e, alive, reported, log)
            reason = retry_reason(e)
            if reason and attempt < max_retries:
                log(f"retry {attempt + 1}/{max_retries} of {name(item)}: {reason}")
                waiting.appendleft((item, attempt + 1))  # next to go: a retry is not sent to the back
            else:
                failed.append((item, cause_of(e)))
            continue
        on_done(item, result)
    return failed


def _alive_nodes() -> dict[str, str]:
    """node id -> "ip:raylet port" of the nodes alive now (several nodes can share one ip)."""
    return {n["NodeID"]: f"{n['NodeManagerAddress']}:{n['NodeManagerPort']}" for n in ray.nodes() if n["Alive"]}


NODE_IN_MESSAGE = re.compile(r"Node IP: ([\w.:-]+), node ID: (\w+)")  # how NodeDiedError names its node


def _report_dead_nodes(e: BaseException, before: dict[str, str], reported: set[str], log=log) -> dict[str, str]:
    """Log, once each, the node a NodeDiedError names and every node that was alive before and is
    not now (the GCS may take seconds to notice); returns the nodes alive now."""
    now = _alive_nodes()
    dead = {node_id: where for node_id, where in before.items() if node_id not in now}
    named = NODE_IN_MESSAGE.search(str(cause_of(e)))
    if named:
        dead.setdefault(named.group(2), before.get(named.group(2), named.group(1)))
    for node_id, where in dead.items():
        if node_id not in reported:
            reported.add(node_id)
            log(f"node {node_id[:12]} at {where} died; its jobs are retried on the nodes left")
    return now
