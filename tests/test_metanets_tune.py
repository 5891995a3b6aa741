"""`symzoo metanets --executor ray`: each run a Ray Tune trial (cluster/tune.py), against the
in-process path on a tiny synthetic zoo. One embedded Ray of 2 CPUs on 127.0.0.1 for the module
(conftest keeps Ray on loopback), shut down after it."""
import csv
import json
import logging
import shutil

import pytest

from test_metanets import cli, synthetic_store

ARGS = ("--metanets", "mlp,statnn", "--lrs", "1e-3,1e-2", "--runs", 2, "--epochs", 3, "--batch-size", 4)
TRIALS = 8  # 2 metanets x (2 selection + 2 final runs), one family


@pytest.fixture(scope="module")
def ray_cpus():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def both(tmp_path_factory, ray_cpus):
    """(in-process output, Tune output) of the same config on the same zoo."""
    root = tmp_path_factory.mktemp("tune")
    store = synthetic_store(root / "zoo", {"standard": 24})
    for executor in ("local", "ray"):
        assert cli("--zoo", store.path, "--out", root / executor, "--executor", executor, *ARGS) == 0
    return store, root / "local", root / "ray"


def records(out) -> dict[str, dict]:
    """Every run record under `out`, by file name, less its wall time (the one field a rerun changes)."""
    found = {p.name: json.loads(p.read_text()) for p in out.glob("runs/*/*/*.json")}
    for record in found.values():
        record.pop("wall_s")
    return found


def experiments(out) -> list:
    return sorted(p.name for p in (out / "tune").iterdir())


def trials(out, experiment) -> list[str]:
    return sorted(p.name for p in (out / "tune" / experiment).iterdir() if p.is_dir())


@pytest.mark.slow
def test_tune_trials_give_the_in_process_records_and_table(both):
    _, local, tune = both
    assert len(records(local)) == TRIALS and records(tune) == records(local)
    assert (tune / "table3.csv").read_text() == (local / "table3.csv").read_text()
    runs = [json.loads((out / "runs.json").read_text()) for out in (local, tune)]
    for run in runs[0] + runs[1]:
        run.pop("wall_s")
    assert runs[0] == runs[1]
    manifest = json.loads((tune / "manifest.json").read_text())
    assert manifest["runs"] == {"trained": TRIALS, "reused": 0} and manifest["device"] == "runs on cpu"
    assert manifest["config"]["executor"] == "ray"


@pytest.mark.slow
def test_each_trial_logs_its_epochs_beside_its_record(both):
    _, _, tune = both
    waves = experiments(tune)
    assert [w.split("-")[0] for w in waves] == ["final", "select"]
    names = trials(tune, waves[0]) + trials(tune, waves[1])
    assert sorted(names) == sorted(f"standard-{p.parent.name}-{p.stem}" for p in tune.glob("runs/*/*/*.json"))
    for wave in waves:
        for name in trials(tune, wave):
            with open(tune / "tune" / wave / name / "progress.csv") as f:
                rows = list(csv.DictReader(f))
            assert [int(r["epoch"]) for r in rows] == [1, 2, 3], name
            record = json.loads(next(tune.glob(f"runs/standard/*/{name.split('-', 2)[2]}.json")).read_text())
            assert [float(r["val_r2"]) for r in rows] == pytest.approx(record["curves"]["val_r2"])
            assert list((tune / "tune" / wave / name).glob("events.out.tfevents.*")), name  # TensorBoard


@pytest.mark.slow
def test_a_rerun_with_every_record_starts_no_trial(both, tmp_path, capsys):
    store, _, tune = both
    out = tmp_path / "again"
    shutil.copytree(tune, out)
    before = experiments(out)
    assert cli("--zoo", store.path, "--out", out, "--executor", "ray", *ARGS) == 0
    assert experiments(out) == before
    assert json.loads((out / "manifest.json").read_text())["runs"] == {"trained": 0, "reused": TRIALS}
    assert "Configuration for experiment" not in capsys.readouterr().err


@pytest.mark.slow
def test_a_partial_state_reruns_only_the_runs_without_a_record(both, tmp_path):
    store, local, tune = both
    out = tmp_path / "partial"
    shutil.copytree(tune, out)
    lost = [next(out.glob("runs/standard/mlp/final-0-*.json")), next(out.glob("runs/standard/statnn/final-1-*.json"))]
    for path in lost:
        path.unlink()  # one wave's worth, so one Tune experiment (each costs seconds to start)
    before = experiments(out)
    assert cli("--zoo", store.path, "--out", out, "--executor", "ray", *ARGS) == 0
    new = [e for e in experiments(out) if e not in before]
    assert len(new) == 1 and trials(out, new[0]) == sorted(f"standard-{p.parent.name}-{p.stem}" for p in lost)
    assert records(out) == records(local)
    assert json.loads((out / "manifest.json").read_text())["runs"] == {"trained": 2, "reused": TRIALS - 2}
    assert (out / "table3.csv").read_text() == (local / "table3.csv").read_text()


@pytest.mark.slow
def test_a_failed_trial_names_its_run_and_keeps_the_others(both, tmp_path, capsys):
    store, _, tune = both
    out = tmp_path / "failing"
    shutil.copytree(tune, out)
    for path in out.glob("runs/standard/statnn/final-*.json"):
        path.unlink()
    blocker = out / "runs" / "standard" / "statnn"
    shutil.rmtree(blocker)
    blocker.write_text("a file where the run folder goes")  # every statnn run fails to write its record
    assert cli("--zoo", store.path, "--out", out, "--executor", "ray", *ARGS) == 1
    err = capsys.readouterr().err
    assert "metanet runs failed as Tune trials; first: standard/statnn select-0 lr=" in err, err[-2000:]
    assert "FileExistsError" in err or "NotADirectoryError" in err


def test_the_local_executor_is_the_stage_itself():
    from metanets.stage import MetanetConfig
    from pipelines.metanets_cmd import executor_for

    assert executor_for(MetanetConfig(zoo="z")) is None  # cluster.tune, and so Ray, is imported only for ray


@pytest.mark.parametrize("field,value,message", [
    ("executor", "dask", "executor='dask': must be one of local, ray"),
    ("address", "127.0.0.1:6379", "address='127.0.0.1:6379': must be unset with executor local"),
    ("gpus_per_trial", 1.5, "gpus_per_trial=1.5: must be a number in \\[0, 1\\] or a whole number"),
    ("gpus_per_trial", -0.5, "gpus_per_trial=-0.5: must be"),
])
def test_executor_settings_are_checked(field, value, message):
    from metanets.stage import MetanetConfig

    with pytest.raises(ValueError, match=message):
        MetanetConfig(zoo="z", **{field: value})
    assert MetanetConfig(zoo="z", executor="ray", address="auto", gpus_per_trial=2).gpus_per_trial == 2
