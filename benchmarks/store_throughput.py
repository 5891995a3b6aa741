"""Weight-store throughput: Zoo.weights() against np.load of the same bytes, and commit latency.

Builds a synthetic zoo of `--members` members of one family (seeded random weights, committed
in packs of `--pack` through zoo.store.commit, each pack timed) and a raw .npy holding the same
[n, P] float32 final weights, in one folder on one disk. Then, each in a fresh process so that
peak RSS belongs to that read alone, and alternating, it times:
  np.load(raw.npy)                  the baseline
  Zoo.weights(family)               one [n, P] array (threads: --workers, default all cores),
                                    every page checksum verified
  Zoo.iter_weights(batch_size=1024) the streaming reader, checksums verified
  pyarrow, CRC off / on             the params_final column of the family folder as one Arrow
                                    table (pyarrow.dataset, all cores), page checksum verification
                                    off and on: the checksum's cost on plain pyarrow reads
both "warm" (files in the page cache) and "cold" (the files' cached pages dropped with
posix_fadvise(DONTNEED) before each read, so bytes come from the disk, or from the host's cache
in a VM). Issue #13's targets: weights() at >= 0.9x np.load warm and cold; its peak RSS <= 1.2x
the array; iter_weights' peak RSS bounded by its batch (1024 x P x 4 bytes).

    python benchmarks/store_throughput.py                    # 2,000 members, a couple of minutes
    python benchmarks/store_throughput.py --members 10000    # the issue's size: 3.1 GB per array
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import torch

import zoo
from zoo import store
from zoo.records import METRICS, MemberResult
from pipelines.hardware import describe

SHA = "0" * 64  # synthetic data identity
BATCH = 1024  # iter_weights batch size, members
READERS = ("np.load", "weights", "iter_weights", "pyarrow, CRC off", "pyarrow, CRC on")


def disk(folder: Path) -> str:
    """The mount holding `folder`: device, filesystem, and whether the kernel calls it rotational."""
    best = ("?", "?", "")
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype = line.split()[:3]
            if str(folder.resolve()).startswith(mnt) and len(mnt) >= len(best[2]):
                best = (dev, fstype, mnt)
    rot = Path(f"/sys/block/{Path(best[0]).name}/queue/rotational")
    kind = {"1": "rotational", "0": "non-rotational"}.get(rot.read_text().strip(), "?") if rot.exists() else "?"
    return f"{best[0]} ({best[1]}, {kind} per the kernel; a VM's virtual disk may say rotational) at {best[2]}"


def pack_weights(pack: int, size: int, n_params: int) -> np.ndarray:
    """[size, P] float32, addressed by the pack number."""
    rng = np.random.default_rng([7, pack])
    return (rng.standard_normal((size, n_params), dtype=np.float32) * 0.05).astype(np.float32)


def result(family: str, index: int, final: np.ndarray) -> MemberResult:
    return MemberResult(config=zoo.sample_member(0, index, family), status="ok", diverged_epoch=None,
                        metrics={m: 0.5 for m in METRICS}, params_init=-final, params_final=final,
                        wall_time_s=1.0, device="cpu", data_sha=SHA)


def build(folder: Path, family: str, members: int, pack: int) -> list[float]:
    """Write the zoo and the raw .npy; returns each pack's commit seconds."""
    z = store.init_zoo(folder / "zoo", zoo_seed=0, families={family: 0}, recipe={}, recipe_overrides={},
                       data={"sha256": SHA})
    n_params = z.n_params(family)
    raw = np.lib.format.open_memmap(folder / "raw.npy", mode="w+", dtype=np.float32, shape=(members, n_params))
    latencies = []
    for k, start in enumerate(range(0, members, pack)):
        block = pack_weights(k, min(pack, members - start), n_params)
        raw[start : start + len(block)] = block
        t0 = time.perf_counter()
        store.commit(z, [result(family, start + i, block[i]) for i in range(len(block))])
        latencies.append(time.perf_counter() - t0)
    raw.flush()
    del raw
    return latencies


