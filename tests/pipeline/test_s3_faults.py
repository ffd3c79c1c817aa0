"""Object-store faults during whole runs, moto S3 -> moto S3 through the fault proxy (tests/support/faults/):
throttling, 500s, dropped and lost requests and a download cut mid-body on reads, part writes, commits
and listings are ridden out (every input line accounted for exactly once); a commit that keeps failing
stops the run with a one-line cause and no marker, and the rerun redoes exactly that shard; a server
restart mid-run (slow) is ridden out."""
from __future__ import annotations

import json
import threading
import time

import pytest
import s3fs

from settings.loader import load_config
from driver.outcome import root_cause
from driver.run import run_pipeline
from tests.support import EMBEDDED_MODEL
from tests.support.faults.s3_proxy import Fault
from tests.support.files import written_ids

N_SHARDS, PER_SHARD = 3, 8


@pytest.fixture
def bucket(fault_s3, request):
    server, proxy = fault_s3
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": server.url}, use_listings_cache=False,
                           skip_instance_cache=True)
    name = "faults-" + request.node.name.replace("_", "-")[:40].lower()
    fs.mkdir(name)
    for s in range(N_SHARDS):
        rows = [{"id": f"s{s}r{i}", "prompt": f"copy:{'abcdefgh'[: i % 5 + 1]}="} for i in range(PER_SHARD)]
        rows[-1]["prompt"] = ""                                         # one error row per shard
        fs.pipe(f"{name}/in/shard-{s}.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    yield name, fs
    fs.rm(name, recursive=True)


def _config(bucket: str, proxy, *extra: str):
    return load_config("configs/s3.yaml", [
        f"input.url=s3://{bucket}/in/", f"output.url=s3://{bucket}/out", f"storage.endpoint_url={proxy.url}",
        f"model.path={EMBEDDED_MODEL}", "actors.num_gpus=1", "actors.num_cpus=0", "actors.batch_rows=4",
        "progress=false", "storage.commit_backoff_s=0.5", *extra])


def _accounting(fs, bucket: str) -> list[str]:
    ids = written_ids(fs, f"{bucket}/out", [f"shard-{s}" for s in range(N_SHARDS)])
    assert ids == sorted(f"s{s}r{i}" for s in range(N_SHARDS) for i in range(PER_SHARD))
    assert not fs.exists(f"{bucket}/out/_parts")
    assert not [p for p in fs.find(f"{bucket}/out") if ".tmp-" in p], "temporary files left behind"
    return ids


@pytest.mark.slow
def test_run_rides_out_s3_faults(ray_cluster, fault_s3, bucket) -> None:
    server, proxy = fault_s3
    name, fs = bucket
    faults = [Fault("slowdown", "GET", r"/in/shard-\d\.jsonl", times=3),
              Fault("truncate", "GET", r"/in/shard-1\.jsonl", times=1),
              Fault("error500", "PUT", r"/_parts/", times=3),
              Fault("drop", "PUT", r"/outputs/", times=2),
              Fault("lost", "PUT", r"/_done/", times=2),
              Fault("slowdown", "GET", r"list-type", every=5, times=3),
              Fault("error500", "HEAD", r"/out/", times=2)]
    proxy.schedule(*faults)
    manifest = run_pipeline(_config(name, proxy))
    assert [f.hits for f in faults] == [f.times for f in faults], proxy.injected()   # every fault landed
    _accounting(fs, name)
    assert manifest["totals"]["rows"] == N_SHARDS * PER_SHARD and manifest["totals"]["errors"] == N_SHARDS
    assert sorted(manifest["shards"]) == [f"shard-{s}" for s in range(N_SHARDS)]


@pytest.mark.slow
def test_failed_commit_leaves_no_marker_and_rerun_redoes_it(ray_cluster, fault_s3, bucket) -> None:
    server, proxy = fault_s3
    name, fs = bucket
    proxy.schedule(Fault("error500", "PUT", r"/out/traces/shard-1\.tokens\.arrow", times=0))   # S3 keeps failing
    fast = ["storage.max_attempts=2", "storage.transfer_attempts=1", "storage.commit_attempts=2"]
    with pytest.raises(Exception) as failed:
        run_pipeline(_config(name, proxy, *fast))
    cause = root_cause(failed.value)
    assert cause.startswith("CommitError: shard shard-1: commit failed after 2 attempt(s)"), cause
    assert "rerun the same command" in cause
    assert not fs.exists(f"{name}/out/_done/shard-1.json")
    assert not fs.exists(f"{name}/out/_manifest.json")
    before = {p.rsplit("/", 1)[-1] for p in fs.ls(f"{name}/out/_done")} if fs.exists(f"{name}/out/_done") else set()

    proxy.schedule()
    manifest = run_pipeline(_config(name, proxy))
    _accounting(fs, name)
    assert "shard-1.json" not in before
    resumed = sorted(p.rsplit("/", 1)[-1] for p in manifest["resumed_shards"])
    assert resumed == sorted(b.replace(".json", ".jsonl") for b in before)   # committed ones kept, not redone
    assert manifest["totals"]["rows"] == N_SHARDS * PER_SHARD


@pytest.mark.slow
def test_server_restart_mid_run(ray_cluster, fault_s3, bucket) -> None:
    """The S3 server goes down for 8 s once the first part has landed, and comes back with its data."""
    server, proxy = fault_s3
    name, fs = bucket

    def restart_after_first_part():
        deadline = time.time() + 120
        while time.time() < deadline and not any("/_parts/" in p and w == "200" for m, p, w in list(proxy.log)):
            time.sleep(0.05)
        server.restart(8.0)
    restarter = threading.Thread(target=restart_after_first_part, daemon=True)
    restarter.start()
    run_pipeline(_config(name, proxy, "testing.step_delay_s=0.05"))
    restarter.join()
    assert any(w == "upstream-down" for _, _, w in proxy.log), "the restart hit no request"
    _accounting(fs, name)
