"""The weight store on object storage: every stage against moto's S3 server on 127.0.0.1.

The server runs as a child process for this module; each test gets a bucket of its own. Only
127.0.0.1 is contacted: credentials are dummies and EC2 metadata lookups are off.
"""
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from importlib.metadata import version

import numpy as np
import pytest

from conftest import REPO
from fingerprint import zoo_fingerprint
from test_store import (a_late_conflicting_writer, adding_every_family_to_a_new_zoo_at_once,
                        conflicting_writers_at_once, make_zoo, racing_writers_with_other_settings,
                        resuming_a_legacy_zoo, synthetic_result)
from test_sweep import finish, generate
from zoo.store import commit, open_zoo
from zoo.store import fs as store_fs

boto3 = pytest.importorskip("boto3")
pytest.importorskip("flask", reason="moto's server mode needs moto[server] (pip install '.[test]')")

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1",
           "no_proxy": "127.0.0.1"}
MOTO_FIXED = (5, 2, 5)  # earlier 5.x servers end a multipart upload with a reply pyarrow rejects (getmoto/moto#10055)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """`moto_server -H 127.0.0.1 -p PORT` for the module: (endpoint URL, its request log)."""
    if tuple(int(p) for p in version("moto").split(".")[:3]) < MOTO_FIXED:
        pytest.skip(f"moto {version('moto')}: its S3 server needs >= 5.2.5 for pyarrow's multipart uploads")
    port, log = _free_port(), tmp_path_factory.mktemp("moto") / "requests.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not _wait_for_port(port, proc):
            pytest.skip(f"moto's S3 server did not start on 127.0.0.1:{port}: {log.read_text()[-500:]}")
        yield f"http://127.0.0.1:{port}", log
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """A new bucket's URI, s3://BUCKET; the AWS variables point this process and its children at the server."""
    for name, value in {**AWS_ENV, "AWS_ENDPOINT_URL": s3_server[0]}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    bucket = f"zoo-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}"