def drop_cache(folder: Path) -> None:
    """Evict the folder's files from the page cache (clean pages only; they were fsynced)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def read_once(kind: str, folder: str, family: str, workers: int | None, prefault: int) -> tuple[float, int, int, float]:
    """In a fresh process: (seconds, RSS before, peak RSS during, checksum) of one read. With
    `prefault` bytes, the process first touches and frees that much memory, so the read finds
    memory the kernel already backs (see `main`'s --prefault)."""
    torch.set_num_threads(1)
    z = store.open_zoo(Path(folder) / "zoo")
    if prefault:
        scratch = np.empty(prefault // 4, np.float32)
        scratch.fill(0)
        del scratch
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS: imports do not count
    before = _status_kb("VmRSS") * 1024
    t0 = time.perf_counter()
    if kind == "np.load":
        total = float(np.load(Path(folder) / "raw.npy")[:, 0].astype(np.float64).sum())
    elif kind == "weights":
        total = float(z.weights(family, workers=workers)[0][:, 0].astype(np.float64).sum())
    elif kind == "iter_weights":
        total = sum(float(w[:, 0].astype(np.float64).sum())
                    for w, _ in z.iter_weights(family, batch_size=BATCH, workers=workers))
    else:
        options = ds.ParquetFragmentScanOptions(page_checksum_verification=kind.endswith("on"))
        column = ds.dataset(z.folder(family), format="parquet").to_table(
            columns=["params_final"], fragment_scan_options=options).column(0)
        total = float(sum(store.params_matrix(c, z.n_params(family))[:, 0].astype(np.float64).sum()
                          for c in column.chunks))
    seconds = time.perf_counter() - t0
    return seconds, before, _status_kb("VmHWM") * 1024, total


def measure(pool_ctx, args, folder: Path, cold: bool, prefault: int = 0) -> dict[str, list[tuple]]:
    runs = {kind: [] for kind in READERS}
    for _ in range(args.repeats):
        for kind in runs:  # alternating, so drift in machine load hits every reader alike
            if cold:
                drop_cache(folder)
            with pool_ctx.Pool(1) as pool:
                runs[kind].append(pool.apply(read_once, (kind, str(folder), args.family, args.workers, prefault)))
    return runs


STEADY_ENV = {  # both readers' allocators keep what they free: glibc (numpy) and mimalloc (pyarrow)
    "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40), "MIMALLOC_PURGE_DELAY": "-1"}


def steady(folder: str, family: str, workers: int | None, repeats: int) -> dict[str, list[float]]:
    """In one process whose allocators keep freed memory (STEADY_ENV, set before it started):
    each reader once to warm up, then alternating; seconds per read. What a long-running process
    that reads again and again pays: no fresh memory to back, so only the reader's own work."""
    torch.set_num_threads(1)
    z = store.open_zoo(Path(folder) / "zoo")
    readers = {"np.load": lambda: np.load(Path(folder) / "raw.npy"),
               "weights": lambda: z.weights(family, workers=workers)[0]}
    times = {kind: [] for kind in readers}
    for i in range(repeats + 1):
        for kind, read in readers.items():
            t0 = time.perf_counter()
            out = read()
            if i:
                times[kind].append(time.perf_counter() - t0)
            del out
    return times


def report(runs: dict, nbytes: int, batch_bytes: int, label: str) -> None:
    """Medians per reader; speed as a ratio to np.load measured in the same run, peak RSS over
    what the read must hold: the array, and for iter_weights one batch (about 2 is its floor: the
    loop's previous batch is still referenced while the generator fills the next)."""
    base = statistics.median(r[0] for r in runs["np.load"])
    checks = {round(r[3], 3) for rs in runs.values() for r in rs}
    print(f"\n{label}: median of {len(runs['np.load'])} reads each; same values read: {len(checks) == 1}")
    print(f"  {'reader':<18}{'seconds':>9}{'GB/s':>8}{'vs np.load':>12}{'peak RSS - before (GB)':>25}"
          f"{'/ array':>9}{'/ batch':>9}")
    for kind, rs in runs.items():
        sec = statistics.median(r[0] for r in rs)
        extra = statistics.median(r[2] - r[1] for r in rs)
        per_batch = f"{extra / batch_bytes:>9.2f}" if kind == "iter_weights" else f"{'':>9}"
        print(f"  {kind:<18}{sec:>9.3f}{nbytes / sec / 1e9:>8.2f}{base / sec:>12.2f}{extra / 1e9:>25.2f}"
              f"{extra / nbytes:>9.2f}{per_batch}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--steady-child":
        folder, family, workers, repeats = sys.argv[2:6]
        print(json.dumps(steady(folder, family, int(workers) or None, int(repeats))))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--members", type=int, default=2000, help="members in the synthetic zoo (issue: 10000)")
    p.add_argument("--pack", type=int, default=64, help="members per commit (one Parquet file)")
    p.add_argument("--family", default="standard", choices=list(zoo.FAMILIES))
    p.add_argument("--repeats", type=int, default=3, help="reads per reader and cache state")
    p.add_argument("--workers", type=int, default=None, help="threads of Zoo.weights (default: all cores)")
    p.add_argument("--dir", default=None, help="parent folder for the zoo and the .npy (default: system temp)")
    p.add_argument("--keep", action="store_true", help="keep the files afterwards")
    p.add_argument("--steady", action="store_true",
                   help="also time np.load against weights() in one long-lived process whose allocators keep "
                        "freed memory (no fresh memory to back: the readers' own work)")
    p.add_argument("--prefault", action="store_true",
                   help="also time warm reads in processes that first touch and free one array's worth of memory: "
                        "in a VM that hands freed memory back to its host, a fresh process's first touch of new "
                        "memory can cost more than the read itself, and how much varies with timing")
    args = p.parse_args()
    if args.members < 1 or args.pack < 1 or args.repeats < 1:
        raise SystemExit("--members, --pack and --repeats must be >= 1")
    folder = Path(tempfile.mkdtemp(prefix="symzoo-store-bench-", dir=args.dir))
    try:
        run(args, folder)
    finally:
        if not args.keep:
            shutil.rmtree(folder)


def run(args, folder: Path) -> None:
    n_params = zoo.layout(zoo.build(args.family)).size
    nbytes = args.members * n_params * 4
    print(f"{describe()}\ndisk: {disk(folder)}")
    print(f"{args.members} {args.family} members x {n_params} params: {nbytes / 1e9:.2f} GB per weight array; "
          f"packs of {args.pack}; Zoo.weights threads: {args.workers or os.cpu_count()}")
    t0 = time.perf_counter()
    latencies = build(folder, args.family, args.members, args.pack)
    parquet = sum(f.stat().st_size for f in (folder / "zoo" / "members").rglob("*.parquet"))
    pack_mb = parquet / len(latencies) / 1e6
    print(f"built in {time.perf_counter() - t0:.1f} s; members files {parquet / 1e9:.2f} GB (init + final), "
          f"raw.npy {(folder / 'raw.npy').stat().st_size / 1e9:.2f} GB")
    print(f"commit latency per pack of {args.pack} ({pack_mb:.0f} MB, fsynced): median "
          f"{statistics.median(latencies):.3f} s, max {max(latencies):.3f} s, "
          f"{pack_mb / statistics.median(latencies):.0f} MB/s")
    ctx = mp.get_context("spawn")
    batch_bytes = min(BATCH, args.members) * n_params * 4
    report(measure(ctx, args, folder, cold=False), nbytes, batch_bytes, "warm page cache")
    report(measure(ctx, args, folder, cold=True), nbytes, batch_bytes, "cold (page cache dropped before each read)")
    if args.steady:
        child = subprocess.run([sys.executable, __file__, "--steady-child", str(folder), args.family,
                                str(args.workers or 0), str(args.repeats)], env={**os.environ, **STEADY_ENV},
                               capture_output=True, text=True, check=True)
        times = json.loads(child.stdout.strip().splitlines()[-1])
        base = statistics.median(times["np.load"])
        print(f"\nsteady state (one process, allocators keep freed memory: {STEADY_ENV}), warm page cache, "
              f"after one warm-up read each, median of {args.repeats}:")
        for kind, ts in times.items():
            sec = statistics.median(ts)
            print(f"  {kind:<18}{sec:>9.3f}{nbytes / sec / 1e9:>8.2f}{base / sec:>12.2f}")
    if args.prefault:
        report(measure(ctx, args, folder, cold=False, prefault=nbytes), nbytes, batch_bytes,
               "warm page cache, memory pre-faulted (each process first touches and frees one array's worth)")


if __name__ == "__main__":
    main()
