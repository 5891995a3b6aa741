"""Reliability of `symzoo generate` on the smoke preset: resume, retries, races, bad files, full disk;
the local executor against the Ray one.

Each end-to-end test starts an embedded Ray in a child process, as a user's command would.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from fingerprint import zoo_fingerprint
from zoo import load_cifar10, sample_member
from zoo.generate import GenerateConfig, plan_jobs, plan_members
from zoo.recipe import Recipe
from zoo.store import init_zoo, open_zoo
from zoo.train import train_member

SMOKE = dict(epochs=1, n_train=256, n_test=256, batch_size=64, init="kaiming_normal")  # configs/smoke.yaml's recipe


def generate(zoo, *extra, env=None, **popen):
    """`symzoo generate --preset smoke` as a child process (its own session, for clean kills)."""
    cmd = [sys.executable, "-m", "pipelines.cli", "generate", "--preset", "smoke", "--zoo", str(zoo), *extra]
    full_env = dict(os.environ, PYTHONPATH=str(REPO), RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", **(env or {}))
    return subprocess.Popen(cmd, cwd=REPO, env=full_env, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def finish(proc, timeout=300) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        _kill_group(proc)
    return out


def _kill_group(proc):
    """Ray's helper processes outlive a SIGKILLed driver; reap the whole session."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def member_files(zoo) -> list[Path]:
    return sorted(p for p in Path(zoo, "members").rglob("*.parquet") if not p.name.startswith((".", "_")))


def assert_complete(zoo, families, n):
    df = open_zoo(str(zoo)).members()
    for f in families:
        got = sorted(df[df.family == f]["index"].tolist())
        assert got == list(range(n)), (f, got)
    assert df.member_id.is_unique


def test_plan_groups_jobs_by_family_and_epochs():
    todo = plan_members(0, ("standard", "w_asym"), 40)
    jobs = plan_jobs(todo, pack_size=8, epochs_of=lambda c: c.epochs)
    assert sum(len(j.configs) for j in jobs) == 80
    for j in jobs:
        assert len({c.family for c in j.configs}) == 1 and len({c.epochs for c in j.configs}) == 1
        assert len(j.configs) <= 8
    again = plan_jobs(list(reversed(todo)), pack_size=8, epochs_of=lambda c: c.epochs)
    assert [j.name for j in again] == [j.name for j in jobs]  # deterministic: retries reuse names


@pytest.mark.parametrize("field, value, message", [
    ("members", 0, "members=0: must be an int > 0"),
    ("members", True, "members=True: must be an int > 0"),
    ("families", "standard", "family='s'|families='standard'"),
    ("families", ("standard", "standard"), "families=.*without repeats"),
    ("max_retries", -1, "max_retries=-1: must be an int >= 0"),
    ("executor", "dask", "executor='dask'"),
])
def test_generate_config_refuses_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        GenerateConfig(**{"zoo": "z", "members": 2, field: value})


