"""The cluster launch configs (cluster/configs/) can't be launched in CI, but the symzoo commands
they run can be checked: each one parses with the CLI of this checkout, names a preset that loads,
and builds a valid GenerateConfig. The Ray release they pin is one release across the files. Each
config is also checked against what reads it: aws-gpu.yaml against the cluster-launcher schema of
the installed Ray wheel, the RayJob against the CRD schema of a KubeRay release (vendored under
tests/fixtures/kuberay/), and the SLURM script runs its start-up against fake srun and ray."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipelines.cli import COMMAND_MODULES, parser
from pipelines.generate_cmd import generate_config
from pipelines.presets import load_preset

CONFIGS = Path(__file__).resolve().parents[1] / "cluster" / "configs"
KUBERAY_SCHEMA = Path(__file__).resolve().parent / "fixtures" / "kuberay" / "rayjob-v1.json"
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
        assert args.zoo, f"{config}: names no zoo"
        cfg = generate_config(load_preset(args.preset), args, args.zoo)
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


def schema_errors(doc, schema: dict) -> list[str]:
    """Every place `doc` breaks `schema` (its own $schema draft, else Draft 7), as 'path: message'."""
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)(schema)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]


def ray_cluster_schema() -> dict:
    """The cluster-launcher schema in the installed Ray wheel: what `ray up` validates against."""
    ray_dir = Path(importlib.util.find_spec("ray").origin).parent
    return json.loads((ray_dir / "autoscaler" / "ray-schema.json").read_text())


def test_aws_config_matches_the_ray_cluster_schema():
    doc = yaml.safe_load((CONFIGS / "aws-gpu.yaml").read_text())
    assert schema_errors(doc, ray_cluster_schema()) == []
    # what `ray up` checks beyond the schema (ray.autoscaler._private.util.validate_config)
    assert doc["head_node_type"] in doc["available_node_types"]
    assert sum(t.get("min_workers", 0) for t in doc["available_node_types"].values()) <= doc["max_workers"]


def strict_schema(node):
    """A CRD's OpenAPI v3 structural schema as plain JSON Schema, read as `kubectl apply` reads it
    (strict field validation): a field the schema does not list is an error where the object lists
    its properties and does not preserve unknown fields. `x-kubernetes-int-or-string` is an
    int or a string, `nullable` admits null; the other x-kubernetes-* keys (list and map types,
    CEL rules) are not checked here."""
    if isinstance(node, list):
        return [strict_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: strict_schema(s) for name, s in value.items()}
        elif key in ("items", "additionalProperties", "not", "anyOf", "allOf", "oneOf"):
            out[key] = strict_schema(value)
        elif not key.startswith("x-kubernetes-") and key != "nullable":
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in node and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def test_strict_schema_reads_crd_schemas_as_kubernetes_does():
    crd = {"type": "object", "properties": {
        "port": {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True},
        "limits": {"type": "object", "additionalProperties": {"x-kubernetes-int-or-string": True}},
        "extra": {"type": "object", "properties": {"a": {"type": "string"}},
                  "x-kubernetes-preserve-unknown-fields": True},
        "name": {"type": "string", "nullable": True}}}
    schema = strict_schema(crd)
    assert schema_errors({"port": 80, "limits": {"cpu": "2", "gpu": 1}, "extra": {"b": 1}, "name": None}, schema) == []
    assert len(schema_errors({"port": 1.5, "limits": {"cpu": []}, "prot": 80}, schema)) == 3


def test_kuberay_rayjob_matches_the_crd_schema():
    crd = json.loads(KUBERAY_SCHEMA.read_text())
    doc = yaml.safe_load((CONFIGS / "kuberay-rayjob.yaml").read_text())
    assert (doc["apiVersion"], doc["kind"]) == (f"{crd['group']}/{crd['version']}", crd["kind"])
    assert schema_errors(doc, strict_schema(crd["openAPIV3Schema"])) == []


def test_rayjob_containers_that_start_ray_themselves_keep_their_command():
    """KubeRay replaces a Ray container's command with `<command args> && ulimit ...; ray start ...`
    unless the RayCluster (which copies the RayJob's annotations) carries
    ray.io/overwrite-container-cmd: "true" (ray-operator/controllers/ray/common/pod.go, BuildPod,
    v1.7.0). Joined that way, `bash -lc -- "pip install ...; exec $KUBERAY_GEN_RAY_START_CMD"`
    runs only `pip`, and Ray starts without symzoo installed."""
    doc = yaml.safe_load((CONFIGS / "kuberay-rayjob.yaml").read_text())
    cluster = doc["spec"]["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    commands = [" ".join(g["template"]["spec"]["containers"][0].get(k, [])) for g in groups for k in ("command", "args")]
    if any("KUBERAY_GEN_RAY_START_CMD" in c for c in commands):
        assert (doc["metadata"].get("annotations") or {}).get("ray.io/overwrite-container-cmd") == "true"


FAKE_SLURM_TOOL = r"""#!{python}
# Stands in for srun, scontrol, hostname, ray, symzoo and sleep: logs the call to $FAKE_LOG, then acts.
import json, os, sys, time
name, argv, node = os.path.basename(sys.argv[0]), sys.argv[1:], os.environ.get("FAKE_NODE")
nodes = os.environ["FAKE_NODES"].split()
if name == "srun":  # srun OPTIONS... CMD...: CMD runs "on" the node after -w
    opts = []
    while argv[0].startswith("-"):
        opts.append(argv.pop(0))
        if opts[-1] == "-w":
            opts.append(argv.pop(0))
    argv, cmd = opts, argv
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps({{"cmd": name, "node": node, "argv": argv}}) + "\n")
if name == "srun":
    os.execvpe(cmd[0], cmd, dict(os.environ, FAKE_NODE=argv[argv.index("-w") + 1]))
