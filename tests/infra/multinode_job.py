"""Multi-node simulation, run as its own process by test_multinode.py (it needs its own Ray, separate from
the test session's): a local Ray cluster of two node processes, a head with 2 CPUs and no GPU and a worker
with 2 CPUs and 1 fake GPU, then the pipeline joins it (`ray.address=<cluster address>`) with
`actors.num_gpus=1`, as it joins a KubeRay / cluster-launcher cluster with `ray.address=auto`.

    python -m tests.infra.multinode_job WORKDIR      -> prints one JSON line (the facts the test checks)

Which node ran each decode actor: the `actor` column of the outputs is `<hostname>:<pid>` (both simulated
nodes share the hostname), and Ray's actor table (read from the GCS, no dashboard needed) maps each
actor's pid to the node it ran on.
"""
from __future__ import annotations

import glob
import json
import os
import pathlib
import sys
import time

from tests.support import EMBEDDED_MODEL, ROOT

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S", "120")

PROMPTS = ["copy:abc=", "rev:hello=", "sort:dcba=", "next:abz=", "copy:zz=", "rev:ab="]


def write_prompts(workdir: pathlib.Path) -> pathlib.Path:
    """One small shard (a second one adds Ray tasks and time, not coverage of the node placement)."""
    src = workdir / "prompts"
    src.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"p{i}", "prompt": p} for i, p in enumerate(PROMPTS)]
    (src / "shard-0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return src


def main(workdir: pathlib.Path) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from settings.loader import load_config
    from driver.run import run_pipeline
    from tests.support.files import read_arrow

    src = write_prompts(workdir)
    t0 = time.time()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "num_gpus": 0, "object_store_memory": 128 * 1024 * 1024, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=2, num_gpus=1, object_store_memory=128 * 1024 * 1024)
    cluster.wait_for_nodes()
    head_id, worker_id = cluster.head_node.node_id, worker.node_id
    started_s = time.time() - t0
    try:
        cfg = load_config(str(ROOT / "configs" / "default.yaml"), [
            f"input.url={src}/*.jsonl", f"output.url={workdir / 'out'}", f"model.path={EMBEDDED_MODEL}",
            "actors.num_gpus=1", "actors.num_cpus=0", "actors.batch_rows=4", "decode.trace=steps",
            "progress=false", f"ray.address={cluster.address}"])
        t1 = time.time()
        manifest = run_pipeline(cfg)
        pipeline_s = time.time() - t1
        nodes = {n["NodeID"]: n.get("Resources", {}) for n in ray.nodes() if n["Alive"]}
        actors = [a for a in ray._private.state.actors().values() if "DecodeStage" in a["ActorClassName"]]
        node_of_pid = {a["Pid"]: a["Address"]["NodeID"] for a in actors}
        used = set()
        rows = 0
        for path in sorted(glob.glob(str(workdir / "out" / "outputs" / "*.arrow"))):
            table = read_arrow(path)
            rows += table.num_rows
            used |= set(table["actor"].to_pylist())
        return {
            "head": head_id, "worker": worker_id,
            "head_gpus": nodes.get(head_id, {}).get("GPU", 0), "worker_gpus": nodes.get(worker_id, {}).get("GPU", 0),
            "decode_actors": [{"pid": a["Pid"], "node": a["Address"]["NodeID"], "state": a["State"]} for a in actors],
            "output_actors": sorted(used),
            "output_actor_nodes": sorted({node_of_pid.get(int(a.rsplit(":", 1)[1]), "?") for a in used}),
            "rows": rows, "totals": manifest["totals"], "cluster_start_s": round(started_s, 1),
            "pipeline_s": round(pipeline_s, 1),
        }
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    print(json.dumps(main(pathlib.Path(sys.argv[1]))))
