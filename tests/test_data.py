import pickle

import numpy as np
import pytest

from zoo.data import DataError, data_label, load_cifar10


def write_layout(root, n=10000, *, broken=None):
    """A synthetic copy in the standard cifar-10-batches-py layout (bytes keys, as the real one)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"labels": rng.integers(0, 10, n).tolist(), b"batch_label": name.encode()}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=2)
    return folder


def test_round_trip_of_the_standard_layout(tmp_path):
    folder = write_layout(tmp_path)
    with open(folder / "data_batch_2", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    d = load_cifar10(tmp_path)
    assert d.train_x.shape == (50000, 3, 32, 32) and d.train_x.dtype == np.uint8
    assert d.test_x.shape == (10000, 3, 32, 32) and d.test_y.shape == (10000,)
    np.testing.assert_array_equal(d.train_x[10000:20000].reshape(10000, 3072), raw[b"data"])
    assert d.train_y[10000:20000].tolist() == raw[b"labels"]
    assert d.identity["official"] is False and len(d.identity["sha256"]) == 16
    assert load_cifar10(folder).identity == d.identity  # the folder itself is accepted too


def test_reads_from_environment_variable(tmp_path, monkeypatch):
    write_layout(tmp_path)
    monkeypatch.setenv("SYMZOO_DATA", str(tmp_path))
    assert load_cifar10().train_x.shape[0] == 50000


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"missing.*materialize.py"):
        load_cifar10(tmp_path)


def test_truncated_file_is_rejected(tmp_path):
    folder = write_layout(tmp_path)
    blob = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"unreadable.*data_batch_3.*SYMZOO_DATA"):
        load_cifar10(tmp_path)


def test_wrong_shape_is_rejected(tmp_path):
    folder = write_layout(tmp_path)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((10, 100), np.uint8), b"labels": [0] * 10}, f)
    with pytest.raises(DataError, match=r"test_batch.*uint8\[10, 100\]"):
        load_cifar10(tmp_path)


def test_wrong_count_is_rejected(tmp_path):
    write_layout(tmp_path, n=100)
    with pytest.raises(DataError, match="500 train"):
        load_cifar10(tmp_path)


def test_subset_is_seeded_and_random(tmp_path):
    write_layout(tmp_path)
    d = load_cifar10(tmp_path)
    a, b = d.subset(1000, 500, seed=1), d.subset(1000, 500, seed=1)
    np.testing.assert_array_equal(a.train_x, b.train_x)
    assert a.identity["subset"] == {"n_train": 1000, "n_test": 500, "seed": 1}
    assert not np.array_equal(a.test_y, d.test_y[:500])
    with pytest.raises(ValueError, match="n_train=0"):
        d.subset(0, 10)


def test_the_offline_copy_is_recognised(cifar):
    assert cifar.identity["official"] is False
    assert "JPEG-q75" in cifar.identity["name"]
    assert np.bincount(cifar.test_y).tolist() == [1000] * 10


def test_figures_name_the_data_copy(cifar):
    label = data_label(cifar.subset(2000, 1000).identity)
    assert "JPEG-q75" in label and cifar.identity["sha256"] in label and "2000 train / 1000 test images (seed 0)" in label
    assert all(len(line) <= 50 for line in data_label(cifar.identity, width=50).splitlines())
    assert data_label(None) == "data: unrecorded CIFAR-10 copy"
