"""The weight store: round trips on tmp_path, the commit protocol under failure, concurrent manifest
writers, verify, and plain pyarrow / DuckDB readers. Results are synthetic (no training)."""
import errno
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import zoo
from zoo import store
from zoo.records import METRICS, MemberResult
from zoo.store import fs as store_fs
from conftest import REPO

SHA = "d" * 64
CONTRACT_COLUMNS = [
    "member_id", "index", "family", "zoo_seed", "lr", "weight_decay", "label_smoothing", "epochs",
    "epochs_trained", "seed", "status", "diverged_epoch", "train_acc", "train_loss", "train_loss_plain",
    "test_acc", "test_loss", "test_loss_plain", "wall_time_s", "device", "data_sha", "params_init", "params_final",
]


@lru_cache(maxsize=None)
def n_params(family: str) -> int:
    return zoo.layout(zoo.build(family)).size


def synthetic_result(family: str, index: int, *, zoo_seed=0, diverged=False, checkpoints=(), data_sha=SHA):
    """A MemberResult whose every value is a pure function of (family, index)."""
    rng = np.random.default_rng([index, len(family), zoo_seed])
    p = n_params(family)
    metrics = {m: float("nan") if diverged else float(rng.random()) for m in METRICS}
    ckpts = {e: (rng.standard_normal(p, dtype=np.float32), {m: float(e) for m in METRICS}) for e in checkpoints}
    return MemberResult(
        config=zoo.sample_member(zoo_seed, index, family), status="diverged" if diverged else "ok",
        diverged_epoch=3 if diverged else None, metrics=metrics,
        params_init=rng.standard_normal(p, dtype=np.float32), params_final=rng.standard_normal(p, dtype=np.float32),
        wall_time_s=float(index), device="cpu", data_sha=data_sha, checkpoints=ckpts)


def make_zoo(path, families=("standard",), asym_seed=0, **overrides):
    args = dict(zoo_seed=0, families={f: asym_seed for f in families}, recipe={"epochs": None, "batch_size": 512},
                recipe_overrides={}, data={"sha256": SHA, "name": "synthetic"})
    return store.init_zoo(path, **{**args, **overrides})


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.parquet") if not any(s.startswith((".", "_")) for s in p.parts))


def layout_json(family: str) -> list[dict]:
    return zoo.layout(zoo.build(family)).to_json()


def test_schema_is_the_contract():
    schema = store.members_schema(n_params("w_asym"), layout_json("w_asym"))
    assert schema.names == CONTRACT_COLUMNS
    assert schema.field("params_final").type == pa.large_binary()
    assert schema.field("params_final").metadata == {
        b"symzoo.dtype": b"<f4", b"symzoo.n_params": b"60634",
        b"symzoo.layout_sha256": store.schema.layout_sha256(layout_json("w_asym")).encode()}
    assert schema.field("diverged_epoch").nullable and not schema.field("test_acc").nullable
    assert schema.metadata[b"symzoo.schema_version"] == b"2" == str(store.SCHEMA_VERSION).encode()
    standard = store.members_schema(n_params("standard"), layout_json("standard"))
    assert [f.type for f in standard] == [f.type for f in schema]  # one schema for every family
    assert store.checkpoints_schema(5, layout_json("w_asym")).names[:3] == ["member_id", "epoch", "params"]
    v1 = store.members_schema(60634, layout_json("w_asym"), version=1)
    assert v1.field("params_final").type == pa.list_(pa.float32(), 60634)


def test_params_matrix_is_a_view_and_refuses_other_sizes():
    vectors = [np.arange(i, i + 4, dtype=np.float32) for i in range(3)]
    column = store.params_array(vectors)
    matrix = store.params_matrix(column, 4)
    np.testing.assert_array_equal(matrix, np.stack(vectors))
    assert np.shares_memory(matrix, np.frombuffer(column.buffers()[2], np.float32))  # zero-copy
    np.testing.assert_array_equal(store.params_matrix(column.slice(1), 4), np.stack(vectors[1:]))
    assert np.frombuffer(column[2].as_py(), "<f4").tolist() == [2.0, 3.0, 4.0, 5.0]  # the README's one-liner
    with pytest.raises(ValueError, match=r"\[16\] bytes: expected 20"):
        store.params_matrix(column, 5)
    with pytest.raises(ValueError, match=r"\['float64 \(4,\)'\]: must be 1-D float32"):
        store.params_array([np.zeros(4, np.float64)])


def test_row_groups_across_files_and_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(store.writer, "ROW_GROUP_ROWS", 3)  # several row groups per file
    z = make_zoo(tmp_path / "zoo")
    assert z.weights("standard")[0].shape == (0, 78042) and list(z.iter_weights("standard")) == []
    results = [synthetic_result("standard", i, diverged=(i in (4, 9))) for i in range(12)]
    path = store.commit(z, results[0::2])  # interleaved: each batch takes rows of both files
    store.commit(z, results[1::2])
    assert pq.ParquetFile(path).num_row_groups == 2
    assert pq.ParquetFile(path).metadata.row_group(0).column(22).compression == "UNCOMPRESSED"
    ok = [r for r in results if r.status == "ok"]
    w, ids = z.weights("standard", which="init")
    np.testing.assert_array_equal(w, np.stack([r.params_init for r in ok]))
    assert list(ids) == [r.config.member_id for r in ok]
    for batch_size, workers in ((4, 2), (1, 1), (100, None)):
        streamed = list(z.iter_weights("standard", which="init", batch_size=batch_size, workers=workers))
        assert [len(b) for b, _ in streamed] == [min(batch_size, 10 - i) for i in range(0, 10, batch_size)]
        np.testing.assert_array_equal(np.concatenate([b for b, _ in streamed]), w)
        assert [i for _, b in streamed for i in b] == list(ids)
    with pytest.raises(ValueError, match="batch_size=0"):
        next(z.iter_weights("standard", batch_size=0))
    with pytest.raises(ValueError, match="workers=0"):
        z.weights("standard", workers=0)


def test_members_columns_and_bad_queries(tmp_path):
    z = make_zoo(tmp_path / "zoo")
    store.commit(z, [synthetic_result("standard", i) for i in range(3)])
    df = z.members(columns=["member_id", "params_final"])
    assert df.columns.tolist() == ["member_id", "params_final"] and df["params_final"].iloc[0].shape == (78042,)
    with pytest.raises(ValueError, match="columns"):
        z.members(columns=["no_such_column"])
    with pytest.raises(ValueError, match="where"):
        z.members(where="no_such_column > 1")
    with pytest.raises(ValueError, match="which"):
        z.weights("standard", which="best")
    with pytest.raises(ValueError, match="family"):
        z.weights("sigma_asym")


