"""The cluster launch configs (cluster/configs/) can't be launched in CI, but the symzoo commands
they run can be checked: each one parses with the CLI of this checkout, names a preset that loads,
and builds a valid SweepConfig. The Ray release they pin is one release across the files."""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from pipelines.cli import COMMAND_MODULES, parser
from pipelines.generate_cmd import sweep_config
from pipelines.presets import load_preset

CONFIGS = Path(__file__).resolve().parents[1] / "cluster" / "configs"
SHELL_VARS = {'"$PRESET"': "paper", '"$ZOO"': "/shared/zoos/paper",
              '"$SYMZOO_DATA"': "/shared/cifar10", '"$head_ip:$port"': "10.0.0.1:6379"}


def symzoo_commands(text: str) -> list[list[str]]:
    """Every `symzoo SUBCOMMAND ...` invocation in a config (comments included: they show the
    submit commands), line continuations joined, shell variables given example values."""
    text = re.sub(r"\\\n[#\s]*", " ", text)
    subcommands = "|".join(re.escape(c.rpartition(".")[2].removesuffix("_cmd")) for c in COMMAND_MODULES)
    found = []
    for m in re.finditer(rf"\bsymzoo\s+((?:{subcommands})(?=\s)[^\n'&;]*)", text):
        found.append([SHELL_VARS.get(w, w) for w in shlex.split(m.group(1), posix=False)])
    return [[w.strip('"') for w in argv] for argv in found]


def _all_commands():
    for path in sorted(CONFIGS.iterdir()):
        for i, argv in enumerate(symzoo_commands(path.read_text())):
            yield pytest.param(path.name, argv, id=f"{path.name}-{i}")


def test_every_config_runs_symzoo():
    names = {p.name for p in CONFIGS.iterdir()}
    assert names == {"aws-gpu.yaml", "kuberay-rayjob.yaml", "slurm.sbatch"}, names
    for path in CONFIGS.iterdir():
        commands = symzoo_commands(path.read_text())
        assert any(argv[0] == "generate" for argv in commands), (path.name, commands)


@pytest.mark.parametrize("config, argv", list(_all_commands()))
def test_config_command_is_valid(config, argv):
    args = parser().parse_args(argv)
    if args.command == "generate":
        preset = load_preset(args.preset)
        cfg = sweep_config(preset, zoo=args.zoo, members=args.members, families=None, data=args.data,
                           download=args.download, address=args.address, new_zoo=args.new_zoo)
        # a RayJob's entrypoint finds its cluster through the $RAY_ADDRESS KubeRay sets
        assert cfg.address or config == "kuberay-rayjob.yaml", f"{config}: names no Ray cluster"
    else:
        assert args.command == "data", argv


def test_yaml_configs_parse_and_pin_one_ray_release():
    versions = set()
    for path in CONFIGS.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        versions |= set(re.findall(r"rayproject/ray:(\d+\.\d+\.\d+)", path.read_text()))
        if doc.get("kind") == "RayJob":
            versions.add(doc["spec"]["rayClusterSpec"]["rayVersion"])
    assert len(versions) == 1, versions


def test_slurm_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(CONFIGS / "slurm.sbatch")], check=True)
