"""The weight store: round trips on tmp_path, the commit protocol under failure, verify, and
plain pyarrow / DuckDB readers. Results are synthetic (no training)."""
import errno
import json
import os
import subprocess
import sys
import time
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
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


def test_schema_is_the_contract():
    schema = store.members_schema(n_params("w_asym"))
    assert schema.names == CONTRACT_COLUMNS
    assert schema.field("params_final").type == pa.list_(pa.float32(), 60634)
    assert schema.field("diverged_epoch").nullable and not schema.field("test_acc").nullable
    assert schema.metadata[b"symzoo.schema_version"] == str(store.SCHEMA_VERSION).encode()
    assert store.checkpoints_schema(5).names[:3] == ["member_id", "epoch", "params"]


def test_commit_and_read_round_trip(tmp_path):
    z = make_zoo(tmp_path / "zoo", families=("standard", "w_asym"))
    results = [synthetic_result("standard", i, diverged=(i == 4), checkpoints=(0, 2)) for i in range(7)]
    store.commit(z, results[0::2])  # even and odd indices in different files: the reader reorders
    store.commit(str(tmp_path / "zoo"), results[1::2])
    store.commit(z, [synthetic_result("w_asym", i) for i in range(3)])
    ok = [r for r in results if r.status == "ok"]

    df = z.members(family="standard")
    assert df.columns.tolist() == CONTRACT_COLUMNS[:-2] and df["index"].tolist() == list(range(7))
    assert df["member_id"].tolist() == [r.config.member_id for r in results]
    assert df["lr"].tolist() == [r.config.lr for r in results]
    assert df["test_acc"].iloc[1] == results[1].metrics["test_acc"] and np.isnan(df["test_acc"].iloc[4])
    assert df["diverged_epoch"].iloc[4] == 3 and df["diverged_epoch"].isna().sum() == 6
    assert (df["epochs_trained"] == df["epochs"]).all()  # no recipe override: the sampled epochs
    assert len(z.members()) == 10 and len(z.members(where="family == 'w_asym' and index > 0")) == 2

    w, ids = z.weights("standard")
    assert w.dtype == np.float32 and w.shape == (6, 78042)
    assert list(ids) == [r.config.member_id for r in ok]
    np.testing.assert_array_equal(w, np.stack([r.params_final for r in ok]))
    w_all, _ = z.weights("standard", which="init", status=None, workers=1)
    np.testing.assert_array_equal(w_all, np.stack([r.params_init for r in results]))
    assert z.weights("standard", status="diverged")[1].tolist() == [results[4].config.member_id]
    assert z.weights("w_asym")[0].shape == (3, 60634)

    batches = list(z.iter_weights("standard", which="init", status=None, batch_size=3))
    assert [len(b) for b, _ in batches] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([b for b, _ in batches]), w_all)

    data = z.torch_dataset("standard", target="test_acc")
    x, y = data[2]
    assert len(data) == 6 and x.shape == (78042,) and float(y) == pytest.approx(ok[2].metrics["test_acc"])

    ck = z.checkpoints("standard")
    assert len(ck) == 14 and ck.groupby("member_id")["epoch"].apply(list).map(lambda e: e == [0, 2]).all()
    row = ck[(ck["member_id"] == results[1].config.member_id) & (ck["epoch"] == 2)].iloc[0]
    np.testing.assert_array_equal(row["params"], results[1].checkpoints[2][0])
    assert z.layout("standard") == zoo.layout(zoo.build("standard")).to_json()


def test_direct_page_reader_matches_pyarrow_and_falls_back(tmp_path, monkeypatch):
    monkeypatch.setattr(store.writer, "ROW_GROUP_ROWS", 3)  # several row groups and pages per file
    z = make_zoo(tmp_path / "zoo")
    results = [synthetic_result("standard", i) for i in range(10)]
    path = store.commit(z, results[:8])
    with pafs.LocalFileSystem().open_input_file(path) as source:
        pf = pq.ParquetFile(source)
        assert pf.num_row_groups == 3
        for g in range(3):
            expected = pf.read_row_group(g, columns=["params_init"])["params_init"].combine_chunks()
            out = np.empty(len(expected) * 78042, np.float32)
            assert store.pages.copy_plain_floats(source, pf.metadata.row_group(g).column(21), out)
            np.testing.assert_array_equal(out, expected.flatten().to_numpy())
    other = store.writer.members_table(results[8:], z.schema("standard"), {r.config.member_id: 1 for r in results})
    foreign_layout = store.atomic_write_parquet(z, "members/family=standard/pack-other-tool.parquet", other)
    with pafs.LocalFileSystem().open_input_file(foreign_layout) as source:  # snappy, v1 pages
        meta = pq.ParquetFile(source).metadata.row_group(0).column(22)
        assert not store.pages.copy_plain_floats(source, meta, np.empty(2 * 78042, np.float32))
    used = []
    real = store.pages.copy_plain_floats
    monkeypatch.setattr(store.pages, "copy_plain_floats", lambda *a: used.append(real(*a)) or used[-1])
    w, _ = z.weights("standard", which="init")
    np.testing.assert_array_equal(w, np.stack([r.params_init for r in results]))
    assert used.count(True) == 3 and used.count(False) == 1
    streamed = list(z.iter_weights("standard", which="init", batch_size=4, workers=2))
    assert [len(b) for b, _ in streamed] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b for b, _ in streamed]), w)


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
    assert everything == ["zoo/.manifest.lock", "zoo/manifest.json",
                          f"zoo/members/family=standard/{Path(path).name}"]  # no temp left
    assert Path(path).read_bytes() == before  # the failed retry did not touch the committed file
    assert z.members()["index"].tolist() == [0, 1] and len(z.checkpoints("standard")) == 0


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


