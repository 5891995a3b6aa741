"""Where a zoo lives (a local path or a pyarrow.fs URI) and how files appear in it atomically.

Commit protocol: write under a hidden temporary name, fsync it (local disks only), then rename
it onto the final name, then fsync the directory. Readers only ever see complete files: a crash
before the rename leaves a hidden `.<name>.<host>.<pid>.<ns>.tmp`, which every reader ignores
(leading dot, no .parquet suffix) and `verify` removes once stale. On object stores the rename
is a server-side copy whose result appears whole; there is nothing to fsync.
"""
from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import re
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pyarrow.fs as pafs
import pyarrow.parquet as pq

TEMP_SUFFIX = ".tmp"


def resolve(path) -> tuple[pafs.FileSystem, str]:
    """A local path or a URI (file://, s3://, gs://, ...) -> (filesystem, path on it)."""
    text = os.fspath(path)
    if "://" in text:
        fs, inner = pafs.FileSystem.from_uri(with_s3_defaults(text))
        return fs, inner.rstrip("/") or "/"
    return pafs.LocalFileSystem(), os.path.abspath(text)


def with_s3_defaults(uri: str) -> str:
    """An s3:// URI with symzoo's S3 options added where the URI does not set them itself.

    allow_delayed_open: a file smaller than one upload part (the manifest, a small pack) is one
    PutObject instead of three multipart requests, and a writer killed mid-file leaves no
    incomplete multipart upload behind for it. endpoint_override from $AWS_ENDPOINT_URL_S3: the
    AWS SDK inside pyarrow reads $AWS_ENDPOINT_URL but not the S3-specific variable that boto3
    and the AWS CLI honour first, so without this the two would write to different servers.
    """
    parts = urlsplit(uri)
    if parts.scheme != "s3":
        return uri
    defaults = {"allow_delayed_open": "true"}
    if os.environ.get("AWS_ENDPOINT_URL_S3"):
        defaults["endpoint_override"] = os.environ["AWS_ENDPOINT_URL_S3"]
    return parts._replace(query=urlencode({**defaults, **dict(parse_qsl(parts.query))})).geturl()


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
        _write_stream(fs, tmp, write)
        if is_local(fs):
            _fsync(tmp)  # the data must be on disk before the rename makes it visible
        fs.move(tmp, path)  # replaces an existing file of that name: a retried commit is harmless
    except BaseException:
        remove_quietly(fs, tmp)
        raise
    if is_local(fs):
        _fsync(parent)  # make the rename itself durable
    return path


# pyarrow's CompleteMultipartUpload error when the server's 200 OK body was no
# <CompleteMultipartUploadResult>: pyarrow then takes it for an embedded error, retries ~25 s and
# reports no error code or message at all.
_UNRECOGNISED_COMPLETION = re.compile(r"CompleteMultipartUpload operation:\s*$")


def _write_stream(fs: pafs.FileSystem, path: str, write) -> None:
    try:
        with fs.open_output_stream(path) as stream:
            write(stream)
    except OSError as e:
        if not _UNRECOGNISED_COMPLETION.search(str(e)):
            raise
        raise OSError(f"{e}[the S3 server acknowledged the upload with a reply that is not S3's "
                      "CompleteMultipartUploadResult; moto before 5.2.5 does that (getmoto/moto#10055): "
                      "upgrade the server]") from e


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


_VANISHED = re.compile(r"AWS Error (RESOURCE_NOT_FOUND|NO_SUCH_KEY) during GetObject")


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    """The file's bytes; FileNotFoundError also for a file deleted while it is opened, which on S3
    pyarrow reports as an OSError (its HEAD found the object, its GET did not)."""
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError:
        raise
    except OSError as e:
        if _VANISHED.search(str(e)):
            raise FileNotFoundError(errno.ENOENT, f"deleted while read ({e})", path) from e
        raise


@contextmanager
def local_folder(uri):
    """A local folder that stands in for `uri`, for stages that write their outputs with local-file
    APIs (JSON records, CSV, PNG). A local path is itself. For an object store the stand-in is a
    cache folder of this machine, one per URI: the URI's files are downloaded into it first, so a
    rerun resumes from what any earlier run uploaded, and what the stage changed is uploaded
    afterwards, after an error too. A killed process uploads nothing, but its files stay in the
    cache and go up with the next run's from this machine."""
    fs, root = resolve(uri)
    if is_local(fs):
        yield Path(root)
        return
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "symzoo", "outputs",
                 hashlib.sha256(os.fspath(uri).encode()).hexdigest()[:16])
    before = _download(fs, root, cache)
    try:
        yield cache
    finally:
        n = _upload(cache, before, fs, root)
        print(f"symzoo: {n} changed files of {cache} uploaded to {uri}", file=sys.stderr)


def _state(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def _download(fs: pafs.FileSystem, root: str, cache: Path) -> dict[str, tuple[int, int]]:
    """Every visible file under `root` into `cache`; returns the cache's state afterwards."""
    for info in list_files(fs, root):
        rel = posixpath.relpath(info.path, root)
        if not is_hidden(rel):
            atomic_write_bytes(str(cache), rel, read_bytes(fs, info.path))
    return _state(cache)


def _upload(cache: Path, before: dict, fs: pafs.FileSystem, root: str) -> int:
    """The files of `cache` that are new or changed since `before`, each atomically; their count."""
    changed = [rel for rel, state in _state(cache).items() if before.get(rel) != state and not is_hidden(rel)]
    for rel in changed:
        atomic_write_bytes(fs, posixpath.join(root, rel), (cache / rel).read_bytes())
    return len(changed)
