"""Kill a running job, rerun the same command: only the missing shards are written, and the union of
outputs and errors has every id exactly once."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa

from conftest import EMBEDDED_MODEL, ROOT

N_SHARDS, PER_SHARD = 6, 6


def _write_shards(folder):
    folder.mkdir()
    for s in range(N_SHARDS):
        rows = [{"id": f"s{s}r{i}", "prompt": f"copy:{'abcdef'[: i + 1]}="} for i in range(PER_SHARD)]
        rows[-1] = {"id": f"s{s}r{PER_SHARD - 1}", "prompt": ""}  # one error row per shard
        (folder / f"shard-{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _committed(out) -> list[str]:
    return sorted(p.stem for p in (out / "_done").glob("*.json")) if (out / "_done").exists() else []


def _cmd(ray_cluster, inp, out, *extra):
    address = ray_cluster.get_runtime_context().gcs_address
    return [sys.executable, str(ROOT / "pipeline.py"), f"input.url={inp}/*.jsonl", f"output.url={out}",
            f"model.path={EMBEDDED_MODEL}", f"ray.address={address}", "progress=false", "actors.batch_rows=2",
            "actors.max_concurrent_batches=1", *extra]


def test_resume_after_kill(ray_cluster, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    _write_shards(inp)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(_cmd(ray_cluster, inp, out, "testing.step_delay_s=0.05"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not _committed(out):
        assert proc.poll() is None, "the first run ended before it could be interrupted"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = _committed(out)
    assert 0 < len(first) < N_SHARDS, f"kill landed at a useless moment: {first}"
    stamps = {n: (out / "outputs" / f"{n}.arrow").stat().st_mtime_ns for n in first}

    done = subprocess.run(_cmd(ray_cluster, inp, out), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr[-2000:]           # completed; 3 = error rows (one per shard)
    assert f"{N_SHARDS} of {N_SHARDS * PER_SHARD} rows went to errors/" in done.stderr
    manifest = json.loads((out / "_manifest.json").read_text())
    assert sorted(p.rsplit("/", 1)[-1][:-6] for p in manifest["resumed_shards"]) == first
    assert {n: (out / "outputs" / f"{n}.arrow").stat().st_mtime_ns for n in first} == stamps  # not rewritten
    ids = []
    for s in range(N_SHARDS):
        for sub in ("outputs", "errors"):
            with pa.memory_map(str(out / sub / f"shard-{s}.arrow")) as f:
                ids += pa.ipc.open_file(f).read_all()["id"].to_pylist()
    assert sorted(ids) == sorted(f"s{s}r{i}" for s in range(N_SHARDS) for i in range(PER_SHARD))
    assert not (out / "_parts").exists()
