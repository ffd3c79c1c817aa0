"""Kill a running job at a chosen point of its commits (fault injection, `testing.kill_*`: the write stage
SIGKILLs the driver), rerun the same command: only the missing shards are written, and the union of
outputs and errors has every id exactly once. No wall-clock timing decides where the kill lands.

Process faults at seeded random points (tests/support/faults/killer.py, slow): SIGKILL of the driver, a decode
actor, a read worker or a write worker of a job reading and writing S3; Ray retries the workers' tasks
(the run completes) and the rerun of a killed driver completes the job. A driver that starts its own
Ray takes every Ray process with it when it is killed (default run)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import fsspec
import pytest
import s3fs

from driver.procs import alive, descendants, find, sigkill
from tests.support import EMBEDDED_MODEL
from tests.support.cli import pipeline_cmd
from tests.support.events import wait_until
from tests.support.faults.killer import KillPlan, kill_at
from tests.support.faults.s3_proxy import Fault
from tests.support.files import written_ids

N_SHARDS, PER_SHARD = 6, 6


def _write_shards(folder, n_shards=N_SHARDS):
    folder.mkdir()
    for s in range(n_shards):
        rows = [{"id": f"s{s}r{i}", "prompt": f"copy:{'abcdef'[: i + 1]}="} for i in range(PER_SHARD)]
        rows[-1] = {"id": f"s{s}r{PER_SHARD - 1}", "prompt": ""}  # one error row per shard
        (folder / f"shard-{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _committed(out) -> list[str]:
    return sorted(p.stem for p in (out / "_done").glob("*.json")) if (out / "_done").exists() else []


def _cmd(inp: str, out: str, address: str, *extra: str) -> list[str]:
    """A job's command; it runs with this process's environment as it is when the job starts (ray.init adds
    what a job needs to join its Ray)."""
    return pipeline_cmd(f"input.url={inp}", f"output.url={out}", f"model.path={EMBEDDED_MODEL}",
                        f"ray.address={address}", "progress=false", "actors.batch_rows=2",
                        "actors.max_concurrent_batches=1", *extra)


def _run(ray_cluster, inp, out, *extra) -> subprocess.CompletedProcess:
    cmd = _cmd(f"{inp}/*.jsonl", str(out), ray_cluster.get_runtime_context().gcs_address, *extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, start_new_session=True)


def _ids(out, n_shards=N_SHARDS) -> list[str]:
    return written_ids(fsspec.filesystem("file"), str(out), [f"shard-{s}" for s in range(n_shards)])


def _expected(n_shards=N_SHARDS) -> list[str]:
    return sorted(f"s{s}r{i}" for s in range(n_shards) for i in range(PER_SHARD))


@pytest.mark.slow
def test_resume_after_kill(ray_cluster, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    _write_shards(inp)
    killed = _run(ray_cluster, inp, out, "testing.kill_after_commits=2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    first = _committed(out)
    assert 2 <= len(first) < N_SHARDS, f"kill landed at a useless moment: {first}"
    assert not (out / "_manifest.json").exists()
    stamps = {n: (out / "outputs" / f"{n}.arrow").stat().st_mtime_ns for n in first}

    done = _run(ray_cluster, inp, out)
    assert done.returncode == 3, done.stderr[-2000:]           # completed; 3 = error rows (one per shard)
    assert f"{N_SHARDS} of {N_SHARDS * PER_SHARD} rows went to errors/" in done.stderr
    manifest = json.loads((out / "_manifest.json").read_text())
    assert sorted(p.rsplit("/", 1)[-1][:-6] for p in manifest["resumed_shards"]) == first
    assert {n: (out / "outputs" / f"{n}.arrow").stat().st_mtime_ns for n in first} == stamps  # not rewritten
    assert _ids(out) == _expected()
    assert not (out / "_parts").exists()


def _decoded_by(out, names) -> dict[str, tuple[str, str]]:
    """id -> (output text, decode actor) of every committed output row."""
    from tests.support.files import read_arrow
    rows = {}
    for n in names:
        t = read_arrow(f"{out}/outputs/{n}.arrow", fsspec.filesystem("file"))
        rows.update(zip(t["id"].to_pylist(), zip(t["output"].to_pylist(), t["actor"].to_pylist())))
    return rows


@pytest.mark.parametrize("how", ["SIGKILL", pytest.param("SIGTERM", marks=pytest.mark.slow)])
def test_rerun_keeps_the_rows_an_interrupted_run_decoded(ray_cluster, tmp_path, how):
    """Rows of all shards interleave in the decode pool, so a job killed near its end has committed few
    shards but written most rows into parts. The rerun keeps those parts (same fingerprint), decodes only
    the rows they lack and commits every shard: outputs equal an uninterrupted run's, each id once."""
    import pyarrow.ipc as ipc

    inp, out, ref = tmp_path / "in", tmp_path / "out", tmp_path / "ref"
    _write_shards(inp)
    killed = _run(ray_cluster, inp, out, "testing.kill_after_rows=30", f"testing.kill_signal={how}")
    assert killed.returncode == (-signal.SIGKILL if how == "SIGKILL" else 143), killed.stderr[-2000:]
    parts = list((out / "_parts").glob("*/*.rows.arrow"))
    assert sum(int(p.name.split("-")[1]) for p in parts) >= 30 and len(_committed(out)) < N_SHARDS
    assert all((p.parent / "fingerprint.json").exists() for p in parts)
    first_actors = {a for p in parts for a in ipc.open_file(str(p)).read_all()["actor"].to_pylist() if a}
    first_actors |= {a for _, a in _decoded_by(out, _committed(out)).values()}

    done = _run(ray_cluster, inp, out)
    assert done.returncode == 3, done.stderr[-2000:]           # completed; 3 = error rows (one per shard)
    assert _ids(out) == _expected() and not (out / "_parts").exists()
    names = [f"shard-{s}" for s in range(N_SHARDS)]
    rows = _decoded_by(out, names)
    redecoded = [i for i, (_, actor) in rows.items() if actor not in first_actors]
    assert len(redecoded) <= 0.2 * len(rows), (len(redecoded), len(rows))
    assert _run(ray_cluster, inp, ref).returncode == 3
    assert {i: text for i, (text, _) in rows.items()} == {i: text for i, (text, _) in _decoded_by(ref, names).items()}


