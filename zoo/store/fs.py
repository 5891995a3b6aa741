"""Where a zoo lives (a local path or a pyarrow.fs URI) and how files appear in it atomically.

Commit protocol: write under a hidden temporary name, fsync it (local disks only), then rename
it onto the final name, then fsync the directory. Readers only ever see complete files: a crash
before the rename leaves a hidden `.<name>.<host>.<pid>.<ns>.tmp`, which every reader ignores
(leading dot, no .parquet suffix) and `verify` removes once stale. On object stores the rename
is a server-side copy whose result appears whole; there is nothing to fsync.
"""
from __future__ import annotations

import fcntl
import os
import posixpath
import socket
import time
from contextlib import contextmanager

import pyarrow.fs as pafs
import pyarrow.parquet as pq

TEMP_SUFFIX = ".tmp"
LOCK = ".manifest.lock"  # hidden: readers and verify leave it alone


def resolve(path) -> tuple[pafs.FileSystem, str]:
    """A local path or a URI (file://, s3://, gs://, ...) -> (filesystem, path on it)."""
    text = os.fspath(path)
    if "://" in text:
        fs, inner = pafs.FileSystem.from_uri(text)
        return fs, inner.rstrip("/") or "/"
    return pafs.LocalFileSystem(), os.path.abspath(text)


def target(fs_or_root, path: str) -> tuple[pafs.FileSystem, str]:
    """`path` on a FileSystem, or relative to a root: a local path, a URI or a Zoo."""
    if isinstance(fs_or_root, pafs.FileSystem):
        return fs_or_root, path
    if hasattr(fs_or_root, "fs") and hasattr(fs_or_root, "root"):  # a Zoo: keep its filesystem
        return fs_or_root.fs, posixpath.join(fs_or_root.root, path)
    fs, root = resolve(fs_or_root)
    return fs, posixpath.join(root, path)


def is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def is_hidden(rel_path: str) -> bool:
    """Hidden from readers: any part starts with "." (temporaries) or "_" (quarantine), as in
    pyarrow.dataset's default ignore_prefixes."""
    return any(part.startswith((".", "_")) for part in rel_path.split("/"))


def temp_name(name: str) -> str:
    """Unique per writer (host, process, clock), so concurrent writers never share a temp file."""
    return f".{name}.{socket.gethostname()}.{os.getpid()}.{time.time_ns()}{TEMP_SUFFIX}"


def list_files(fs: pafs.FileSystem, folder: str) -> list[pafs.FileInfo]:
    """Every file below `folder` (hidden ones included), in path order; [] if it does not exist."""
    infos = fs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
    return sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)


def visible_parquet(fs: pafs.FileSystem, folder: str) -> list[str]:
    """The .parquet files under `folder` that readers see, in path order."""
    return [i.path for i in list_files(fs, folder)
            if i.path.endswith(".parquet") and not is_hidden(posixpath.relpath(i.path, folder))]


@contextmanager
def manifest_lock(fs: pafs.FileSystem, root: str):
    """Serialise a manifest's read-check-write between processes and threads: an exclusive flock
    on `<root>/.manifest.lock` on a local filesystem (NFS too, where it supports locks). Object
    stores have no lock: two writers adding different families to one zoo there at the same
    instant can still lose one addition, which rerunning that writer's command restores."""
    if not is_local(fs):
        yield
        return
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, LOCK), "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when f closes
        yield


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(fs_or_root, path: str, write) -> str:
    """Make `path` appear whole or not at all; `write(stream)` fills it. Returns the path."""
    fs, path = target(fs_or_root, path)
    parent, name = posixpath.split(path)
    fs.create_dir(parent, recursive=True)
    tmp = posixpath.join(parent, temp_name(name))
    try:
        with fs.open_output_stream(tmp) as stream:
            write(stream)
        if is_local(fs):
            _fsync(tmp)  # the data must be on disk before the rename makes it visible
        fs.move(tmp, path)  # replaces an existing file of that name: a retried commit is harmless
    except BaseException:
        remove_quietly(fs, tmp)
        raise
    if is_local(fs):
        _fsync(parent)  # make the rename itself durable
    return path


def atomic_write_parquet(fs_or_root, path: str, table, **write_options) -> str:
    """Write `table` to `path` (on a FileSystem, or relative to a zoo root) atomically.

    `write_options` go to pyarrow.parquet.write_table. Shared by the members and checkpoints
    commits and by stages that store results next to a zoo (e.g. MLI curves).
    """
    return atomic_write(fs_or_root, path, lambda stream: pq.write_table(table, stream, **write_options))


def atomic_write_bytes(fs_or_root, path: str, data: bytes) -> str:
    return atomic_write(fs_or_root, path, lambda stream: stream.write(data))


def remove_quietly(fs: pafs.FileSystem, path: str) -> None:
    """Best effort: the original error matters more than a leftover hidden temp file."""
    try:
        fs.delete_file(path)
    except OSError:
        pass


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as stream:
        return stream.read()