def test_retried_and_overlapping_commits_read_once(tmp_path):
    z = make_zoo(tmp_path / "zoo")
    pack = [synthetic_result("standard", i) for i in range(4)]
    assert store.commit(z, pack) == store.commit(z, pack[::-1])  # a retry writes the same name
    store.commit(z, [synthetic_result("standard", i) for i in range(2, 6)])  # overlaps the first pack
    assert len(visible(tmp_path / "zoo" / "members")) == 2
    assert z.members()["index"].tolist() == list(range(6))
    assert len(z.weights("standard")[1]) == 6
    report = store.verify(z.path, move=False)
    assert report.clean and sorted(report.duplicates) == sorted(r.config.member_id for r in pack[2:])


def test_epochs_trained_follows_the_recipe_override(tmp_path):
    z = make_zoo(tmp_path / "zoo", recipe={"epochs": 2})
    store.commit(z, [synthetic_result("standard", 0)])
    assert z.members()["epochs_trained"].tolist() == [2]
    r = synthetic_result("standard", 1)
    store.commit(z, [r], epochs_trained={r.config.member_id: 7})
    assert z.members()["epochs_trained"].tolist() == [2, 7]


def _drift(table: pa.Table, kind: str) -> pa.Table:
    if kind == "dtype":
        i = table.schema.get_field_index("lr")
        return table.set_column(i, pa.field("lr", pa.float32(), nullable=False), pc.cast(table["lr"], pa.float32()))
    if kind == "missing":
        return table.drop_columns(["test_acc"]).replace_schema_metadata(table.schema.metadata)
    return table.append_column("extra", pa.array([1] * len(table)))


@pytest.mark.parametrize("kind, words", [("dtype", ["'lr'", "float", "double"]), ("missing", ["'test_acc'", "missing"]),
                                         ("extra", ["'extra'"])])
def test_schema_drift_is_rejected_at_commit(tmp_path, kind, words):
    z = make_zoo(tmp_path / "zoo")
    results = [synthetic_result("standard", 0)]
    good = store.writer.members_table(results, z.schema("standard"), {results[0].config.member_id: 10})
    with pytest.raises(ValueError) as err:
        store.commit_tables(z, "standard", _drift(good, kind))
    assert all(w in str(err.value) for w in words), str(err.value)
    assert visible(tmp_path / "zoo") == []


def test_a_schema_column_needs_a_result_field_of_that_name(tmp_path):
    z = make_zoo(tmp_path / "zoo")
    schema = z.schema("standard").append(pa.field("final_finite", pa.bool_(), nullable=False))
    r = synthetic_result("standard", 0)
    with pytest.raises(ValueError, match="column 'final_finite': MemberResult, its config and its metrics"):
        store.writer.members_table([r], schema, {r.config.member_id: 1})


@pytest.mark.parametrize("field, value, words", [
    ("params_final", np.zeros(78042, np.float64), ["params_final", "float64"]),
    ("params_init", np.zeros(100, np.float32), ["params_init", "(100,)", "78042"]),
    ("data_sha", "e" * 64, ["data_sha"]),
])
def test_commit_rejects_results_that_do_not_fit(tmp_path, field, value, words):
    z = make_zoo(tmp_path / "zoo")
    bad = synthetic_result("standard", 1)
    setattr(bad, field, value)
    with pytest.raises(ValueError) as err:
        store.commit(z, [synthetic_result("standard", 0), bad])
    assert all(w in str(err.value) for w in words), str(err.value)
    with pytest.raises(ValueError, match="zoo_seed"):
        store.commit(z, [synthetic_result("standard", 0, zoo_seed=3)])
    with pytest.raises(ValueError, match="one family"):
        store.commit(z, [synthetic_result("standard", 0), synthetic_result("w_asym", 0)])
    with pytest.raises(ValueError, match="not in this zoo"):
        store.commit(z, [synthetic_result("w_asym", 0)])
    assert visible(tmp_path / "zoo") == []


def _disk_full_after_half(monkeypatch):
    real = pq.write_table

    def write_half_then_fail(table, where, **kwargs):
        sink = pa.BufferOutputStream()
        real(table, sink, **kwargs)
        data = sink.getvalue()
        where.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_fs.pq, "write_table", write_half_then_fail)


def _fsync_fails(monkeypatch):
    def fail(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_fs, "_fsync", fail)


@pytest.mark.parametrize("failure", [_disk_full_after_half, _fsync_fails])
def test_disk_full_during_commit_leaves_nothing_visible(tmp_path, monkeypatch, failure):
    z = make_zoo(tmp_path / "zoo")
    old = [synthetic_result("standard", i) for i in range(2)]
    path = store.commit(z, old)
    before = Path(path).read_bytes()
    failure(monkeypatch)
    for pack in (old, [synthetic_result("standard", i, checkpoints=(1,)) for i in range(2, 4)]):
        with pytest.raises(OSError) as err:
            store.commit(z, pack)
        assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    everything = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "zoo").rglob("*") if p.is_file())
    writer = [p for p in everything if p.startswith("zoo/manifest.d/writer-") and p.endswith(".json")]
    assert len(writer) == 1 and everything == sorted(  # no temp left
        ["zoo/manifest.json", "zoo/manifest.d/family=standard.json", *writer,
         f"zoo/members/family=standard/{Path(path).name}"])
    assert Path(path).read_bytes() == before  # the failed retry did not touch the committed file
    assert z.members()["index"].tolist() == [0, 1] and len(z.checkpoints("standard")) == 0


def test_disk_full_while_creating_a_zoo_leaves_no_temp_or_proposal(tmp_path, monkeypatch):
    """Whichever write of the manifest's records fails, nothing hidden stays and a rerun completes
    the zoo, its first writer recorded (records that did appear read without one meanwhile)."""
    real, n_fsyncs = store_fs._fsync, 10  # 2 proposals, 2 records, 1 writer record; 2 fsyncs each
    for k in range(n_fsyncs):
        calls = []

        def fail_kth(path, k=k):
            calls.append(path)
            if len(calls) == k + 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            real(path)

        monkeypatch.setattr(store_fs, "_fsync", fail_kth)
        with pytest.raises(OSError):
            make_zoo(tmp_path / str(k))
        monkeypatch.undo()
        left = [p.relative_to(tmp_path) for p in (tmp_path / str(k)).rglob("*") if p.is_file()]
        assert not [p for p in left if p.name.startswith(".") or "proposed" in p.parts], left
        if (tmp_path / str(k) / "manifest.json").exists():  # it opens, a writer recorded or not
            m = store.open_zoo(tmp_path / str(k)).manifest
            assert "code_version" in m or ("created_utc" not in m and m["data"] == {"sha256": SHA})
        m = make_zoo(tmp_path / str(k)).manifest
        assert m["code_version"] and m["data"] == {"sha256": SHA, "name": "synthetic"} and m["families"]
    assert len(calls) == n_fsyncs