@pytest.mark.slow
def test_crash_between_merge_and_marker(ray_cluster, tmp_path):
    """The shard's final files are written but its marker is not: it is not committed, the rerun decodes
    and merges it again (over the same files) and commits it exactly once."""
    inp, out = tmp_path / "in", tmp_path / "out"
    _write_shards(inp, 2)
    killed = _run(ray_cluster, inp, out, "testing.kill_before_marker=shard-0")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (out / "outputs" / "shard-0.arrow").exists(), "the kill must land after the merge"
    assert "shard-0" not in _committed(out)

    done = _run(ray_cluster, inp, out)
    assert done.returncode == 3, done.stderr[-2000:]           # completed; 3 = error rows (one per shard)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert not any(p.endswith("shard-0.jsonl") for p in manifest["resumed_shards"])
    assert _committed(out) == ["shard-0", "shard-1"]
    assert manifest["shards"]["shard-0"]["rows"] == PER_SHARD
    assert manifest["totals"]["rows"] == 2 * PER_SHARD
    assert _ids(out, 2) == _expected(2)
    assert not (out / "_parts").exists()


@pytest.mark.slow
def test_driver_kill_takes_its_ray_along_and_rerun_completes(tmp_path):
    """A driver with its own local Ray, SIGKILLed mid-decode (its first part file is committed, the rest of
    the job is still decoding): every process it started is gone within 15 s (no raylet, GCS, agent or
    decode actor keeps running: driver/reaper.py; without it Ray's agents linger for a minute), and
    rerunning the same command completes."""
    inp, out = tmp_path / "in", tmp_path / "out"
    _write_shards(inp, 3)
    cmd = _cmd(f"{inp}/*.jsonl", str(out), "local", "ray.object_store_mb=128", "testing.step_delay_s=0.2")
    job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    deadline, procs = time.time() + 180, []
    while time.time() < deadline and job.poll() is None and not find(procs, "DecodeStage"):
        time.sleep(0.2)
        procs = descendants(job.pid)
    assert find(procs, "DecodeStage"), f"no decode actor started: {job.poll()} {[p.title[:60] for p in procs]}"
    # mid-decode: decoded rows are committed as a part file while the rest still decodes (0.2 s per step)
    wait_until(lambda: job.poll() is not None or any((out / "_parts").glob("*/*.rows.arrow")), 180,
               "the job's first committed part file")
    assert job.poll() is None, f"the job ended (rc {job.returncode}) before it was killed mid-decode"
    started = descendants(job.pid)
    assert sigkill(job.pid) and job.wait(timeout=30) == -signal.SIGKILL
    deadline = time.time() + 15
    while time.time() < deadline and alive(p.pid for p in started):
        time.sleep(0.2)
    assert not alive(p.pid for p in started), [p.title[:80] for p in alive(p.pid for p in started)]
    assert not (out / "_manifest.json").exists()

    done = subprocess.run(cmd[:-1], capture_output=True, text=True, timeout=300, start_new_session=True)
    assert done.returncode == 3, done.stderr[-2000:]         # completed; 3 = error rows (one per shard)
    assert _ids(out, 3) == _expected(3)