elif name == "scontrol":
    print("\n".join(nodes))
elif name == "hostname":
    i = nodes.index(node) + 1
    print(f"10.0.0.{{i}} fd00::{{i}}")
elif name == "sleep":  # "long enough": returns once the script's background jobs have exited
    def busy():
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                state, ppid = open(f"/proc/{{pid}}/stat").read().rpartition(")")[2].split()[:2]
            except OSError:
                continue
            if int(ppid) == os.getppid() and int(pid) != os.getpid() and state != "Z":
                return True
    deadline = time.monotonic() + 30
    while busy() and time.monotonic() < deadline:
        time.sleep(0.02)
"""


def run_slurm_script(tmp_path: Path, nodes: list[str], *args: str) -> list[tuple[str, str | None, list[str]]]:
    """Run slurm.sbatch with the fake tools first on PATH; returns the calls, in order, as
    (tool, node it ran on via srun or None, argv)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir()
    for tool in ("srun", "scontrol", "hostname", "ray", "symzoo", "sleep"):
        (bin_dir / tool).write_text(FAKE_SLURM_TOOL.format(python=sys.executable))
        (bin_dir / tool).chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path / "home"),
           "FAKE_LOG": str(log), "FAKE_NODES": " ".join(nodes), "SLURM_JOB_NODELIST": "gpu[01-03]",
           "SLURM_CPUS_PER_TASK": "16", "SLURM_GPUS_PER_NODE": "4"}
    subprocess.run(["bash", str(CONFIGS / "slurm.sbatch"), *args], env=env, check=True, capture_output=True,
                   timeout=120)
    return [(c["cmd"], c["node"], c["argv"]) for c in map(json.loads, log.read_text().splitlines())]


def test_slurm_script_starts_a_ray_head_and_workers_then_generates(tmp_path):
    nodes = ["gpu01", "gpu02", "gpu03"]
    calls = run_slurm_script(tmp_path, nodes, "paper", "/shared/zoos/paper")
    address, per_node = "10.0.0.1:6379", ["--num-cpus=16", "--num-gpus=4", "--block"]
    assert ("scontrol", None, ["show", "hostnames", "gpu[01-03]"]) in calls
    assert ("hostname", "gpu01", ["--ip-address"]) in calls
    sruns = [argv for tool, _, argv in calls if tool == "srun"]
    assert sorted(sruns) == [["--nodes=1", "--ntasks=1", "-w", n] for n in ["gpu01", *nodes]]
    rays = [(node, argv) for tool, node, argv in calls if tool == "ray"]
    assert rays[0] == ("gpu01", ["start", "--head", "--node-ip-address=10.0.0.1", "--port=6379", *per_node])
    assert sorted(rays[1:]) == [(n, ["start", f"--address={address}", *per_node]) for n in nodes[1:]]
    assert calls[-2:] == [  # on the batch node, once every Ray node has started
        ("symzoo", None, ["data", "fetch", "--data", str(tmp_path / "home" / ".cache" / "symzoo")]),
        ("symzoo", None, ["generate", "--preset", "paper", "--zoo", "/shared/zoos/paper", "--address", address])]