def test_orphan_checkpoints_are_not_read(tmp_path, monkeypatch):
    """Checkpoints are committed first; if the members file then fails, readers show neither."""
    z = make_zoo(tmp_path / "zoo")
    real = store_fs.atomic_write_parquet

    def fail_on_members(fs, path, table, **kwargs):
        if "/members/" in path:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fs, path, table, **kwargs)

    monkeypatch.setattr(store_fs, "atomic_write_parquet", fail_on_members)
    with pytest.raises(OSError):
        store.commit(z, [synthetic_result("standard", 0, checkpoints=(0,))])
    assert len(visible(tmp_path / "zoo" / "checkpoints")) == 1
    assert z.committed_ids("standard") == set() and len(z.checkpoints("standard")) == 0


WRITER = """
import sys, time
sys.path.insert(0, {tests!r})
from test_store import synthetic_result
from zoo import store
start, packs = float(sys.argv[1]), [[int(i) for i in p.split(",")] for p in sys.argv[2:]]
while time.time() < start:
    time.sleep(0.005)
for pack in packs:
    store.commit({zoo!r}, [synthetic_result("standard", i) for i in pack])
"""


def test_two_writer_processes_leave_every_member_once(tmp_path):
    z = make_zoo(tmp_path / "zoo")
    code = WRITER.format(tests=str(REPO / "tests"), zoo=z.path)
    packs = {"a": ["0,1,2,3", "4,5,6,7", "8,9,10,11", "12,13"], "b": ["0,1,2,3", "6,7,8,9", "10,11,12,13", "2,3,4,5"]}
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = str(time.time() + 6)  # both interpreters are up by then, so their commits interleave
    procs = [subprocess.Popen([sys.executable, "-c", code, start, *p], env=env, stderr=subprocess.PIPE) for p in packs.values()]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()
    df = z.members()
    assert df["index"].tolist() == list(range(14)) and df["member_id"].is_unique
    w, ids = z.weights("standard")
    np.testing.assert_array_equal(w, np.stack([synthetic_result("standard", i).params_final for i in range(14)]))
    assert not any(n.startswith(".") for n in os.listdir(tmp_path / "zoo" / "members" / "family=standard"))


def _damage(zoo_dir: Path, good: str) -> dict[str, str]:
    """Plant every kind of bad file next to the good ones; returns {path: expected reason word}."""
    folder = zoo_dir / "members" / "family=standard"
    data = (folder / good).read_bytes()
    (folder / good).write_bytes(data[: len(data) // 2])  # truncated in place
    (folder / "pack-empty.parquet").write_bytes(b"")
    pq.write_table(pa.table({"x": [1, 2]}), folder / "pack-foreign.parquet")
    stray = zoo_dir / "members" / "family=resnet50"
    stray.mkdir()
    (stray / "pack-stray.parquet").write_bytes(data)
    return {str(folder / good): "unreadable", str(folder / "pack-empty.parquet"): "unreadable",
            str(folder / "pack-foreign.parquet"): "missing", str(stray / "pack-stray.parquet"): "family=<f>"}


def test_verify_moves_bad_files_aside_and_readers_skip_them(tmp_path):
    z = make_zoo(tmp_path / "zoo")
    store.commit(z, [synthetic_result("standard", i) for i in range(3)])
    doomed = Path(store.commit(z, [synthetic_result("standard", i) for i in range(3, 6)])).name
    other = make_zoo(tmp_path / "other", zoo_seed=5)
    foreign = Path(store.commit(other, [synthetic_result("standard", 9, zoo_seed=5)]))
    bad = _damage(tmp_path / "zoo", doomed)
    (tmp_path / "zoo" / "members" / "family=standard" / foreign.name).write_bytes(foreign.read_bytes())
    bad[str(tmp_path / "zoo" / "members" / "family=standard" / foreign.name)] = "foreign"
    folder = tmp_path / "zoo" / "members" / "family=standard"
    stale, fresh = folder / f".{doomed}.host.1.1.tmp", folder / f".{doomed}.host.2.2.tmp"
    stale.write_bytes(b"partial"), fresh.write_bytes(b"partial")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))

    with pytest.warns(store.SkippedFileWarning) as caught:
        assert z.committed_ids("standard") == {synthetic_result("standard", i).config.member_id for i in range(3)}
    assert {str(w.message).split(":")[0].removeprefix("skipping ") for w in caught} == set(bad) - {
        str(tmp_path / "zoo" / "members" / "family=resnet50" / "pack-stray.parquet")}  # not a family folder

    report = store.verify(z.path)
    assert {p: r for p, r in report.bad}.keys() == bad.keys() and not report.clean
    assert all(word in dict(report.bad)[p] for p, word in bad.items()), report.summary()
    assert all("/_quarantine/members/" in dst and not os.path.exists(src) for src, dst in report.moved)
    assert report.stale_temps == [str(stale)] and not stale.exists() and fresh.exists()
    assert report.members == {"standard": {"ok": 3}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left to skip
        assert z.members()["index"].tolist() == [0, 1, 2]
    assert store.verify(z.path).clean


def test_deep_verify_catches_a_corrupted_page(tmp_path):
    z = make_zoo(tmp_path / "zoo")
    path = Path(store.commit(z, [synthetic_result("standard", i) for i in range(2)]))
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 8] = b"\xff" * 8  # inside params data: the footer is intact
    path.write_bytes(bytes(data))
    assert store.verify(z.path, move=False, deep=False).clean
    report = store.verify(z.path, move=False)
    assert [p for p, _ in report.bad] == [str(path)] and "CRC" in report.bad[0][1] and path.exists()