def _s3_shards(server_url: str, bucket: str) -> s3fs.S3FileSystem:
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": server_url}, use_listings_cache=False,
                           skip_instance_cache=True)
    fs.mkdir(bucket)
    for s in range(N_SHARDS):
        rows = [{"id": f"s{s}r{i}", "prompt": f"copy:{'abcdef'[: i + 1]}="} for i in range(PER_SHARD)]
        rows[-1]["prompt"] = ""
        fs.pipe(f"{bucket}/in/shard-{s}.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    return fs


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("target", ["driver", "actor", "reader", "writer"])
def test_sigkill_at_a_random_point_then_rerun(ray_cluster, fault_s3, target, seed):
    server, proxy = fault_s3
    bucket = f"kill-{target}-{seed}"
    fs = _s3_shards(server.url, bucket)
    if target == "reader":       # a slow server keeps read tasks in flight long enough to be killed
        proxy.schedule(Fault("delay", "GET", r"/in/shard-", times=0, delay_s=1.0))
    # an actor is killed at its first committed part: the tiny model decodes the 36 rows within a few parts
    plan = KillPlan.draw(target, seed, most={"reader": N_SHARDS - 2, "actor": 1}.get(target, 3))
    cmd = _cmd(f"s3://{bucket}/in/", f"s3://{bucket}/out", ray_cluster.get_runtime_context().gcs_address,
               f"storage.endpoint_url={proxy.url}", "testing.step_delay_s=0.02")
    job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    victim = kill_at(plan, job, proxy.log, scope=os.getpid())
    _, err = job.communicate(timeout=300)
    assert victim is not None, (f"{plan}: the job ended before the kill landed (rc {job.returncode}); Ray workers "
                                f"seen: {sorted(plan.titles)}; {err[-1000:]}")
    if target == "driver":
        assert job.returncode == -signal.SIGKILL
    else:                        # Ray restarts the worker and retries its task: this very run completes
        assert job.returncode == 3, f"{plan} killed {victim.title[:60]}: {err[-2000:]}"
    proxy.schedule()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, start_new_session=True)
    assert done.returncode == 3, done.stderr[-2000:]
    names = [f"shard-{s}" for s in range(N_SHARDS)]
    assert written_ids(fs, f"{bucket}/out", names) == _expected(), plan   # every line once: outputs + errors
    manifest = json.loads(fs.cat(f"{bucket}/out/_manifest.json"))
    assert manifest["totals"]["rows"] == N_SHARDS * PER_SHARD
    fs.rm(bucket, recursive=True)


def test_reaper_knows_a_ray_session_by_name():
    from driver.reaper import SESSION
    worker = ("python default_worker.py --node-ip-address=127.0.0.1 --session-name=session_2026-12-01_17-25-03_482911_3456"
              " --temp-dir=/tmp/ray --runtime-env-hash=-646481777")
    assert SESSION.findall(worker) == ["session_2026-12-01_17-25-03_482911_3456"]
    assert not SESSION.findall("ray::DecodeStage") and not SESSION.findall("python bench/soak.py --session 3")
