"""`symzoo generate --address` against a real two-node Ray cluster on 127.0.0.1 (tests/ray_nodes.py):
the zoo is filled exactly once, a worker node killed mid-sweep costs a logged retry on the head,
and a wrong auth token is one line before anything is written.

Every Ray here stays on loopback (conftest sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), runs one CPU per node,
keeps its files under a private RAY_TMPDIR, and is killed by process group in a finally.
"""
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO
from test_sweep import assert_complete, finish, generate, member_files

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(cifar_root):
    """(address, worker node pids, env for a driver) of a fresh two-node cluster with token auth."""
    tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's unix socket paths must fit 107 bytes
    token = tmp / "token"
    token.write_text("symzoo-test-token-" + "0" * 32)
    env = {**os.environ, "RAY_TMPDIR": str(tmp), "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token), "SYMZOO_DATA": str(cifar_root)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "ray_nodes.py")], env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        info = json.loads(read_line(proc, timeout=120))
        yield info["address"], info["worker_pids"], {k: env[k] for k in ("RAY_TMPDIR", "RAY_AUTH_MODE",
                                                                         "RAY_AUTH_TOKEN_PATH", "SYMZOO_DATA")}
    finally:
        kill_group(proc.pid)
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


def read_line(proc, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"the cluster did not start within {timeout} s"
    line = proc.stdout.readline()
    assert line, "the cluster process exited before it was ready"
    return line


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def descendants(pid: int) -> list[int]:
    """`pid`'s children, grandchildren, ... from /proc (the workers a raylet forked)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def busy_worker(pids: list[int]) -> bool:
    """A process of this node runs a job (Ray titles a worker `ray::run_job` while it does)."""
    for pid in {d for p in pids for d in descendants(p)}:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::run_job"):
                return True
        except OSError:
            pass
    return False


def sweep(zoo, address, env, members=4, **popen):
    return generate(zoo, "--families", "standard", "--members", str(members), "--address", address, env=env, **popen)


def test_two_nodes_fill_the_zoo_once_and_a_bad_token_is_one_line(tmp_path, cluster):
    address, _, env = cluster
    stale = {**env, "RAY_AUTH_TOKEN": "stale-" + "1" * 32}  # RAY_AUTH_TOKEN wins over the token file
    t0 = time.monotonic()
    out = finish(proc := sweep(tmp_path / "refused", address, stale), timeout=120)
    assert proc.returncode == 2, out
    assert re.search(r"auth token.*RAY_AUTH_TOKEN", out), out
    assert "Traceback" not in out and not (tmp_path / "refused").exists(), out
    print(f"bad token refused in {time.monotonic() - t0:.1f} s")

    zoo = tmp_path / "zoo"
    out = finish(proc := sweep(zoo, address, env), timeout=300)
    assert proc.returncode == 0, out
    assert "trained 4 members" in out, out
    assert_complete(zoo, ["standard"], 4)
    assert len(member_files(zoo)) == 4  # each member committed once
    again = finish(sweep(zoo, address, env), timeout=120)
    assert "0 to train" in again, again


def test_worker_node_killed_mid_sweep_is_logged_and_retried_on_the_head(tmp_path, cluster):
    address, worker_pids, env = cluster
    zoo = tmp_path / "zoo"
    proc = sweep(zoo, address, env, members=8)  # ~1 s per job: enough that one runs on the worker node
    try:
        deadline = time.monotonic() + 180
        while not busy_worker(worker_pids) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        if not busy_worker(worker_pids):
            pytest.fail(f"no job ever ran on the worker node:\n{finish(proc, timeout=60)}")
        for pid in [*descendants(worker_pids[0]), *worker_pids]:
            kill_pid(pid)
    finally:
        out = finish(proc, timeout=300)
    assert proc.returncode == 0, out
    assert re.search(r"node \w+ at 127\.0\.0\.1:\d+ died", out), out
    assert re.search(r"retry 1/3 of standard\[\d+\.\.\d+\]x1: \w+(Error|Died)", out), out
    assert_complete(zoo, ["standard"], 8)
    assert len(member_files(zoo)) == 8


def kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