def test_plain_pyarrow_duckdb_and_pandas_read_the_whole_zoo(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    z = make_zoo(tmp_path / "zoo", families=("standard", "w_asym"))
    store.commit(z, [synthetic_result("standard", i) for i in range(4)])
    store.commit(z, [synthetic_result("w_asym", i) for i in range(3)])
    quarantined = tmp_path / "zoo" / "_quarantine" / "members" / "family=standard" / "pack-x.parquet"
    quarantined.parent.mkdir(parents=True)
    quarantined.write_bytes(b"junk")  # what verify leaves behind
    (tmp_path / "zoo" / "members" / "family=standard" / ".pack-y.parquet.h.1.1.tmp").write_bytes(b"junk")
    w = {f: z.weights(f) for f in ("standard", "w_asym")}

    table = ds.dataset(f"{z.path}/members", partitioning="hive").to_table()  # every family at once
    assert sorted(table["family"].to_pylist()) == ["standard"] * 4 + ["w_asym"] * 3  # no junk, no temp
    for family, (weights, ids) in w.items():
        rows = table.filter(pc.equal(table["family"], family)).sort_by("index")
        assert rows["member_id"].to_pylist() == list(ids)
        np.testing.assert_array_equal(store.params_matrix(rows["params_final"], weights.shape[1]), weights)

    glob = f"{z.path}/members/*/*.parquet"  # neither _quarantine/ nor temps match
    counts = duckdb.sql(f"SELECT family, count(*), min(octet_length(params_final)) FROM read_parquet('{glob}', "
                        "hive_partitioning=true) GROUP BY family ORDER BY family").fetchall()
    assert counts == [("standard", 4, 4 * 78042), ("w_asym", 3, 4 * 60634)]
    blob, acc = duckdb.sql(f"SELECT params_final, test_acc FROM read_parquet('{glob}', hive_partitioning=true) "
                           f"WHERE member_id = '{w['w_asym'][1][2]}'").fetchall()[0]
    np.testing.assert_array_equal(np.frombuffer(blob, "<f4"), w["w_asym"][0][2])
    assert acc == z.members(family="w_asym")["test_acc"].iloc[2]

    df = pd.read_parquet(f"{z.path}/members", partitioning=None).sort_values(["family", "index"])
    standard = np.stack(df[df.family == "standard"].params_final.map(lambda b: np.frombuffer(b, "<f4")))
    np.testing.assert_array_equal(standard, w["standard"][0])


def flip_a_params_byte(path: Path, column: str = "params_final") -> None:
    """Flip one bit in the middle of a params column chunk's values: footer and other pages intact."""
    meta = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == column)
    data = bytearray(path.read_bytes())
    data[chunk.data_page_offset + chunk.total_compressed_size // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_bit_is_caught_by_every_reader(tmp_path):
    z = make_zoo(tmp_path / "zoo")
    good = [synthetic_result("standard", i, checkpoints=(1,)) for i in range(3)]
    store.commit(z, good)
    damaged = Path(store.commit(z, [synthetic_result("standard", i, checkpoints=(1,)) for i in range(3, 5)]))
    flip_a_params_byte(damaged)
    ckpt = tmp_path / "zoo" / "checkpoints" / "family=standard" / damaged.name
    flip_a_params_byte(ckpt, "params")
    good_ids = [r.config.member_id for r in good]

    readers = {
        "committed_ids": lambda: sorted(z.committed_ids("standard")),
        "weights": lambda: list(z.weights("standard")[1]),
        "iter_weights": lambda: [i for _, ids in z.iter_weights("standard", batch_size=2) for i in ids],
        "torch_dataset": lambda: list(z.torch_dataset("standard").member_ids),
        "members(params_final)": lambda: z.members(["member_id", "params_final"])["member_id"].tolist(),
        "checkpoints": lambda: sorted(set(z.checkpoints("standard")["member_id"])),
    }
    for name, read in readers.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert read() == (sorted(good_ids) if name in ("committed_ids", "checkpoints") else good_ids), name
        said = [str(w.message) for w in caught if w.category is store.SkippedFileWarning]
        assert any(f"skipping {damaged}" in m or f"skipping {ckpt}" in m for m in said), (name, said)
        assert all("CRC" in m for m in said), (name, said)
    with pytest.warns(store.SkippedFileWarning):
        np.testing.assert_array_equal(z.weights("standard")[0], np.stack([r.params_final for r in good]))
    assert len(z.members()) == 5  # the metadata pages are intact: its members are listed, their weights are not

    report = store.verify(z.path)
    assert sorted(p for p, _ in report.bad) == sorted([str(damaged), str(ckpt)])
    quarantine = tmp_path / "zoo" / "_quarantine" / "members" / "family=standard"
    assert not damaged.exists() and (quarantine / damaged.name).exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert z.committed_ids("standard") == set(good_ids)


V1_FIXTURE = REPO / "tests" / "fixtures" / "v1_zoo"


def v1_zoo(tmp_path) -> Path:
    path = tmp_path / "v1_zoo"
    shutil.copytree(V1_FIXTURE, path)
    return path


def fixture_values(family: str, index: int):
    sys.path.insert(0, str(V1_FIXTURE.parent))
    try:
        from make_v1_zoo import LAYOUTS, v1_values
    finally:
        sys.path.remove(str(V1_FIXTURE.parent))
    return v1_values(family, index, LAYOUTS[family][0]["size"])


def snapshot(z) -> dict:
    """Everything a reader returns of a zoo, params as raw bytes (NaN-safe comparison)."""
    out = {"members": z.members(list(CONTRACT_COLUMNS)).assign(
        params_init=lambda d: d.params_init.map(np.ndarray.tobytes),
        params_final=lambda d: d.params_final.map(np.ndarray.tobytes))}
    for f in z.families:
        for which in ("init", "final"):
            w, ids = z.weights(f, which, status=None)
            out[f, which] = (w.tobytes(), list(ids))
        out[f, "ckpt"] = z.checkpoints(f).assign(params=lambda d: d.params.map(np.ndarray.tobytes))
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].equals(b[k]) if isinstance(a[k], pd.DataFrame) else a[k] == b[k], k


def file_versions(path: Path) -> list[int]:
    return sorted(store.schema.file_version(pq.read_schema(p)) for p in path.rglob("*.parquet"))


def test_a_v1_zoo_reads_and_upgrades_in_place(tmp_path):
    path = v1_zoo(tmp_path)
    z = store.open_zoo(path)
    assert z.version == 1 and file_versions(path) == [1] * 6
    w, ids = z.weights("standard", status=None)
    assert w.shape == (5, 6) and len(z.checkpoints("w_asym")) == 6
    for i in range(5):
        init, final, ckpts = fixture_values("standard", i)
        np.testing.assert_array_equal(w[i], final)  # NaN where the fixture put one
    before = snapshot(z)

    report = store.upgrade(path)
    assert len(report.rewritten) == 6 and report.rows_checked == 8 + 16 and report.manifest_version == 2
    assert file_versions(path) == [2] * 6 and not list(path.rglob("*.tmp"))
    upgraded = store.open_zoo(path)
    assert upgraded.version == 2 and upgraded.manifest["upgraded"]["from"] == 1
    assert_same(snapshot(upgraded), before)
    assert store.verify(path).clean
    again = store.upgrade(path)  # nothing left to do
    assert again.rewritten == [] and again.current == 6
    ds.dataset(f"{path}/members", partitioning="hive").to_table()  # one dataset now


