"""The run ledger on real runs: `run; run` (a no-op rerun adds an attempt that decoded nothing), a run
stopped by SIGTERM or SIGINT after its first commit then rerun (exit 143 / 130 in one line, Ray shut down,
outputs equal to an uninterrupted run's), and a SIGKILLed run (an attempt ended without record): the
manifest's and the report's wall time and accelerator-seconds are the sums over the attempts."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pytest
from tests.support.faults.watch import wait_for_file

from tests.support import EMBEDDED_MODEL, ROOT
from driver.ledger import UNRECORDED
from driver.procs import alive, descendants
from driver.run import run_pipeline
from report.main import RUN_ROW, run_report
from settings.loader import load_config

N_SHARDS, PER_SHARD = 6, 4
TIMING = ("queue_s", "slot_s", "latency_s", "actor")


def _write_shards(folder) -> None:
    lines = (ROOT / "embedded" / "taskmix" / "prompts" / "shard-000.jsonl").read_text().splitlines()
    folder.mkdir()
    for s in range(N_SHARDS):
        (folder / f"s{s}.jsonl").write_text("\n".join(lines[s * PER_SHARD:(s + 1) * PER_SHARD]) + "\n")


def _settings(inp, out) -> list[str]:
    return [f"input.url={inp}", f"output.url={out}", f"model.path={EMBEDDED_MODEL}", "progress=false",
            "actors.batch_rows=2", "actors.max_concurrent_batches=1"]


def _cmd(inp, out, address: str, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "pipeline.py"), *_settings(inp, out), f"ray.address={address}", *extra]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _manifest(out) -> dict:
    return json.loads((out / "_manifest.json").read_text())


def _report(out, dest) -> dict:
    return run_report(argparse.Namespace(run_url=str(out), out=str(dest), baseline=None, price_per_gpu_hour=2.0,
                                         config=None, overrides=[]))


def _sums_hold(manifest: dict) -> None:
    """The manifest's totals are the sums over its attempts, and its wall_s is theirs."""
    attempts, spent = manifest["attempts"], manifest["spent"]
    assert spent["attempts"] == len(attempts)
    for key in ("wall_s", "actor_s", "accelerator_s"):
        assert spent[key] == pytest.approx(sum(a[key] for a in attempts)), key
    assert spent["rows_decoded"] == sum(a["rows_decoded"] for a in attempts)
    assert manifest["wall_s"] == spent["wall_s"] and manifest["started_at"] == attempts[0]["started_at"]


def _outputs(out) -> dict[str, list[dict]]:
    tables = {}
    for sub in ("outputs", "errors"):
        for path in sorted((out / sub).glob("*.arrow")):
            with pa.memory_map(str(path)) as f:
                t = pa.ipc.open_file(f).read_all()
            tables[f"{sub}/{path.name}"] = t.drop_columns([c for c in TIMING if c in t.column_names]).to_pylist()
    return tables


@pytest.fixture(scope="module")
def reference(ray_cluster, tmp_path_factory):
    """The shards decoded in one uninterrupted run."""
    base = tmp_path_factory.mktemp("ledger")
    _write_shards(base / "in")
    run_pipeline(load_config("configs/default.yaml", _settings(base / "in", base / "reference")))
    return base


def test_a_noop_rerun_adds_an_attempt_and_changes_no_total(reference, tmp_path, capsys):
    out = tmp_path / "out"
    cfg = _settings(reference / "in", out)
    first = run_pipeline(load_config("configs/default.yaml", cfg))
    before = _report(out, tmp_path / "r1")["run"]
    second = run_pipeline(load_config("configs/default.yaml", cfg[:-3] + ["progress=true"] + cfg[-2:]))
    after = _report(out, tmp_path / "r2")["run"]

    (a1,) = first["attempts"]
    assert a1["status"] == "completed" and a1["rows_decoded"] == N_SHARDS * PER_SHARD and a1["actor_s"] > 0
    assert len(second["attempts"]) == 2 and second["attempts"][0] == a1
    a2 = second["attempts"][1]
    assert (a2["status"], a2["shards_todo"], a2["shards_committed"], a2["rows_decoded"]) == ("completed", 0, 0, 0)
    assert a2["actor_s"] == a2["accelerator_s"] == 0 and a2["wall_s"] > 0
    _sums_hold(first)
    _sums_hold(second)
    for key in ("rows_decoded", "actor_s", "accelerator_s", "load_s"):     # nothing more was decoded or paid
        assert second["spent"][key] == pytest.approx(first["spent"][key]), key
    assert second["wall_s"] == pytest.approx(first["wall_s"] + a2["wall_s"])   # only its own seconds
    assert second["totals"] == first["totals"] and second["actors"] == first["actors"]

    for key in ("sequences", "nfe", "accelerator_s", "cost", "startup_accelerator_s", "rows_decoded"):
        assert after[key] == pytest.approx(before[key]), key
    assert after["wall_s"] == pytest.approx(second["wall_s"]) and after["attempts"] == 2
    assert after["sequences_per_s"] == pytest.approx(after["sequences"] / second["wall_s"])
    assert len((tmp_path / "r2" / "attempts.csv").read_text().splitlines()) == 1 + 2
    printed = capsys.readouterr().out
    assert f"wall time                     {second['wall_s']:.1f} s over 2 attempts" in printed
    assert "attempts                      2 (2 completed); this one" in printed and "0 rows decoded, 0.0 actor-s" in printed
    assert "KV cache (decode.cache=none)" in printed


