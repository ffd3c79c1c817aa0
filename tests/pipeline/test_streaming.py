"""A shard larger than `input.block_rows` spread over two decode actors, with the progress bar and the
summary table on: one 600-row shard in 64-row blocks, written as several parts and committed once, each
id exactly once, both actors in the manifest and in the outputs, the report's accelerator-seconds equal
to the two actors' busy time, and the printed summary equal to `_manifest.json`."""
from __future__ import annotations

import argparse
import json
import re
import threading
import time

import pyarrow.parquet as pq
import pytest

from embedded.taskmix.tasks import EVAL_TASKS, sample_examples
from settings.loader import load_config
from report.main import RUN_ROW, run_report
from driver.run import run_pipeline
from driver.summary import ProgressWatcher
from stages.write.sink import ShardDatasink
from tests.support import EMBEDDED_MODEL
from tests.support.files import read_arrow as _read

N_ROWS = 600


@pytest.fixture(scope="module")
def run(ray_cluster, tmp_path_factory):
    base = tmp_path_factory.mktemp("streaming")
    (base / "in").mkdir()
    rows = [{"id": f"r{i:03d}", "prompt": e.prompt} for i, e in enumerate(sample_examples(11, N_ROWS, EVAL_TASKS))]
    (base / "in" / "big.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return base, rows


def test_big_shard_two_actors_progress_and_report(run, capsys, monkeypatch):
    base, rows = run
    # polls by the watcher's own thread (stop() polls once more on the caller's thread: those do not count);
    # stop() waits until the thread has polled, so a run shorter than its first tick cannot skip the check
    polls, polled, final = [], threading.Event(), []
    real_poll, real_stop = ProgressWatcher._poll, ProgressWatcher.stop

    def poll(self):
        real_poll(self)
        if threading.current_thread() is self._thread:
            polls.append(time.time())
            polled.set()

    def stop(self):
        polled.wait(timeout=120)
        final.append(self._decoded())   # the actors' count once every decode task has finished
        real_stop(self)
    monkeypatch.setattr(ProgressWatcher, "_poll", poll)
    monkeypatch.setattr(ProgressWatcher, "stop", stop)
    parts = []   # the part files left for the end-of-write sweep (it runs on the driver, then removes them)
    real_sweep = ShardDatasink.on_write_complete
    monkeypatch.setattr(ShardDatasink, "on_write_complete", lambda self, res: (
        parts.extend(p.name for p in (base / "out" / "_parts" / "big").glob("*.rows.arrow")), real_sweep(self, res)))
    out = base / "out"
    manifest = run_pipeline(load_config("configs/default.yaml", [
        f"input.url={base / 'in'}", f"output.url={out}", f"model.path={EMBEDDED_MODEL}", "input.block_rows=64",
        "actors.min_actors=2", "actors.max_actors=2", "actors.max_concurrent_batches=2", "progress=true"]))
    printed = capsys.readouterr().out

    outputs, errors = _read(out / "outputs" / "big.arrow"), _read(out / "errors" / "big.arrow")
    assert errors.num_rows == 0 and sorted(outputs["id"].to_pylist()) == sorted(r["id"] for r in rows)
    assert sorted(outputs["line"].to_pylist()) == list(range(1, N_ROWS + 1))   # 1-based line numbers
    assert [p.name for p in (out / "_done").iterdir()] == ["big.json"] and not (out / "_parts").exists()
    assert len(manifest["actors"]) == 2, manifest["actors"]
    assert set(outputs["actor"].to_pylist()) == set(manifest["actors"])   # both decoded part of the shard
    assert len(parts) > 1, parts
    assert polls, "the progress watcher never polled"
    # every decoded row reached the counter (each task adds its rows as it finishes, before the writer has them:
    # whether a poll falls in that window is timing, so tests/driver/test_progress.py checks the arithmetic)
    assert final and final[0]["rows"] == N_ROWS, final

    report = run_report(argparse.Namespace(run_url=str(out), out=str(base / "report"), baseline=None,
                                           price_per_gpu_hour=2.0, config=None))
    assert report is not None
    summary = {r["shard"]: r for r in pq.read_table(base / "report" / "summary.parquet").to_pylist()}
    busy = sum(a["elapsed_s"] for a in manifest["actors"].values())
    assert summary[RUN_ROW]["accelerator_s"] == pytest.approx(busy, rel=1e-6)
    assert summary["big"]["accelerator_s"] == pytest.approx(busy, rel=1e-6)

    disk = json.loads((out / "_manifest.json").read_text())
    t = disk["totals"]
    table = dict(re.findall(r"^(\S.*?)\s{2,}(.*)$", printed, re.M))
    assert table["shards"] == "1 (0 already done)"
    for label, key in (("rows", "rows"), ("outputs", "outputs"), ("errors", "errors"), ("prompt tokens", "prompt_tokens"),
                       ("generated tokens", "generated_tokens"), ("NFE (forward passes x rows)", "nfe"),
                       ("step budget", "step_budget")):
        assert int(table[label]) == t[key], label
    assert table["steps saved"].startswith(f"{t['steps_saved']} (")
    assert table["exit reasons"] == ", ".join(f"{k}={v}" for k, v in sorted(t["exit_reasons"].items()))
    assert table["wall time"] == f"{disk['wall_s']:.1f} s"
    assert table["sequences/s"] == f"{t['outputs'] / disk['wall_s']:.2f}"
    assert "examples from big:" in printed