def _killed_at(monkeypatch, after_writes: int, where: str):
    """Make the upgrade die (as a kill would, BaseException) at its n-th commit, before or after the rename."""
    real, calls = store_fs.atomic_write, []

    def dying(fs_or_root, path, write):
        calls.append(path)
        if len(calls) == after_writes and where == "before_rename":
            def partial(stream):
                stream.write(b"PAR1 half a file")
                raise KeyboardInterrupt
            return real(fs_or_root, path, partial)
        result = real(fs_or_root, path, write)
        if len(calls) == after_writes:
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(store_fs, "atomic_write", dying)


@pytest.mark.parametrize("after_writes, where", [(1, "before_rename"), (3, "after_rename"), (6, "after_rename"),
                                                 (7, "before_rename")])  # the 7th write is the manifest
def test_a_killed_upgrade_leaves_a_readable_zoo_and_resumes(tmp_path, monkeypatch, after_writes, where):
    path = v1_zoo(tmp_path)
    before = snapshot(store.open_zoo(path))
    _killed_at(monkeypatch, after_writes, where)
    with pytest.raises(KeyboardInterrupt):
        store.upgrade(path)
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every file still reads: v1 or v2, never half
        assert_same(snapshot(store.open_zoo(path)), before)
    done = after_writes - (where == "before_rename")
    assert file_versions(path) == sorted([1] * (6 - min(done, 6)) + [2] * min(done, 6))
    report = store.upgrade(path)
    assert len(report.rewritten) == 6 - min(done, 6) and report.current == min(done, 6)
    assert store.open_zoo(path).version == 2 and file_versions(path) == [2] * 6
    assert_same(snapshot(store.open_zoo(path)), before)


def test_writing_to_a_v1_zoo_asks_for_the_upgrade(tmp_path):
    path = v1_zoo(tmp_path)
    before = (path / "manifest.json").read_bytes()
    args = dict(zoo_seed=0, families={"standard": 0}, recipe={"epochs": 2}, recipe_overrides={"epochs": 2},
                data={"sha256": SHA}, layouts={"standard": store.open_zoo(path).layout("standard")})
    with pytest.raises(ValueError) as err:
        store.init_zoo(path, **args)
    assert str(err.value) == (f"{path} is a schema v1 zoo, which this code reads but does not add to: run "
                              f"`symzoo store upgrade {path}` (rewrites it to v2 in place, resumable), then rerun")
    with pytest.raises(ValueError, match="symzoo store upgrade"):
        store.commit(store.open_zoo(path), [synthetic_result("standard", 7)])
    assert (path / "manifest.json").read_bytes() == before and file_versions(path) == [1] * 6


def test_upgrade_leaves_an_unreadable_file_and_keeps_the_manifest_at_v1(tmp_path):
    from pipelines.cli import main

    path = v1_zoo(tmp_path)
    bad = path / "members" / "family=w_asym" / "pack-bad.parquet"
    bad.write_bytes(b"")
    assert main(["store", "upgrade", str(path)]) == 1
    assert store.open_zoo(path).version == 1 and bad.exists()
    assert main(["store", "verify", str(path)]) == 1 and not bad.exists()
    assert main(["store", "upgrade", str(path)]) == 0 and store.open_zoo(path).version == 2


def test_manifest_mismatch_is_a_clear_error_and_changes_nothing(tmp_path):
    z = make_zoo(tmp_path / "zoo")
    manifest = tmp_path / "zoo" / "manifest.json"
    before = manifest.read_bytes()
    with pytest.raises(store.ManifestMismatch) as err:
        make_zoo(tmp_path / "zoo", zoo_seed=1, recipe={"epochs": 3, "batch_size": 512}, data={"sha256": "f" * 64},
                 asym_seed=2)
    text = str(err.value)
    for line in ("zoo_seed: 0 in the zoo, 1 now", "recipe.epochs: None in the zoo, 3 now", "data.sha256",
                 "families.standard.asym_seed: 0 in the zoo, 2 now", "--new-zoo", "different path"):
        assert line in text, text
    assert len(err.value.differences) == 4 and manifest.read_bytes() == before

    make_zoo(tmp_path / "zoo")  # the same settings resume without rewriting
    assert manifest.read_bytes() == before
    make_zoo(tmp_path / "zoo", families=("w_asym",))  # a new family is added
    assert list(store.open_zoo(tmp_path / "zoo").manifest["families"]) == ["standard", "w_asym"]

    store.commit(z, [synthetic_result("standard", 0)])
    added = manifest.read_bytes()
    with pytest.raises(ValueError, match="different path"):
        make_zoo(tmp_path / "zoo", zoo_seed=1, new_zoo=True)
    assert manifest.read_bytes() == added
    assert make_zoo(tmp_path / "fresh").manifest["zoo_seed"] == 0
    assert make_zoo(tmp_path / "fresh", zoo_seed=1, new_zoo=True).manifest["zoo_seed"] == 1  # no members yet


def test_fixed_pieces_are_recorded_and_checked(tmp_path):
    """The W-Asym masks / values and FiGLU's F come from numpy's Generator, whose streams may change
    between numpy releases: the manifest holds their digest, and code that builds others is refused."""
    from zoo.families import fixed_digest

    path = tmp_path / "zoo"
    m = make_zoo(path, families=("w_asym", "sigma_asym")).manifest
    z = store.open_zoo(path)
    for family in ("w_asym", "sigma_asym"):
        assert m["families"][family]["fixed_sha256"] == fixed_digest(zoo.build(family, 0))
        built = dict(zoo.build(family, 0).named_buffers())
        assert built and all(torch.equal(b, built[n]) for n, b in z.network(family).named_buffers())
    assert fixed_digest(zoo.build("w_asym", 1)) != m["families"]["w_asym"]["fixed_sha256"]

    record = path / "manifest.d" / "family=w_asym.json"
    other = json.loads(record.read_text())
    other["fixed_sha256"] = "0" * 64  # as if made where numpy drew other masks
    record.write_text(json.dumps(other))
    before = record.read_bytes()
    with pytest.raises(store.ManifestMismatch, match="families.w_asym.fixed_sha256: '0000"):
        make_zoo(path, families=("w_asym",))
    assert record.read_bytes() == before
    with pytest.raises(ValueError, match="family='w_asym': this code builds fixed pieces"):
        store.open_zoo(path).network("w_asym")
    store.open_zoo(path).network("sigma_asym")

    del other["fixed_sha256"]  # a zoo made before the digest was recorded
    record.write_text(json.dumps(other))
    make_zoo(path, families=("w_asym",))
    store.open_zoo(path).network("w_asym")


