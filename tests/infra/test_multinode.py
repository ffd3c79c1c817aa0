"""Scale-out path on one machine: a two-node local Ray cluster (head: 2 CPUs, no GPU; worker: 2 CPUs and one
fake GPU), the pipeline joins it through `ray.address` and asks for `actors.num_gpus=1`; the job completes
and every decode actor, and so every decoded row, ran on the worker node.

The cluster and the pipeline run in a child process (tests/infra/multinode_job.py) with its own RAY_TMPDIR:
the test session's Ray (conftest's `ray_cluster`) and `ray.init(address="auto")` elsewhere on this machine
are left alone. About 35-60 s on 2 shared cores and the only multi-node check, so it is marked slow
(`./test.sh -m slow`); the default run covers the same pipeline on one node with fake GPUs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from tests.support import ROOT


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_decode_actors_run_on_the_gpu_worker_node(tmp_path):
    ray_tmp = tempfile.mkdtemp(prefix="rmn", dir="/tmp")   # short: Ray's unix socket paths must fit 107 bytes
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_NAMESPACE")}
    env.update(RAY_TMPDIR=ray_tmp, OMP_NUM_THREADS="1", RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S="180")
    t0 = time.time()
    try:
        res = subprocess.run([sys.executable, "-m", "tests.infra.multinode_job", str(tmp_path)],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=360)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert res.returncode == 0, f"multi-node job failed (rc {res.returncode}):\n{res.stderr[-4000:]}"
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"multi-node simulation: {time.time() - t0:.1f} s (cluster start {out['cluster_start_s']} s, "
          f"pipeline {out['pipeline_s']} s)")

    assert out["head"] != out["worker"]
    assert out["head_gpus"] == 0 and out["worker_gpus"] == 1
    # the job completed: every prompt decoded, nothing lost
    assert out["rows"] == out["totals"]["rows"] == out["totals"]["outputs"] == 6 and out["totals"]["errors"] == 0
    # every decode actor was placed on the worker (the only node with a GPU) ...
    assert out["decode_actors"], "no decode actor in Ray's actor table"
    assert {a["node"] for a in out["decode_actors"]} == {out["worker"]}
    # ... and the actors named in the outputs' `actor` column are those, so the rows were decoded there
    assert out["output_actors"] and out["output_actor_nodes"] == [out["worker"]]
