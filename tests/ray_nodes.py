"""A two-node Ray cluster on 127.0.0.1 for tests/test_cluster.py, run as its own process:

    python tests/ray_nodes.py   # prints one JSON line {"address", "worker_pids"}, then serves until killed

ray.cluster_utils.Cluster, not `ray start`: with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (which keeps
every address of Ray on loopback) `ray start --address` refuses to add a worker node. The parent
sets RAY_TMPDIR to a private folder, so that no other Ray on this machine (a colleague's
embedded `ray.init()`) discovers this cluster through /tmp/ray/ray_current_cluster.
"""
import json
import sys
import time

from ray.cluster_utils import Cluster


def node_pids(node) -> list[int]:
    return [p.process.pid for procs in node.all_processes.values() for p in procs]


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, node_ip_address="127.0.0.1",
                                                                include_dashboard=False))
    worker = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    print(json.dumps({"address": cluster.address, "worker_pids": node_pids(worker)}), flush=True)
    while True:  # the test kills this process group when done
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