def concurrently(calls) -> list:
    """Each call in a thread of its own, all started together; each one's result or exception, in order."""
    results = [None] * len(calls)

    def run(i, call):
        try:
            results[i] = call()
        except Exception as e:  # noqa: BLE001  the caller checks which kind
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def wait_together_at(mp, module, name: str, n: int, *, after: bool, when=lambda *args: True) -> None:
    """Make `module.name` (where `when(*args)`) wait, before or after it runs, until n threads call it."""
    barrier, real = threading.Barrier(n, timeout=30), getattr(module, name)

    def waiting(*args):
        if when(*args) and not after:
            barrier.wait()
        result = real(*args)
        if when(*args) and after:
            barrier.wait()
        return result

    mp.setattr(module, name, waiting)


def spy_on_writes(mp) -> list[str]:
    """The paths every atomic_write_bytes call writes from now on, in order."""
    seen, real = [], store_fs.atomic_write_bytes

    def spy(fs_or_root, path, data):
        seen.append(path)
        return real(fs_or_root, path, data)

    mp.setattr(store_fs, "atomic_write_bytes", spy)
    return seen


def left_proposals(path) -> list[str]:
    fs, root = store_fs.resolve(path)
    return [i.path for i in store_fs.list_files(fs, f"{root}/manifest.d/proposed")]


def adding_families_at_once(path, families) -> list[str]:
    """One writer per family, each of which reads the zoo's manifest before any of them writes (one
    manifest.json rewritten by each would keep the last writer's families only); the paths written."""
    from zoo.store import writer

    with pytest.MonkeyPatch.context() as mp:
        wait_together_at(mp, writer, "load_manifest", len(families), after=True)
        writes = spy_on_writes(mp)
        results = concurrently([lambda f=f: make_zoo(path, (f,)) for f in families])
    assert all(isinstance(r, store.Zoo) for r in results), results
    z = store.open_zoo(path)
    assert set(families) <= set(z.families) and not left_proposals(path)
    for family in families:
        store.commit(z, [synthetic_result(family, 1)])
    return writes


def adding_every_family_to_a_new_zoo_at_once(path) -> None:
    writes = adding_families_at_once(path, list(zoo.FAMILIES))
    assert sum("/manifest.d/proposed/manifest/" in w for w in writes) == len(zoo.FAMILIES)  # each one created the zoo
    z = store.open_zoo(path)
    assert z.families == list(zoo.FAMILIES) and sorted(z.members().family) == sorted(zoo.FAMILIES)
    assert store.verify(path).clean


def conflicting_writers_at_once(path) -> None:
    """Two zoo seeds, each proposed before either writer lists the proposals and removes its own:
    both refuse, nothing stays; then each writer alone: the first goes on, the second is refused."""
    from zoo.store import manifest

    with pytest.MonkeyPatch.context() as mp:
        wait_together_at(mp, manifest, "_files", 2, after=False, when=lambda fs, folder: "/proposed/" in folder)
        wait_together_at(mp, store_fs, "remove_quietly", 2, after=False, when=lambda fs, path: "/proposed/" in path)
        results = concurrently([lambda s=s: make_zoo(path, zoo_seed=s) for s in (0, 1)])
    for r, (seed, other) in zip(results, ((0, 1), (1, 0))):
        assert isinstance(r, store.ManifestMismatch) and r.rival, r
        assert str(r).startswith(f"another writer is creating the zoo at {store_fs.resolve(path)[1]} with other")
        assert r.differences == [f"zoo_seed: {other} in the other writer's, {seed} now"]
    assert not left_proposals(path)
    with pytest.raises(FileNotFoundError):
        store.open_zoo(path)
    assert make_zoo(path, zoo_seed=1).manifest["zoo_seed"] == 1
    with pytest.raises(store.ManifestMismatch, match="zoo_seed: 1 in the zoo, 0 now"):
        make_zoo(path, zoo_seed=0)


def a_late_conflicting_writer(path) -> None:
    """A writer that found no zoo (or no w_asym record), while another created it with other settings
    and went on, is refused by what is stored."""
    from zoo.store import manifest

    fs, root = store_fs.resolve(path)
    settings = dict(zoo_seed=0, recipe={"epochs": None, "batch_size": 512}, recipe_overrides={},
                    data={"sha256": SHA, "name": "synthetic"})
    late = manifest.build_manifest(families={"w_asym": 1}, **{**settings, "zoo_seed": 1})
    found = manifest.load_manifest(fs, root)
    assert found is None
    make_zoo(path, families=("standard",))
    with pytest.raises(store.ManifestMismatch, match="zoo_seed: 0 in the zoo, 1 now"):
        manifest.settle(fs, root, late, found)
    found = manifest.load_manifest(fs, root)
    make_zoo(path, families=("w_asym",))
    with pytest.raises(store.ManifestMismatch, match="families.w_asym.asym_seed: 0 in the zoo, 1 now"):
        manifest.settle(fs, root, manifest.build_manifest(families={"w_asym": 1}, **settings), found)
    assert store.open_zoo(path).manifest["families"]["w_asym"]["asym_seed"] == 0 and not left_proposals(path)


def jittered(mp, seed: int) -> None:
    """Random pauses (0-3 ms) before every read, listing and write of the manifest's records."""
    from zoo.store import manifest

    rng = random.Random(seed)
    for module, name in ((manifest, "_read_json"), (manifest, "_files"), (store_fs, "atomic_write_bytes")):
        def paused(*args, _real=getattr(module, name)):
            time.sleep(rng.random() * 3e-3)
            return _real(*args)
        mp.setattr(module, name, paused)


def racing_writers_with_other_settings(path, rounds: int) -> None:
    """Writers of two zoo seeds and two asym seeds at once, under random pauses: each one either
    refuses or returns a zoo whose settings are the ones stored afterwards."""
    settings = [(zoo_seed, asym_seed) for zoo_seed in (0, 1) for asym_seed in (0, 1)] * 2
    refused = 0
    for r in range(rounds):
        where = f"{path}/{r}"
        with pytest.MonkeyPatch.context() as mp:
            jittered(mp, r)
            results = concurrently([lambda s=s: make_zoo(where, zoo_seed=s[0], asym_seed=s[1]) for s in settings])
        fs, root = store_fs.resolve(where)
        stored = store.manifest.load_manifest(fs, root)
        for (zoo_seed, asym_seed), result in zip(settings, results):
            if isinstance(result, store.Zoo):
                assert (stored["zoo_seed"], stored["families"]["standard"]["asym_seed"]) == (zoo_seed, asym_seed)
            else:
                assert isinstance(result, store.ManifestMismatch), result
                refused += 1
        assert not left_proposals(where)
    assert refused >= rounds * 6  # of 4 settings, at most one goes on