@pytest.mark.parametrize("sig, address, code", [pytest.param(signal.SIGTERM, "local", 143, marks=pytest.mark.slow),
                                               pytest.param(signal.SIGINT, "cluster", 130, marks=pytest.mark.slow)],
                         ids=["SIGTERM-local-ray", "SIGINT-cluster"])
def test_stopped_after_a_commit_then_rerun(reference, ray_cluster, tmp_path, sig, address, code):
    """SIGTERM (what Kubernetes and spot preemption send) to a driver with its own Ray, once its first
    shard is committed: the same way out as Ctrl-C (SIGINT; here joining a cluster). One line, the exit
    code, every Ray process of the job gone, the attempt marked interrupted; the rerun completes and
    the outputs are those of an uninterrupted run."""
    out = tmp_path / "out"
    out.mkdir()
    cluster = ray_cluster.get_runtime_context().gcs_address
    cmd = _cmd(reference / "in", out, "local" if address == "local" else cluster, "testing.step_delay_s=0.2",
               "ray.object_store_mb=128")
    job = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    first = wait_for_file(out / "_done", ".json", timeout_s=300, running=lambda: job.poll() is None)
    assert first and job.poll() is None, f"the job ended before its first commit: {job.poll()}"
    started = descendants(job.pid)
    os.kill(job.pid, sig)
    _, err = job.communicate(timeout=180)
    assert job.returncode == code, err[-3000:]
    word = "SIGTERM" if sig == signal.SIGTERM else "SIGINT"
    expected = ("error: interrupted (SIGTERM); committed shards are kept, rerun the same command to resume"
                if sig == signal.SIGTERM else "error: interrupted; rerun the same command to resume")
    assert err.strip().splitlines() == [expected], err[-3000:]          # no stack dump, no Ray noise
    deadline = time.time() + 15
    while time.time() < deadline and alive(p.pid for p in started):
        time.sleep(0.2)
    assert not alive(p.pid for p in started), [p.title[:80] for p in alive(p.pid for p in started)]
    committed = sorted(p.stem for p in (out / "_done").glob("*.json"))
    assert 1 <= len(committed) < N_SHARDS, f"the signal landed at a useless moment: {committed}"
    assert not (out / "_manifest.json").exists()
    (record,) = [json.loads(p.read_text()) for p in (out / "_attempts").glob("*.json")]
    assert (record["status"], record["reason"]) == ("interrupted", word)
    assert record["shards_committed"] == committed and record["rows_decoded"] == len(committed) * PER_SHARD
    assert record["actor_s"] > 0 and record["wall_s"] == pytest.approx(record["ended_at"] - record["started_at"])

    done = subprocess.run(_cmd(reference / "in", out, cluster), env=_env(), capture_output=True, text=True,
                          timeout=300, start_new_session=True)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = _manifest(out)
    assert [a["status"] for a in manifest["attempts"]] == ["interrupted", "completed"]
    assert manifest["attempts"][1]["rows_decoded"] == (N_SHARDS - len(committed)) * PER_SHARD
    _sums_hold(manifest)
    assert manifest["spent"]["rows_decoded"] == N_SHARDS * PER_SHARD
    assert _outputs(out) == _outputs(reference / "reference")
    run = _report(out, tmp_path / "report")["run"]
    assert run["wall_s"] == pytest.approx(manifest["spent"]["wall_s"]) and run["attempts"] == 2
    assert run["accelerator_s"] == pytest.approx(manifest["spent"]["accelerator_s"])


@pytest.mark.slow
def test_a_killed_attempt_is_counted_up_to_its_last_commit(reference, ray_cluster, tmp_path):
    """SIGKILL (no chance to close its record): the attempt stays `running` on disk and the rerun's
    manifest shows it as ended without record, timed up to its last marker, with the rows it committed."""
    out = tmp_path / "out"
    cluster = ray_cluster.get_runtime_context().gcs_address
    killed = subprocess.run(_cmd(reference / "in", out, cluster, "testing.kill_after_commits=2"), env=_env(),
                            capture_output=True, text=True, timeout=300, start_new_session=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    markers = {p.stem: json.loads(p.read_text()) for p in (out / "_done").glob("*.json")}
    (on_disk,) = [json.loads(p.read_text()) for p in (out / "_attempts").glob("*.json")]
    assert on_disk["status"] == "running" and 2 <= len(markers) < N_SHARDS

    done = subprocess.run(_cmd(reference / "in", out, cluster), env=_env(), capture_output=True, text=True,
                          timeout=300, start_new_session=True)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = _manifest(out)
    lost, rerun = manifest["attempts"]
    assert lost["attempt"] == on_disk["attempt"] and lost["status"] == UNRECORDED
    assert lost["shards_committed"] == len(markers) and lost["rows_decoded"] == len(markers) * PER_SHARD
    assert lost["ended_at"] >= max(m["committed_at"] for m in markers.values())
    assert lost["wall_s"] == pytest.approx(lost["ended_at"] - on_disk["started_at"]) and lost["actor_s"] > 0
    assert rerun["status"] == "completed" and rerun["rows_decoded"] == (N_SHARDS - len(markers)) * PER_SHARD
    _sums_hold(manifest)
    assert _outputs(out) == _outputs(reference / "reference")