@pytest.mark.slow
def test_local_executor_matches_ray_and_needs_no_ray(tmp_path, cifar_root):
    """`--executor local` gives the Ray executor's zoo, bit for bit, with `ray` unimportable."""
    env = {"SYMZOO_DATA": str(cifar_root)}
    finish(generate(tmp_path / "ray", "--families", "standard,w_asym", "--members", "2", env=env))
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "ray.py").write_text("raise ImportError('ray is hidden for this test')\n")
    local_env = {**env, "PYTHONPATH": f"{hide}{os.pathsep}{REPO}"}
    cmd = [sys.executable, "-m", "pipelines.cli", "generate", "--preset", "smoke", "--zoo", str(tmp_path / "local"),
           "--families", "standard,w_asym", "--members", "2", "--executor", "local"]
    out = subprocess.run(cmd, cwd=REPO, env={**os.environ, **local_env}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LocalExecutor" in out.stderr
    assert zoo_fingerprint(tmp_path / "local") == zoo_fingerprint(tmp_path / "ray")


@pytest.mark.slow
def test_sigkill_then_rerun_completes_with_identical_weights(tmp_path, cifar_root):
    zoo = tmp_path / "zoo"
    env = {"SYMZOO_DATA": str(cifar_root)}
    proc = generate(zoo, "--families", "standard", "--members", "4", env=env)
    deadline = time.monotonic() + 240
    while not member_files(zoo) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    finish(proc)
    assert 1 <= len(member_files(zoo))
    out = finish(generate(zoo, "--families", "standard", "--members", "4", env=env))
    assert "already committed" in out, out
    assert_complete(zoo, ["standard"], 4)
    # every member, resumed or not, equals a direct uninterrupted training, bit for bit
    data = Recipe.from_dict(SMOKE).apply_subset(load_cifar10(cifar_root))
    store = open_zoo(str(zoo))
    weights, ids = store.weights("standard", which="final")
    by_id = dict(zip(ids, weights))
    for i in (0, 3):
        cfg = sample_member(0, i, "standard")
        direct = train_member(cfg, data, Recipe.from_dict(SMOKE), asym_seed=0)
        np.testing.assert_array_equal(by_id[cfg.member_id], direct.params_final)


def generate_with_fault(tmp_path, cifar_root, mode: str, family: str, members: int):
    """`symzoo generate` of `members` of `family` with $SYMZOO_FAULT=mode:DIR; (process, output, fault markers)."""
    zoo, faults = tmp_path / "zoo", tmp_path / "faults"
    faults.mkdir()
    env = {"SYMZOO_DATA": str(cifar_root), "SYMZOO_FAULT": f"{mode}:{faults}"}
    proc = generate(zoo, "--families", family, "--members", str(members), env=env)
    out = finish(proc)
    return proc, out, list(faults.iterdir())


@pytest.mark.slow
def test_failed_pack_is_retried_and_committed_once(tmp_path, cifar_root):
    zoo = tmp_path / "zoo"
    _, out, fired = generate_with_fault(tmp_path, cifar_root, "once", "w_asym", 3)
    assert len(fired) == 6, out  # every pack's worker died once, then trained again ...
    assert len(re.findall(r"retry 1/3 of w_asym\[\d\.\.\d\]x1: WorkerCrashedError", out)) == 3, out  # ... logged
    assert_complete(zoo, ["w_asym"], 3)  # ... and is present exactly once
    assert len(member_files(zoo)) == 3


@pytest.mark.slow
def test_full_disk_fails_each_job_once_without_retraining(tmp_path, cifar_root):
    proc, out, fired = generate_with_fault(tmp_path, cifar_root, "enospc", "standard", 2)
    assert proc.returncode == 1, out
    assert len(fired) == 2, out  # one commit attempt per job: no retry, no retraining
    assert "retry" not in out, out
    assert re.search(r"error: 2 job\(s\) failed: .*No space left on device .*free space there, then rerun", out), out


@pytest.mark.slow
def test_transient_commit_failure_retries_the_commit_not_the_training(tmp_path, cifar_root):
    proc, out, fired = generate_with_fault(tmp_path, cifar_root, "flaky", "standard", 2)
    assert proc.returncode == 0, out
    assert len(fired) == 4, out  # two commit attempts per job ...
    assert out.count("commit retried 1x on transient I/O (not retrained)") == 2, out
    assert "retry 1/" not in out, out  # ... and no job resubmitted, so nothing trained twice
    assert_complete(tmp_path / "zoo", ["standard"], 2)


def test_a_job_committed_by_another_writer_is_counted(tmp_path, cifar, capsys):
    """What a concurrent generate sees when the other one committed the same pack first."""
    from zoo.generate import Job, Work, _report, run_job
    from zoo.progress import Progress

    recipe = Recipe.from_dict(SMOKE)
    data = recipe.apply_subset(cifar)
    zoo = str(tmp_path / "zoo")
    init_zoo(zoo, zoo_seed=0, families={"standard": 0}, recipe=recipe.to_dict(), recipe_overrides=recipe.overrides(),
             data=data.identity)
    work = Work(zoo=zoo, recipe=recipe.to_dict(), asym_seed=0, engine="auto", compile=False, impl="vmap")
    job = Job("standard", (sample_member(0, 0, "standard"),))
    assert run_job(work, job, data, "cpu")["raced"] == 0
    again = run_job(work, job, data, "cpu")
    assert again["raced"] == 1
    progress = Progress(1, desc="t", unit="members", stream=open(os.devnull, "w"))
    progress.update(1)
    _report(progress, 1, {"diverged": 0, "raced": again["raced"], "commit_retries": 0}, [])
    assert "1 of the 1 members trained here had meanwhile been committed by another writer" in capsys.readouterr().err
    assert len(member_files(zoo)) == 1


@pytest.mark.slow
def test_two_concurrent_generates_leave_a_complete_zoo(tmp_path, cifar_root):
    zoo = tmp_path / "zoo"
    env = {"SYMZOO_DATA": str(cifar_root)}
    procs = [generate(zoo, "--families", "standard", "--members", "3", env=env) for _ in range(2)]
    outs = [finish(p) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert_complete(zoo, ["standard"], 3)
    # both drivers planned the same packs, so they committed under the same names: even a raw
    # reader that does not deduplicate sees each member once
    assert len(member_files(zoo)) == 3


@pytest.mark.slow
def test_bad_files_are_reported_skipped_and_retrained(tmp_path, cifar_root):
    zoo = tmp_path / "zoo"
    env = {"SYMZOO_DATA": str(cifar_root)}
    finish(generate(zoo, "--families", "sigma_asym", "--members", "3", env=env))
    files = member_files(zoo)
    files[0].write_bytes(files[0].read_bytes()[:1000])  # truncated
    files[1].write_bytes(b"")  # zero bytes
    (files[0].parent / "foreign.parquet").write_bytes(b"PAR1 not really parquet")
    assert len(open_zoo(str(zoo)).members()) == 1  # readers skip the bad files
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "store", "verify", str(zoo)],
                         cwd=REPO, capture_output=True, text=True).stdout
    for name in (files[0].name, files[1].name, "foreign.parquet"):
        assert name in out, out
    finish(generate(zoo, "--families", "sigma_asym", "--members", "3", env=env))
    assert_complete(zoo, ["sigma_asym"], 3)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs: room for a manifest, not for one member's weights (~620 KB)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_full_disk_fails_cleanly(tiny_disk, cifar_root):
    zoo = tiny_disk / "zoo"
    env = {"SYMZOO_DATA": str(cifar_root)}
    proc = generate(zoo, "--families", "standard", "--members", "1", env=env)
    out = finish(proc)
    assert proc.returncode == 1, out
    assert "No space left on device" in out and "rerun" in out, out
    visible = [str(p.relative_to(zoo)) for p in zoo.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert "manifest.json" in visible and all(p.startswith("manifest") for p in visible), visible


def cli(*args):
    from pipelines.cli import main

    return main(list(args))


def test_bad_input_is_a_clear_error(tmp_path, cifar_root, capsys, monkeypatch):
    monkeypatch.setenv("SYMZOO_DATA", str(cifar_root))
    zoo = str(tmp_path / "zoo")
    fused = tmp_path / "fused.yaml"
    fused.write_text(Path(REPO, "configs", "smoke.yaml").read_text().replace("generate:", "generate:\n  packed_impl: fused"))
    cases = [
        (["--families", "resnet"], "family='resnet'"),
        (["--preset", str(fused)], "packed_impl='fused'.*vmap, grouped"),
        (["--members", "0"], "members=0"),
        (["--preset", "nope"], "preset='nope'.*smoke"),
        (["--address", "127.0.0.1:1"], "address='127.0.0.1:1'.*ray start --head"),
    ]
    for extra, message in cases:
        assert cli("generate", "--preset", "smoke", "--zoo", zoo, *extra) == 2
        assert __import__("re").search(message, capsys.readouterr().err), extra
        assert not Path(zoo).exists(), f"{extra}: bad input wrote to the zoo"
    monkeypatch.setenv("SYMZOO_DATA", str(tmp_path / "empty"))
    assert cli("generate", "--preset", "smoke", "--zoo", zoo) == 2
    assert "materialize.py" in capsys.readouterr().err


def test_manifest_mismatch_names_the_difference(tmp_path, cifar_root, capsys, monkeypatch):
    monkeypatch.setenv("SYMZOO_DATA", str(cifar_root))
    zoo = str(tmp_path / "zoo")
    data = Recipe.from_dict(SMOKE).apply_subset(load_cifar10(cifar_root))
    init_zoo(zoo, zoo_seed=1, families={"standard": 0}, recipe=Recipe.from_dict(SMOKE).to_dict(),
             recipe_overrides={}, data=data.identity)
    before = Path(zoo, "manifest.json").read_text()
    assert cli("generate", "--preset", "smoke", "--zoo", zoo, "--families", "standard") == 2
    err = capsys.readouterr().err
    assert "zoo_seed" in err and "--new-zoo" in err, err
    assert Path(zoo, "manifest.json").read_text() == before


def silent_server(reply: bytes = b""):
    """A TCP server on 127.0.0.1 that accepts, sends `reply` and then never says more: not a Ray head."""
    server = socket.create_server(("127.0.0.1", 0))
    held = []

    def serve():
        while True:
            conn, _ = server.accept()
            conn.sendall(reply)
            held.append(conn)

    threading.Thread(target=serve, daemon=True).start()
    return server, f"127.0.0.1:{server.getsockname()[1]}"


def test_an_address_that_is_not_ray_fails_fast_before_any_write(tmp_path, cifar_root, capsys, monkeypatch):
    monkeypatch.setenv("SYMZOO_DATA", str(cifar_root))
    server, address = silent_server()
    zoo = tmp_path / "zoo"
    t0 = time.monotonic()
    with server:
        assert cli("generate", "--preset", "smoke", "--zoo", str(zoo), "--address", address) == 2
    err = capsys.readouterr().err
    assert time.monotonic() - t0 < 15
    assert re.fullmatch(rf"symzoo generate: error: address='{address}': something answers there, but not a Ray head"
                        r"[^\n]*\n", err), err
    assert not zoo.exists()


def test_a_head_that_never_completes_the_handshake_costs_the_timeout_and_one_line(tmp_path):
    """A gRPC-looking server (it sends an HTTP/2 SETTINGS frame) that is not Ray: ray.init itself
    would wait for minutes, connect() gives up after its timeout. In a child: the stuck ray.init
    thread must not outlive a test process."""
    server, address = silent_server(reply=bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
    code = (f"from cluster.executor import connect, cluster_address\n"
            f"try:\n    connect(cluster_address({address!r}), timeout=4)\n"
            f"except ValueError as e:\n    print('REFUSED', e)\n")
    t0 = time.monotonic()
    with server:
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                             capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t0 < 30, out
    assert re.search(rf"REFUSED address='{address}': the Ray head did not accept this driver within 4 s", out.stdout), out


@pytest.mark.parametrize("error, code, message", [
    (FileExistsError(17, "File exists", "/data/zoo"), 2, r"^/data/zoo: a file is where a folder should be; point --zoo"),
    (NotADirectoryError(20, "Not a directory", "/data/f/zoo"), 2, r"^/data/f/zoo: a file is where a folder"),
    (OSError(28, "No space left on device", "/data/zoo/manifest.json"), 1,
     r"^No space left on device \(/data/zoo/manifest.json\); free space there, then rerun$"),
    (OSError("When uploading part for key 'z/members/x.parquet' in bucket 'b': AWS Error ACCESS_DENIED during "
             "UploadPart operation:\nAccess Denied"), 1, r"^storage error: When uploading .*bucket 'b'.*credentials"),
    (ConnectionResetError(104, "Connection reset by peer"), 1, r"^lost a connection: .*rerun once it is back"),
    (TypeError("bad preset value\nsecond line"), 2, r"^bad preset value; second line$"),
])
def test_each_error_is_one_line_naming_what_and_what_to_do(error, code, message):
    from pipelines.cli import explain

    got_code, line = explain(error)
    assert got_code == code and "\n" not in line and re.search(message, line), line


def test_ray_errors_are_one_line():
    import ray.exceptions as rex

    from pipelines.cli import explain

    for error in (rex.AuthenticationError("InvalidAuthToken: token is missing or incorrect.\nSee docs"),
                  rex.RaySystemError("System error: the GCS went away")):
        code, line = explain(error)
        assert code == 1 and "\n" not in line and line.startswith("Ray: ") and "RAY_AUTH_TOKEN" in line, line


def test_debug_shows_the_traceback(tmp_path, cifar_root, monkeypatch):
    monkeypatch.setenv("SYMZOO_DATA", str(cifar_root))
    (tmp_path / "file").write_text("")
    with pytest.raises((FileExistsError, NotADirectoryError)):  # reading <file>/manifest.json fails first
        cli("--debug", "generate", "--preset", "smoke", "--zoo", str(tmp_path / "file"), "--executor", "local")


@pytest.mark.slow
def test_rerun_right_after_a_driver_sigkill_completes(tmp_path, cifar_root):
    """Only the driver is killed, as `kill -9` would: Ray's agents it leaves behind for up to a
    minute must not disturb an immediate rerun."""
    zoo = tmp_path / "zoo"
    env = {"SYMZOO_DATA": str(cifar_root)}
    first = generate(zoo, "--families", "standard", "--members", "3", env=env)
    try:
        deadline = time.monotonic() + 240
        while not member_files(zoo) and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.1)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        rerun = generate(zoo, "--families", "standard", "--members", "3", env=env)
        out = finish(rerun, timeout=300)
        left = session_pids(first.pid)
    finally:
        _kill_group(first)
    assert rerun.returncode == 0, out
    assert_complete(zoo, ["standard"], 3)
    print(f"left running by the killed driver when the rerun finished: {len(left)} processes")


def session_pids(sid: int) -> list[int]:
    """Processes still in session `sid` (what a killed driver left running)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[4]) == sid:
                pids.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            pass
    return pids
