"""Kill a running job at a chosen point of its commits (fault injection, `testing.kill_*`: the write stage
SIGKILLs the driver), rerun the same command: only the missing shards are written, and the union of
outputs and errors has every id exactly once. No wall-clock timing decides where the kill lands."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pyarrow as pa

from conftest import EMBEDDED_MODEL, ROOT

N_SHARDS, PER_SHARD = 6, 6


def _write_shards(folder, n_shards=N_SHARDS):
    folder.mkdir()
    for s in range(n_shards):
        rows = [{"id": f"s{s}r{i}", "prompt": f"copy:{'abcdef'[: i + 1]}="} for i in range(PER_SHARD)]
        rows[-1] = {"id": f"s{s}r{PER_SHARD - 1}", "prompt": ""}  # one error row per shard
        (folder / f"shard-{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _committed(out) -> list[str]:
    return sorted(p.stem for p in (out / "_done").glob("*.json")) if (out / "_done").exists() else []


def _run(ray_cluster, inp, out, *extra) -> subprocess.CompletedProcess:
    address = ray_cluster.get_runtime_context().gcs_address
    cmd = [sys.executable, str(ROOT / "pipeline.py"), f"input.url={inp}/*.jsonl", f"output.url={out}",
           f"model.path={EMBEDDED_MODEL}", f"ray.address={address}", "progress=false", "actors.batch_rows=2",
           "actors.max_concurrent_batches=1", *extra]
    return subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300, start_new_session=True)


def _ids(out, n_shards=N_SHARDS) -> list[str]:
    ids = []
    for s in range(n_shards):
        for sub in ("outputs", "errors"):
            with pa.memory_map(str(out / sub / f"shard-{s}.arrow")) as f:
                ids += pa.ipc.open_file(f).read_all()["id"].to_pylist()
    return sorted(ids)


def _expected(n_shards=N_SHARDS) -> list[str]:
    return sorted(f"s{s}r{i}" for s in range(n_shards) for i in range(PER_SHARD))


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