def cli(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipelines.cli", *args]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)


def committed(uri: str) -> list[str]:
    fs, root = store_fs.resolve(uri)
    return store_fs.visible_parquet(fs, root + "/members")


def assert_complete(uri: str, family: str, n: int):
    df = open_zoo(uri).members(family=family)
    assert sorted(df["index"]) == list(range(n))
    assert df.member_id.is_unique


def test_uri_options_add_symzoo_defaults_and_keep_the_users(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    uri = store_fs.with_s3_defaults("s3://b/zoo?allow_delayed_open=false")
    assert uri.startswith("s3://b/zoo?") and "allow_delayed_open=false" in uri
    assert "endpoint_override=http%3A%2F%2F127.0.0.1%3A9" in uri
    assert store_fs.with_s3_defaults("gs://b/zoo") == "gs://b/zoo"


def test_aws_endpoint_url_s3_alone_reaches_the_server(s3, s3_server, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server[0])
    store_fs.atomic_write_bytes(s3 + "/zoo", "hello.txt", b"hello")
    got = boto3.client("s3", endpoint_url=s3_server[0]).get_object(Bucket=s3.removeprefix("s3://"), Key="zoo/hello.txt")
    assert got["Body"].read() == b"hello"


def uploads(log, bucket: str) -> list[str]:
    """The server's log lines of upload requests into `bucket`: (POST ...?uploads, PUT ...?partNumber=)."""
    return [line for line in log.read_text().splitlines() if f" /{bucket}/" in line and "uploadId=" in line]


def test_a_pack_of_64_members_is_a_multipart_upload_that_reads_back(s3, s3_server):
    """A real pack's size (~39 MB), the commit a GPU worker makes: several upload parts, then a
    completion that pyarrow must accept, then a server-side copy onto the pack's name."""
    z = make_zoo(s3 + "/zoo")
    results = [synthetic_result("standard", i) for i in range(64)]
    path = commit(z, results)
    bucket, key = path.split("/", 1)
    assert boto3.client("s3").head_object(Bucket=bucket, Key=key)["ContentLength"] > 30e6
    parts = [line for line in uploads(s3_server[1], bucket) if "partNumber=" in line]
    assert len(parts) >= 2, "no multipart upload happened"
    w, ids = open_zoo(s3 + "/zoo").weights("standard", which="final")
    by_id = dict(zip(ids, w))
    for r in results[::21]:
        np.testing.assert_array_equal(by_id[r.config.member_id], r.params_final)


def test_writers_adding_families_at_once_lose_none_on_s3(s3):
    """No lock on an object store: each family is a record of its own, so none is lost."""
    for attempt in range(3):
        adding_every_family_to_a_new_zoo_at_once(f"{s3}/zoo{attempt}")


def test_conflicting_writers_on_s3_never_go_on_under_a_record_that_does_not_stay(s3):
    conflicting_writers_at_once(s3 + "/at-once")
    a_late_conflicting_writer(s3 + "/late")
    racing_writers_with_other_settings(s3 + "/racing", rounds=2)


def test_a_zoo_made_before_manifest_records_resumes_on_s3(s3):
    resuming_a_legacy_zoo(s3 + "/zoo")


@pytest.mark.slow
def test_sigkill_resume_and_verify_on_s3(s3, cifar_root):
    """A driver killed after its first commit; the rerun trains only the rest; verify finds nothing wrong."""
    uri, env = s3 + "/zoo", {"SYMZOO_DATA": str(cifar_root)}
    args = ("--families", "standard", "--members", "3", "--executor", "local")
    proc = generate(uri, *args, env=env)
    deadline = time.monotonic() + 240
    while not committed(uri) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    finish(proc)
    assert 1 <= len(committed(uri)) < 3, "the kill came after every member was committed"
    out = finish(generate(uri, *args, env=env))
    assert "already committed" in out, out
    assert_complete(uri, "standard", 3)
    verify = cli("store", "verify", uri)
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.slow
def test_ray_executor_on_s3_matches_a_local_zoo(s3, cifar_root, tmp_path):
    """The default executor: Ray workers resolve the URI themselves, with the driver's environment."""
    env = {"SYMZOO_DATA": str(cifar_root)}
    args = ("--families", "standard", "--members", "2")
    out = finish(generate(s3 + "/zoo", *args, env=env))
    assert_complete(s3 + "/zoo", "standard", 2)
    local = cli("generate", "--preset", "smoke", "--zoo", str(tmp_path / "zoo"), *args, "--executor", "local", env=env)
    assert local.returncode == 0, local.stderr[-3000:]
    assert zoo_fingerprint(s3 + "/zoo") == zoo_fingerprint(tmp_path / "zoo"), out


def s3_keys(uri: str) -> set[str]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    return {o["Key"].removeprefix(prefix + "/") for page in pages for o in page.get("Contents", [])}


@pytest.mark.slow
def test_metanets_and_mli_read_the_zoo_and_write_their_outputs_on_s3(s3, cifar_root, tmp_path):
    """Defaults put the outputs beside the zoo, <zoo>/metanets and <zoo>/mli, on the object store;
    a rerun downloads the records and trains nothing."""
    uri, env = s3 + "/zoo", {"SYMZOO_DATA": str(cifar_root), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    made = cli("generate", "--preset", "smoke", "--zoo", uri, "--families", "standard", "--executor", "local", env=env)
    assert made.returncode == 0, made.stderr[-3000:]
    smoke = ("--metanets", "mlp", "--lrs", "0.01", "--runs", "1", "--epochs", "1", "--batch-size", "4")
    first = cli("metanets", "--zoo", uri, *smoke, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert {"table3.csv", "runs.json", "manifest.json", "scatter.png"} <= s3_keys(uri + "/metanets")
    again = cli("metanets", "--zoo", uri, *smoke, env={**env, "XDG_CACHE_HOME": str(tmp_path / "other-machine")})
    assert again.returncode == 0 and "trained 0 runs" in again.stderr, again.stderr[-3000:]
    mli = cli("mli", "--zoo", uri, "--members", "2", "--alphas", "3", "--n-eval", "64", "--workers", "1", env=env)
    assert mli.returncode == 0, mli.stderr[-3000:]
    keys = s3_keys(uri + "/mli")
    assert {"table4.csv", "figure5.png", "manifest.json"} <= keys and any(k.startswith("family=standard/") for k in keys)
