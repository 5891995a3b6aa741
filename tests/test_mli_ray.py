"""`symzoo mli --executor ray`: each task a Ray task (cluster/mli.py), against the local executor
on test_mli's tiny zoo. One embedded Ray of 2 CPUs on 127.0.0.1 for the module (conftest keeps Ray
on loopback), without GPUs, shut down after it."""
import logging
import re

import numpy as np
import pandas as pd
import pytest

from pipelines import mli
from test_mli import parquet_files, tiny_zoo  # noqa: F401  tiny_zoo is a fixture

SETTINGS = {"alphas": 5, "n_eval": 128}


@pytest.fixture(scope="module")
def ray_cpus():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def executor(ray_cpus):
    """A RayMliExecutor on the module's Ray that records the members of every task it is handed."""
    from cluster.mli import RayMliExecutor

    class Recording(RayMliExecutor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.handed: list[list[str]] = []

        def run(self, tasks, *args):
            self.handed += [list(t.rows.member_id) for t in tasks]
            super().run(tasks, *args)

    return Recording(None, gpus_per_task=0)


def curves_by_member(out) -> pd.DataFrame:
    return mli.read_curves(out).sort_values("member_id").reset_index(drop=True)


def assert_same_curves(out, other) -> None:
    """The curve rows under `out` and `other` are equal, the losses bit for bit (not allclose)."""
    ours, theirs = curves_by_member(out), curves_by_member(other)
    pd.testing.assert_frame_equal(ours.drop(columns=["alphas", "losses"]), theirs.drop(columns=["alphas", "losses"]))
    for a, b in zip(ours.losses, theirs.losses):
        assert (a is None and b is None) or np.array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("eval_data", ["clean", "augmented_per_alpha"])
def test_ray_curves_equal_local_bit_for_bit_from_the_cli(tiny_zoo, cifar_root, tmp_path, ray_cpus, eval_data, capsys):
    from pipelines import cli

    path, _ = tiny_zoo
    local = mli.run(mli.MliConfig(zoo=str(path), out=str(tmp_path / "local"), data=str(cifar_root), workers=1,
                                  device="cpu", eval_data=eval_data, **SETTINGS))
    capsys.readouterr()
    assert cli.main(["mli", "--zoo", str(path), "--out", str(tmp_path / "ray"), "--data", str(cifar_root),
                     "--executor", "ray", "--device", "cpu", "--eval-data", eval_data, "--alphas", "5",
                     "--n-eval", "128"]) == 0
    assert "symzoo mli: [5/5 100.0%]" in capsys.readouterr().err  # the local path's progress lines
    assert (curves_by_member(tmp_path / "ray").status == "ok").sum() == 4
    assert_same_curves(tmp_path / "ray", local)
    assert (tmp_path / "ray" / "table4.csv").read_text() == (local / "table4.csv").read_text()


@pytest.mark.slow
def test_packed_curves_do_not_depend_on_where_tasks_are_cut(tiny_zoo, cifar_root, tmp_path, executor):
    """points > 1 on CPU: local (one task of 2 members per family), Ray (2 slots: tasks of 1 member) and a
    resumed run (member 0 first, member 1 later) pack rows into other tasks, yet give the same curves."""
    path, _ = tiny_zoo
    settings = {"zoo": str(path), "data": str(cifar_root), "device": "cpu", "points": 3, **SETTINGS}
    local = mli.run(mli.MliConfig(out=str(tmp_path / "local"), workers=1, **settings))
    ray_out = mli.run(mli.MliConfig(out=str(tmp_path / "ray"), executor="ray", **settings), executor)
    assert executor.handed and all(len(members) == 1 for members in executor.handed)
    resumed = tmp_path / "resumed"
    mli.run(mli.MliConfig(out=str(resumed), workers=1, members=1, **settings))
    mli.run(mli.MliConfig(out=str(resumed), executor="ray", **settings), executor)
    assert_same_curves(ray_out, local)
    assert_same_curves(resumed, local)


@pytest.mark.slow
def test_rerun_submits_only_the_members_without_curves(tiny_zoo, cifar_root, tmp_path, executor):
    path, _ = tiny_zoo
    cfg = mli.MliConfig(zoo=str(path), out=str(tmp_path), data=str(cifar_root), executor="ray", **SETTINGS)
    mli.run(mli.MliConfig(**{**cfg.__dict__, "members": 1}), executor)
    first = sorted(sum(executor.handed, []))
    stored = parquet_files(tmp_path)
    executor.handed.clear()
    mli.run(cfg, executor)
    rest = sorted(sum(executor.handed, []))
    assert len(first) == 2 and len(rest) == 2 and not set(first) & set(rest)  # member 0, then member 1, per family
    assert all(parquet_files(tmp_path)[p] == t for p, t in stored.items())  # the stored curves are not rewritten
    assert len(mli.read_curves(tmp_path)) == 5  # 4 curves and the diverged member's row
    executor.handed.clear()
    mli.run(cfg, executor)
    assert executor.handed == []


@pytest.mark.slow
def test_a_failing_task_is_one_line_naming_its_members_and_the_others_arrive(tiny_zoo, cifar_root, tmp_path, executor):
    from pipelines.cli import explain
    from zoo.generate import SweepFailed
    from zoo.recipe import Recipe
    from zoo.store import open_zoo

    path, _ = tiny_zoo
    cfg = mli.resolved(mli.MliConfig(zoo=str(path), data=str(cifar_root), executor="ray", **SETTINGS), "cpu")
    z = open_zoo(path)
    x, y, _ = mli.eval_set(z.manifest, cfg)
    _, tasks = mli.pending(z, cfg, tmp_path, slots=2)  # 2 tasks of 1 member per family: 4 tasks
    bad = tasks[1]
    tasks[1] = mli.Task(bad.family, bad.asym_seed, bad.rows, np.pad(bad.theta0, ((0, 0), (0, 1))), bad.theta_t)
    done = []
    with pytest.raises(SweepFailed) as failed:
        executor.run(tasks, x, y, cfg, Recipe.from_dict(z.manifest["recipe"]), lambda t, losses: done.append(t.name))
    code, line = explain(failed.value)
    assert code == 1 and "\n" not in line and "Traceback" not in line
    assert line.startswith(f"1 of 4 MLI tasks failed: {bad.name} (members {bad.rows.member_id[0]}): RuntimeError: "), line
    assert "78043" in line and "rerun the same command" in line  # the worker's own error, one line of it
    assert sorted(done) == sorted(t.name for t in tasks if t is not tasks[1])


@pytest.mark.slow
def test_a_task_whose_worker_died_is_retried_and_logged(tiny_zoo, cifar_root, tmp_path, executor, monkeypatch, capsys):
    import os

    import cluster.mli

    path, _ = tiny_zoo
    marker, real = tmp_path / "died", cluster.mli.evaluate_task

    def dies_once(images, cfg, recipe, task):  # a closure: Ray ships it by value to the workers
        if not marker.exists():
            marker.touch()
            os._exit(17)
        return real(images, cfg, recipe, task)

    monkeypatch.setattr(cluster.mli, "evaluate_task", dies_once)
    out = mli.run(mli.MliConfig(zoo=str(path), out=str(tmp_path / "mli"), data=str(cifar_root), executor="ray",
                                **SETTINGS), executor)
    assert re.search(r"symzoo mli: retry 1/3 of \w+\[\d+\.\.\d+\]x1: WorkerCrashedError", capsys.readouterr().err)
    assert len(mli.read_curves(out)) == 5


def test_executor_settings_are_checked():
    for bad, says in (({"executor": "dask"}, "executor='dask'"), ({"address": "h:1"}, "address='h:1'.*executor local"),
                      ({"executor": "ray", "workers": 2}, "workers=2.*executor ray"),
                      ({"executor": "ray", "device": "cuda:1"}, "device='cuda:1'"),
                      ({"executor": "ray", "gpus_per_task": 1.5}, "gpus_per_task=1.5"),
                      ({"executor": "ray", "gpus_per_task": -1}, "gpus_per_task=-1")):
        with pytest.raises(ValueError, match=says):
            mli.MliConfig(zoo="z", **bad)
    assert mli.MliConfig(zoo="z", executor="ray", address="h:1", gpus_per_task=0.5).gpus_per_task == 0.5


@pytest.mark.slow
def test_cuda_on_a_cluster_without_gpus_is_refused_before_any_write(tiny_zoo, cifar_root, tmp_path, ray_cpus):
    from cluster.mli import RayMliExecutor

    path, _ = tiny_zoo
    executor = RayMliExecutor(None, gpus_per_task=1.0)  # the default share, asked of the module's Ray: no GPU
    with pytest.raises(ValueError, match=r"device='cuda': executor ray has no GPU for its tasks \(the cluster has no GPU\)"):
        mli.run(mli.MliConfig(zoo=str(path), out=str(tmp_path / "mli"), data=str(cifar_root), executor="ray",
                              device="cuda", **SETTINGS), executor)
    assert not (tmp_path / "mli").exists()


def test_gpu_shares_no_node_can_give_are_refused_before_any_write(tmp_path, ray_cpus, monkeypatch):
    import ray

    from cluster.mli import RayMliExecutor

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0, "GPU": 2.0})  # two nodes of one GPU each
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 1.0, "GPU": 1.0}}] * 2)
    cfg = mli.MliConfig(zoo=str(tmp_path / "zoo"), out=str(tmp_path / "mli"), executor="ray", gpus_per_task=2)
    with pytest.raises(ValueError, match=r"gpus_per_task=2: more than the 1 GPU\(s\) of the cluster's largest node"):
        mli.run(cfg, RayMliExecutor(None, gpus_per_task=2))
    assert not (tmp_path / "mli").exists()
    fits = RayMliExecutor(None, gpus_per_task=0.5)
    assert fits.device("auto") == "cuda" and fits.slots(mli.resolved(cfg, "cuda")) == 4


def test_tasks_in_flight_let_an_autoscaler_see_demand_within_an_object_store_budget():
    pytest.importorskip("ray")
    from cluster.mli import WEIGHTS_IN_FLIGHT, in_flight

    def tasks(members: int) -> list:
        weights = np.zeros((members, 78_042), np.float32)  # [n, P] of ResNet-8
        return [mli.Task("standard", 0, pd.DataFrame(), weights, weights)]

    assert in_flight(2, tasks(1)) == 256  # generate's bound: far past 4 x the 2 slots at start
    assert in_flight(2, tasks(16)) == WEIGHTS_IN_FLIGHT // (2 * 16 * 78_042 * 4) == 107  # 10 MB a task
    assert in_flight(100, tasks(16)) == 400  # never below 4 a slot
