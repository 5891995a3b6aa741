"""benchmarks/driver_scale.py's core at a tiny size: planning, RayExecutor.run and _execute's
progress tracking with the training swapped for a function that returns at once. A correctness
test (every job reported once, the progress ends at the planned total), not a timing test."""
import os
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from cluster.executor import in_flight_bound  # noqa: E402
from driver_scale import NO_DEVICE, measure  # noqa: E402


@pytest.mark.parametrize("pack_size, in_flight", [(1, "bound"), (64, "bound"), (1, "all")])
def test_every_job_is_tracked_once_and_progress_ends_at_the_total(pack_size, in_flight):
    r = measure(2000, pack_size, in_flight)
    assert r["finished"]
    assert r["jobs"] == r["distinct_jobs"] >= 2000 // pack_size
    assert (r["tracked"], r["max_times"], r["untracked"], r["foreign"]) == (r["jobs"], 1, 0, 0)
    assert r["progress"] == [2000, 2000]
    assert r["devices"] == [NO_DEVICE]  # the stand-in ran, not run_job
    assert r["bound"] == (r["jobs"] if in_flight == "all" else in_flight_bound(os.cpu_count()))