def legacy_zoo(path) -> bytes:
    """A zoo as made before manifest.d/: one manifest.json, families inside, and a member; its bytes."""
    from zoo.store import manifest

    store.commit(make_zoo(path, families=("standard",), replicates=2), [synthetic_result("standard", 0)])
    fs, root = store_fs.resolve(path)
    merged = manifest.load_manifest(fs, root)
    fs.delete_dir_contents(f"{root}/manifest.d")
    manifest.write_manifest(fs, root, dict(merged, resumed_with=[{"code_version": {"symzoo": "0.0"},
                                                                  "packages": {}, "utc": "then"}]))
    return store_fs.read_bytes(fs, f"{root}/manifest.json")


def resuming_a_legacy_zoo(path) -> None:
    """It opens as before; writers adding families at once add records beside its manifest.json,
    which stays as it is; its families, provenance and replicates still count."""
    before = legacy_zoo(path)
    legacy = store.open_zoo(path).manifest
    assert legacy["families"].keys() == {"standard"} and len(store.open_zoo(path).members()) == 1
    with pytest.raises(store.ManifestMismatch, match="families.standard.asym_seed: 0 in the zoo, 1 now"):
        make_zoo(path, asym_seed=1)
    writes = adding_families_at_once(path, ["w_asym", "sigma_asym"])
    fs, root = store_fs.resolve(path)
    assert store_fs.read_bytes(fs, f"{root}/manifest.json") == before
    assert not any("/proposed/manifest/" in w for w in writes)
    m = store.open_zoo(path).manifest
    assert {k: m[k] for k in ("code_version", "created_utc", "replicates")} == {
        "code_version": legacy["code_version"], "created_utc": legacy["created_utc"], "replicates": 2}
    assert [r["code_version"] for r in m["resumed_with"]] == [{"symzoo": "0.0"}, legacy["code_version"]]
    assert list(m["families"]) == list(zoo.FAMILIES) and len(store.open_zoo(path).members()) == 3


def test_writers_adding_families_at_once_lose_none(tmp_path):
    adding_every_family_to_a_new_zoo_at_once(tmp_path / "zoo")


def test_conflicting_writers_at_once_both_refuse(tmp_path):
    conflicting_writers_at_once(tmp_path / "zoo")


def test_a_late_conflicting_writer_is_refused(tmp_path):
    a_late_conflicting_writer(tmp_path / "zoo")


def test_racing_writers_never_go_on_under_a_record_that_does_not_stay(tmp_path):
    racing_writers_with_other_settings(tmp_path, rounds=10)


def test_a_zoo_made_before_manifest_records_opens_and_resumes(tmp_path):
    resuming_a_legacy_zoo(tmp_path / "zoo")


def test_resumes_with_other_code_versions_are_recorded(tmp_path, monkeypatch):
    from zoo.store import manifest

    path = tmp_path / "zoo"
    created = make_zoo(path).manifest
    assert "resumed_with" not in make_zoo(path).manifest  # same versions: nothing to record
    monkeypatch.setattr(manifest, "code_version", lambda: {"symzoo": "9.9", "git_commit": "abc"})
    for _ in range(2):  # recorded once, not at every resume
        m = make_zoo(path, families=("standard", "w_asym")).manifest
        assert [r["code_version"] for r in m["resumed_with"]] == [{"symzoo": "9.9", "git_commit": "abc"}]
    assert m["code_version"] == created["code_version"] and m["created_utc"] == created["created_utc"]
    assert sorted(m["families"]) == ["standard", "w_asym"]


def test_manifest_records_provenance_and_refuses_other_schema_versions(tmp_path):
    m = make_zoo(tmp_path / "zoo").manifest
    assert m["schema_version"] == store.SCHEMA_VERSION and m["families"]["standard"]["n_params"] == 78042
    assert m["code_version"]["symzoo"] and {"torch", "numpy", "pyarrow", "pandas", "scipy"} <= set(m["packages"])
    path = tmp_path / "zoo" / "manifest.json"
    path.write_text(json.dumps(dict(m, schema_version=99)))
    with pytest.raises(ValueError, match="schema_version=99"):
        store.open_zoo(tmp_path / "zoo")
    with pytest.raises(store.ManifestMismatch, match="schema_version: 99 in the zoo, 2 now"):
        make_zoo(tmp_path / "zoo")
    with pytest.raises(FileNotFoundError, match="manifest"):
        store.open_zoo(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="family='resnet50'"):
        make_zoo(tmp_path / "bad", families=("resnet50",))


def test_uris_and_non_local_filesystems(tmp_path):
    uri = (tmp_path / "zoo").as_uri()
    assert uri.startswith("file://")
    z = make_zoo(uri)
    store.commit(uri, [synthetic_result("standard", i) for i in range(2)])
    assert z.path == uri and len(store.open_zoo(tmp_path / "zoo").weights("standard")[1]) == 2
    mock = pafs._MockFileSystem()  # in memory, not local: no fsync, rename by move
    m = make_zoo("zoo", filesystem=mock)
    store.commit(m, [synthetic_result("standard", i) for i in range(3)])
    np.testing.assert_array_equal(m.weights("standard")[0][1], synthetic_result("standard", 1).params_final)
    assert store.verify("zoo", filesystem=mock).clean


def test_atomic_write_parquet_for_other_stages(tmp_path):
    z = make_zoo(tmp_path / "zoo")
    path = store.atomic_write_parquet(z, "mli/family=standard/curves.parquet", pa.table({"a": [1.0]}))
    assert path == str(tmp_path / "zoo" / "mli" / "family=standard" / "curves.parquet")
    store.atomic_write_parquet(pafs.LocalFileSystem(), path, pa.table({"a": [2.0]}))
    assert pq.read_table(path)["a"].to_pylist() == [2.0] and os.listdir(Path(path).parent) == ["curves.parquet"]


def test_cli_verify_and_info(tmp_path, capsys):
    from pipelines.cli import main

    z = make_zoo(tmp_path / "zoo")
    store.commit(z, [synthetic_result("standard", i, diverged=(i == 1)) for i in range(3)])
    assert main(["store", "info", z.path]) == 0
    assert "family standard: asym_seed 0, P = 78042, 1 files, 1 diverged, 2 ok" in capsys.readouterr().out
    empty = tmp_path / "zoo" / "members" / "family=standard" / "pack-empty.parquet"
    empty.write_bytes(b"")
    assert main(["store", "verify", z.path, "--dry-run"]) == 1 and empty.exists()
    assert f"bad: {empty}" in capsys.readouterr().out
    assert main(["store", "verify", z.path, "--json"]) == 1 and not empty.exists()
    assert json.loads(capsys.readouterr().out)["moved"][0][0] == str(empty)
    assert main(["store", "verify", z.path]) == 0
    assert main(["store", "info", str(tmp_path / "nowhere")]) == 2


