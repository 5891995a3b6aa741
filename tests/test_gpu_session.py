"""benchmarks/gpu_session.sh --dry-run: every step of the GPU session, on the CPU at tiny sizes,
so a device call is never spent on a typo. Checks the files a GPU run brings back and their rows."""
import json
import os
import subprocess
from pathlib import Path

from conftest import REPO

FILES = {"log.txt", "env.json", "conv.jsonl", "norm.jsonl", "profile.txt", "throughput.jsonl", "memory.jsonl",
         "tests.txt"}
STEPS = ("env", "conv", "norm", "profile_eager", "throughput_eager", "memory", "profile_compiled",
         "throughput_compiled", "tests", "risky_n128", "risky_graph")


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_gpu_session_dry_run_runs_every_step(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), BUDGET_S="300")
    env.pop("SYMZOO_DATA", None)  # random images: the dry run checks plumbing, fast
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_session.sh"), "--dry-run"], env=env,
                          capture_output=True, text=True, timeout=400)
    log = (tmp_path / "log.txt").read_text()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for step in STEPS:
        assert f"=== {step} rc=0" in log, (step, log[-3000:])
    assert {p.name for p in tmp_path.iterdir()} == FILES  # the device tool brings back at most 8

    assert json.loads((tmp_path / "env.json").read_text())["torch"]
    conv = rows(tmp_path / "conv.jsonl")
    assert len(conv) == 9 * 3 * 3 and all(r["tflops"] > 0 and r["kernel"] for r in conv)
    assert {r["variant"] for r in conv} == {"grouped_nchw", "grouped_nhwc", "dense_blockdiag"}
    norm = rows(tmp_path / "norm.jsonl")
    assert {r["variant"] for r in norm} >= {"autocast_fp32", "bf16"}
    assert all(0 <= r[f"rel_err_{k}"] < 0.1 for r in norm for k in ("y", "dx", "dw", "db"))
    profile = (tmp_path / "profile.txt").read_text()
    assert "eager (CPU time)" in profile and "compiled (CPU time)" in profile and "conv" in profile
    names = [r["row"] for r in rows(tmp_path / "throughput.jsonl")]
    assert "resident x1 (baseline)" in names and "packed x2 grouped" in names and "packed x2 grouped compiled" in names
    assert "packed x4 grouped compiled" in names  # risky_n128 ran too
    memory = rows(tmp_path / "memory.jsonl")
    assert [r["members"] for r in memory] == [1, 2, 4] and all(r["estimate_gib"] > 0 for r in memory)
    assert "skipped" in (tmp_path / "tests.txt").read_text()  # no CUDA here: test_gpu.py skips