def test_plain_pyarrow_and_duckdb_read_the_zoo(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    z = make_zoo(tmp_path / "zoo", families=("standard", "w_asym"))
    store.commit(z, [synthetic_result("standard", i) for i in range(4)])
    store.commit(z, [synthetic_result("w_asym", i) for i in range(3)])
    quarantined = tmp_path / "zoo" / "_quarantine" / "members" / "family=standard" / "pack-x.parquet"
    quarantined.parent.mkdir(parents=True)
    quarantined.write_bytes(b"junk")  # what verify leaves behind
    (tmp_path / "zoo" / "members" / "family=standard" / ".pack-y.parquet.h.1.1.tmp").write_bytes(b"junk")

    dataset = ds.dataset(tmp_path / "zoo" / "members" / "family=standard", format="parquet")
    assert len(dataset.files) == 1  # the temp file is ignored
    table = dataset.to_table()
    w, ids = z.weights("standard")
    order = np.argsort(table["index"].to_numpy())
    np.testing.assert_array_equal(table["params_final"].combine_chunks().flatten().to_numpy().reshape(-1, 78042)[order], w)

    glob = f"{tmp_path}/zoo/members/**/*.parquet"  # neither _quarantine/ nor temps match
    counts = duckdb.sql(f"SELECT family, count(*) FROM read_parquet('{glob}', hive_partitioning=true) "
                        "GROUP BY family ORDER BY family").fetchall()
    assert counts == [("standard", 4), ("w_asym", 3)]
    first = duckdb.sql(f"SELECT params_final[1], test_acc FROM read_parquet('{glob}') "
                       f"WHERE member_id = '{ids[2]}'").fetchall()
    assert first == [(pytest.approx(float(w[2, 0])), z.members()["test_acc"].iloc[2])]


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

    manifest = path / "manifest.json"
    other = json.loads(manifest.read_text())
    other["families"]["w_asym"]["fixed_sha256"] = "0" * 64  # as if made where numpy drew other masks
    manifest.write_text(json.dumps(other))
    before = manifest.read_bytes()
    with pytest.raises(store.ManifestMismatch, match="families.w_asym.fixed_sha256: '0000"):
        make_zoo(path, families=("w_asym",))
    assert manifest.read_bytes() == before
    with pytest.raises(ValueError, match="family='w_asym': this code builds fixed pieces"):
        store.open_zoo(path).network("w_asym")
    store.open_zoo(path).network("sigma_asym")

    del other["families"]["w_asym"]["fixed_sha256"]  # a zoo made before the digest was recorded
    manifest.write_text(json.dumps(other))
    make_zoo(path, families=("w_asym",))
    store.open_zoo(path).network("w_asym")


def test_writers_adding_families_at_once_lose_none(tmp_path, monkeypatch):
    """Each writer reads the manifest, then (slowly) writes it back with its family added: without
    the manifest lock the last write would drop the other families."""
    import threading

    from zoo.store import writer

    slow_load = writer.load_manifest

    def load_then_wait(fs, root):
        manifest = slow_load(fs, root)
        time.sleep(0.3)
        return manifest

    monkeypatch.setattr(writer, "load_manifest", load_then_wait)
    path = tmp_path / "zoo"
    threads = [threading.Thread(target=make_zoo, args=(path, (f,))) for f in zoo.FAMILIES]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(store.open_zoo(path).manifest["families"]) == sorted(zoo.FAMILIES)
    report = store.verify(path)
    assert report.clean and not report.stale_temps and (path / store_fs.LOCK).exists()


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
    with pytest.raises(store.ManifestMismatch, match="schema_version: 99 in the zoo, 1 now"):
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