def test_resume_refuses_a_changed_init_and_reads_old_zoos_as_kaiming_normal(tmp_path):
    from zoo.recipe import Recipe

    companion, kaiming = Recipe().to_dict(), Recipe(init="kaiming_normal").to_dict()
    make_zoo(tmp_path / "new", recipe=companion)
    with pytest.raises(store.ManifestMismatch, match="recipe.init: 'companion' in the zoo, 'kaiming_normal' now"):
        make_zoo(tmp_path / "new", recipe=kaiming)
    old = {k: v for k, v in kaiming.items() if k != "init"}  # a zoo made before the field existed
    make_zoo(tmp_path / "old", recipe=old)
    make_zoo(tmp_path / "old", recipe=kaiming)  # resumes: it was made with kaiming-normal init
    with pytest.raises(store.ManifestMismatch, match="recipe.init: 'kaiming_normal' in the zoo, 'companion' now"):
        make_zoo(tmp_path / "old", recipe=companion)


def test_manifest_records_the_family_options(tmp_path):
    make_zoo(tmp_path / "zoo", families=("standard", "w_asym"))
    families = store.open_zoo(tmp_path / "zoo").manifest["families"]
    assert families["w_asym"]["options"] == {"n_fix": 8, "kappa": 2.0} and families["standard"]["options"] == {}


def test_equal_settings_write_equal_records(tmp_path):
    """What differs from host to host (the data copy's name and path) is kept in the writer record;
    the merged manifest still holds the first writer's."""
    here = {"sha256": SHA, "name": "synthetic", "official": False, "path": "/here"}
    there = {"sha256": SHA, "name": "synthetic copy", "official": False, "path": "/there"}
    assert make_zoo(tmp_path / "a", families=("standard", "w_asym"), data=here).manifest["data"] == here
    make_zoo(tmp_path / "b", families=("standard", "w_asym"), data=there)
    for rel in ("manifest.json", "manifest.d/family=standard.json", "manifest.d/family=w_asym.json"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["data"] == {"sha256": SHA}
    make_zoo(tmp_path / "a", data=there)  # another copy of the same pixels resumes
    assert store.open_zoo(tmp_path / "a").manifest["data"] == here


def test_records_that_differ_in_any_field_are_refused(tmp_path):
    """recipe_overrides, the claim and a family's options follow from the code, not the settings,
    yet a record is one set of bytes: a writer whose record differs anywhere is refused."""
    from zoo.store import manifest

    path = tmp_path / "zoo"
    fs, root = store_fs.resolve(path)
    settings = dict(zoo_seed=0, recipe={"epochs": None, "batch_size": 512}, recipe_overrides={},
                    data={"sha256": SHA, "name": "synthetic"})
    proposal = path / "manifest.d" / "proposed" / "manifest" / "other.json"
    proposal.parent.mkdir(parents=True)
    record = manifest._zoo_record(manifest.build_manifest(families={"standard": 0}, **settings))
    proposal.write_text(json.dumps(dict(record, claim="another claim")))
    with pytest.raises(store.ManifestMismatch, match="claim: 'another claim' in the other writer's"):
        make_zoo(path)
    proposal.unlink()
    found = manifest.load_manifest(fs, root)
    make_zoo(path)
    late = manifest.build_manifest(families={"standard": 0}, **{**settings, "recipe_overrides": {"epochs": 2}})
    with pytest.raises(store.ManifestMismatch, match="recipe_overrides.epochs: '<absent>' in the zoo, 2 now"):
        manifest.settle(fs, root, late, found)
    found = manifest.load_manifest(fs, root)
    make_zoo(path, families=("w_asym",))
    late = manifest.build_manifest(families={"w_asym": 0}, **settings)
    late["families"]["w_asym"]["options"]["kappa"] = 3.0
    with pytest.raises(store.ManifestMismatch, match="families.w_asym.options.kappa: 2.0 in the zoo, 3.0 now"):
        manifest.settle(fs, root, late, found)


def test_a_refused_writer_writes_no_record(tmp_path):
    """A killed writer's proposal for w_asym (another asym seed) refuses a writer creating the zoo
    with w_asym after its other records checked out; none of them is written."""
    from zoo.store import manifest

    path = tmp_path / "zoo"
    entry = manifest.build_manifest(families={"w_asym": 1}, zoo_seed=0, recipe={}, recipe_overrides={},
                                    data={"sha256": SHA})["families"]["w_asym"]
    killed = path / "manifest.d" / "proposed" / "family=w_asym" / "killed.json"
    killed.parent.mkdir(parents=True)
    killed.write_text(json.dumps(entry))
    with pytest.raises(store.ManifestMismatch, match="w_asym.asym_seed: 1 in the other writer's, 0 now") as err:
        make_zoo(path, families=("standard", "w_asym"))
    assert err.value.rival == str(killed)
    assert [p for p in path.rglob("*") if p.is_file()] == [killed]


def test_a_zoo_whose_creator_was_not_recorded_opens_and_resumes(tmp_path, capsys):
    from pipelines.cli import main

    path = tmp_path / "zoo"
    make_zoo(path)
    for record in (path / "manifest.d").glob("writer-*.json"):
        record.unlink()  # as if its creator was killed before recording itself
    m = store.open_zoo(path).manifest
    assert "code_version" not in m and "created_utc" not in m and m["data"] == {"sha256": SHA}
    assert main(["store", "info", str(path)]) == 0 and "created_utc: None" in capsys.readouterr().out
    m = make_zoo(path).manifest
    assert m["code_version"]["symzoo"] and m["created_utc"] and m["data"] == {"sha256": SHA, "name": "synthetic"}


def test_verify_deletes_stale_manifest_proposals_and_temps(tmp_path):
    """Proposals and temp files of killed writers, once stale; fresh ones may be a writer's at work."""
    path = tmp_path / "zoo"
    make_zoo(path)
    proposed = path / "manifest.d" / "proposed" / "family=w_asym"
    proposed.mkdir(parents=True)
    stale = [proposed / "killed.json", path / "manifest.d" / ".family=w_asym.json.host.1.1.tmp",
             path / ".manifest.json.host.1.1.tmp"]
    fresh = [proposed / "live.json", path / "manifest.d" / ".writer-x.json.host.2.2.tmp"]
    for f in stale + fresh:
        f.write_text(json.dumps({"asym_seed": 1}))
    for f in stale:
        os.utime(f, (time.time() - 7200, time.time() - 7200))
    report = store.verify(path, move=False)
    assert sorted(report.stale_temps) == sorted(map(str, stale[1:])) and report.stale_proposals == [str(stale[0])]
    assert report.clean and "1 stale manifest proposals" in report.summary() and all(f.exists() for f in stale)
    store.verify(path)
    assert not any(f.exists() for f in stale) and all(f.exists() for f in fresh)
    assert not store.verify(path).stale_proposals
