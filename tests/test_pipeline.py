"""`symzoo run` end to end on the smoke preset, its resume, and preset validation."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO
from fingerprint import study_fingerprint
from pipelines.presets import load_preset


# The smoke study's results as the code before the layout redesign (issue 8) made them, on the
# JPEG-q75 CIFAR-10 copy: a change to any weight, metric, Table 3 or Table 4 value fails here.
SMOKE_FINGERPRINT = {"zoo": {"sigma_asym": "0921502213eb2846", "standard": "5e6bb6d0bf2f926b",
                             "w_asym": "480e50e440a1cb7b"}, "table3": "170d9fbf02ae073f", "table4": "6a75c25535818c6c"}


def symzoo_run(out, cifar_root):
    env = dict(os.environ, PYTHONPATH=str(REPO), SYMZOO_DATA=str(cifar_root))
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--preset", "smoke", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_run_smoke_end_to_end_then_resume(tmp_path, cifar_root):
    out = tmp_path / "study"
    first = symzoo_run(out, cifar_root)
    assert first.returncode == 0, first.stderr[-3000:]
    report = (out / "report.md").read_text()
    for heading in ("## Zoo", "## Table 3", "## Table 4", "## Wall time per stage"):
        assert heading in report
    assert "JPEG-q75" in report and '"epochs": 1' in report  # data copy and recipe overrides named
    assert "0.976" in report and "26.3%" in report  # the paper's StatNN R^2 and % monotonic, labelled
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", report):
        assert (out / image).stat().st_size > 1000, image
    assert re.search(r"\| standard \| 8 \| 8 \| 8 \| 0 \|", report)  # planned, committed, ok, diverged
    assert study_fingerprint(out) == SMOKE_FINGERPRINT

    second = symzoo_run(out, cifar_root)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "24 already committed, 0 to train" in second.stderr
    runs = json.loads((out / "pipeline.json").read_text())["invocations"]
    assert len(runs) == 2 and set(runs[1]["stages"]) == {"generate", "metanets", "mli"}
    manifest = json.loads((out / "metanets" / "manifest.json").read_text())
    assert manifest["runs"]["trained"] == 0 and manifest["runs"]["reused"] > 0, manifest["runs"]


def test_presets_load_and_refuse_unknown_keys(tmp_path):
    for name in ("smoke", "demo", "cpu", "gpu", "paper"):
        assert set(load_preset(name).families) >= {"standard", "w_asym"}
    bad = tmp_path / "bad.yaml"
    cases = [
        ("description: x\nmembrs: 3\n", r"unknown key\(s\) \['membrs'\]"),
        ("description: x\ngenerate: {members: 2}\nmli: {alpha: 3}\n", r"mli: unknown key\(s\) \['alpha'\]"),
        ("description: x\ngenerate: {members: 2, recipe: {epochs: 0}}\n", "epochs=0"),
        ("description: x\ngenerate: {members: 2, families: standard}\n", "families='standard'|family='s'"),
        ("description: x\ngenerate: {members: true}\n", "members=True"),
        ("description: x\ngenerate: {members: 2, max_retries: -1}\n", "max_retries=-1"),
        ("description: x\ngenerate: {members: 2}\nmetanets: {lrs: [0]}\n", "lrs="),
        ("description: x\ngenerate: {members: 2, zoo: /tmp/z}\n", "set on the command line"),
        ("generate: {members: 2}\n", "description missing"),
        ("description: x\ngenerate: {}\n", "generate:.*members"),
        ("description: x\ngenerate: [1, 2\n", "not valid YAML"),
    ]
    for text, message in cases:
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_preset(str(bad))
    with pytest.raises(ValueError, match="preset='nope'"):
        load_preset("nope")


def test_installed_wheel_carries_the_presets(tmp_path):
    """The cluster configs `pip install` symzoo and run `--preset paper`: the wheel must hold them."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"  # the tracked files only, as a clone would have them
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-c", "--null", "-T", "-", "-f", str(tmp_path / "src.tar")], cwd=REPO, input=files, check=True)
    src.mkdir()
    subprocess.run(["tar", "-x", "-f", str(tmp_path / "src.tar"), "-C", str(src)], check=True)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True)
    wheel, = (tmp_path / "dist").glob("symzoo-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)], check=True,
                   capture_output=True)
    probe = ("import pipelines.presets as p; print(p.CONFIGS); "
             "print(*p.available()); print(p.load_preset('paper').members)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(tmp_path / "site")}).stdout.split("\n")
    assert out[0].startswith(str(tmp_path / "site")), out
    assert out[1].split() == ["cpu", "demo", "gpu", "paper", "smoke"] and out[2] == "10000", out


def test_run_passes_overrides_through(tmp_path, capsys, cifar_root, monkeypatch):
    from pipelines.cli import main

    monkeypatch.setenv("SYMZOO_DATA", str(cifar_root))
    assert main(["run", "--preset", "smoke", "--out", str(tmp_path / "o"), "--members", "0"]) == 2
    assert "members=0" in capsys.readouterr().err
    zoo = tmp_path / "o" / "zoo"
    (zoo / "members" / "family=standard").mkdir(parents=True)
    (zoo / "members" / "family=standard" / "pack-x.parquet").write_bytes(b"PAR1")
    assert main(["run", "--preset", "smoke", "--out", str(tmp_path / "o"), "--new-zoo"]) == 2
    assert "refusing to start a new zoo" in capsys.readouterr().err


def test_run_address_reaches_the_stages_that_run_on_ray(tmp_path):
    """`symzoo run --address A`: a stage whose preset section says `executor: ray` gets A unless it
    names an address itself; a local stage gets none (it would refuse one)."""
    from pipelines.run import RunConfig, on_cluster

    path = tmp_path / "p.yaml"
    path.write_text("description: t\ngenerate: {members: 2}\nmetanets: {executor: ray}\n"
                    "mli: {executor: ray, address: 'head:6379'}\n")
    p = load_preset(str(path))
    for address, metanets, mli in ((None, {}, {}), ("10.0.0.1:6379", {"address": "10.0.0.1:6379"}, {})):
        cfg = RunConfig(preset=p, out="o", generate=p.config("generate", zoo="z", executor="ray", address=address))
        assert (on_cluster(cfg, "metanets"), on_cluster(cfg, "mli")) == (metanets, mli)
    local = load_preset("demo")
    cfg = RunConfig(preset=local, out="o", generate=local.config("generate", zoo="z", executor="ray", address="h:1"))
    assert on_cluster(cfg, "metanets") == on_cluster(cfg, "mli") == {}
