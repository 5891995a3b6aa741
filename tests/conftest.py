import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Every Ray the tests start binds to 127.0.0.1 (Ray's loopback-only mode). conftest loads before
# any test module, so this is set before anything imports ray; subprocesses inherit it.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

REPO = Path(__file__).resolve().parents[1]
MATERIALIZE = REPO.parent / "shared" / "data" / "cifar10" / "materialize.py"

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """CIFAR-10 in the standard layout: $SYMZOO_DATA if it holds a copy, else materialized."""
    env = os.environ.get("SYMZOO_DATA")
    if env and (Path(env) / "cifar-10-batches-py" / "test_batch").exists():
        return Path(env)
    if not MATERIALIZE.exists():
        pytest.skip(f"no CIFAR-10: set SYMZOO_DATA or provide {MATERIALIZE}")
    root = tmp_path_factory.mktemp("cifar")
    subprocess.run([sys.executable, str(MATERIALIZE), str(root)], check=True, capture_output=True)
    return root


@pytest.fixture(scope="session")
def cifar(cifar_root):
    from zoo.data import load_cifar10

    return load_cifar10(cifar_root)


def run_python(code: str) -> str:
    """Run `code` in a fresh interpreter (new hash salt, new RNG state) and return its stdout."""
    env = dict(os.environ, PYTHONHASHSEED="random", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env, cwd=REPO)
    return out.stdout.strip()
