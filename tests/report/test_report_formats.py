"""The report is right or refuses: one run written as Arrow, Parquet and JSONL reports identically; a run
missing its manifest, outputs or traces is refused with the files named; shards decoded without traces
take NFE from the outputs; `--baseline` prices both runs; `report` takes storage.key=value settings."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support import EMBEDDED_MODEL, ROOT
from driver.run import run_pipeline
from report.main import RUN_ROW, fmt_summary, run_report
from report.scan import IncompleteRun
from settings.loader import load_config

FORMATS = ("arrow", "parquet", "jsonl")
PRICE = 2.5


def _args(run_url, out, baseline=None, config=None, overrides=()) -> argparse.Namespace:
    return argparse.Namespace(run_url=str(run_url), out=str(out), baseline=str(baseline) if baseline else None,
                              price_per_gpu_hour=PRICE, config=config, overrides=list(overrides))


def _read(path) -> pa.Table:
    with open(path, "rb") as f:
        return pa.ipc.open_file(f).read_all()


@pytest.fixture(scope="module")
def runs(ray_cluster, tmp_path_factory):
    """Two shards (5 prompts + 1 bad row, 5 prompts) decoded once into all three formats, plus a copy of
    the run per format holding only that format; and a fixed-step baseline written as Parquet only,
    decoded without traces, on an actor holding one (fake) GPU."""
    base = tmp_path_factory.mktemp("formats")
    lines = (ROOT / "embedded" / "taskmix" / "prompts" / "shard-000.jsonl").read_text().splitlines()
    (base / "in").mkdir()
    (base / "in" / "part-a.jsonl").write_text("\n".join(lines[:5] + [json.dumps({"id": "bad", "prompt": ""})]) + "\n")
    (base / "in" / "part-b.jsonl").write_text("\n".join(lines[5:10]) + "\n")
    common = [f"input.url={base / 'in'}", f"model.path={EMBEDDED_MODEL}", "progress=false"]
    run_pipeline(load_config("configs/default.yaml", common + [f"output.url={base / 'all'}",
                                                               "output.format=[arrow,parquet,jsonl]"]))
    for fmt in FORMATS:   # the same run, as if written in one format
        shutil.copytree(base / "all", base / fmt)
        for sub in ("outputs", "errors"):
            for path in (base / fmt / sub).iterdir():
                if path.suffix != f".{fmt}":
                    path.unlink()
    run_pipeline(load_config("configs/default.yaml", common + [
        f"output.url={base / 'baseline'}", "output.format=[parquet]", "decode.policy=[none]", "decode.trace=off",
        "actors.num_gpus=1", "actors.num_cpus=0"]))
    return base


def test_each_format_gives_the_same_report(runs):
    reports = {fmt: run_report(_args(runs / fmt, runs / f"report-{fmt}")) for fmt in FORMATS}
    assert sorted(p.name for p in (runs / "parquet" / "outputs").iterdir()) == ["part-a.parquet", "part-b.parquet"]
    tables = {fmt: pq.read_table(runs / f"report-{fmt}" / "summary.parquet") for fmt in FORMATS}
    for fmt in ("parquet", "jsonl"):
        assert tables[fmt].schema == tables["arrow"].schema, fmt
        assert json.dumps(tables[fmt].to_pylist()) == json.dumps(tables["arrow"].to_pylist()), fmt   # NaN too
        assert fmt_summary(reports[fmt]).splitlines()[:-1] == fmt_summary(reports["arrow"]).splitlines()[:-1]
        assert ((runs / f"report-{fmt}" / "report.html").read_text().replace(str(runs / fmt), "RUN")
                == (runs / "report-arrow" / "report.html").read_text().replace(str(runs / "arrow"), "RUN"))
        for png in reports["arrow"]["plots"].values():
            assert (runs / f"report-{fmt}" / png).stat().st_size > 1024

    total = {r["shard"]: r for r in tables["arrow"].to_pylist()}[RUN_ROW]   # and they are right
    outputs = [_read(p) for p in sorted((runs / "all" / "outputs").glob("*.arrow"))]
    steps = sum(_read(p).num_rows for p in (runs / "all" / "traces").glob("*.steps.arrow"))
    assert (total["sequences"], total["errors"], total["prompts"]) == (10, 1, 10)
    assert total["nfe"] == steps == sum(sum(t["nfe"].to_pylist()) for t in outputs) > 0
    assert total["generated_tokens"] == sum(sum(t["generated_tokens"].to_pylist()) for t in outputs)
    assert total["refresh_row_steps"] == sum(sum(t["refreshes"].to_pylist()) for t in outputs)
    manifest = json.loads((runs / "all" / "_manifest.json").read_text())
    assert total["accelerator_s"] == pytest.approx(manifest["spent"]["accelerator_s"]) and total["cost"] > 0
    assert manifest["totals"]["error_reasons"] == {"empty prompt": 1}      # what exit 3 and the summary name
    assert not reports["jsonl"]["warnings"]


def _refused(copy, out) -> str:
    with pytest.raises(IncompleteRun) as e:
        run_report(_args(copy, out))
    assert not (out / "summary.parquet").exists()
    return str(e.value)


def test_a_run_missing_files_is_refused_with_them_named(runs, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(runs / "parquet", copy)
    (copy / "outputs" / "part-a.parquet").unlink()
    (copy / "traces" / "part-b.steps.arrow").unlink()
    msg = _refused(copy, tmp_path / "r1")
    assert "outputs/part-a{.arrow|.parquet|.jsonl}" in msg and "traces/part-b.steps.arrow (decode.trace=tokens)" in msg
    assert "errors/" not in msg and "\n" not in msg
    (copy / "_manifest.json").unlink()
    assert "has no _manifest.json: the run has not completed (2 shard(s) committed)" in _refused(copy, tmp_path / "r2")

    proc = subprocess.run([sys.executable, "pipeline.py", "report", str(copy), "--out", str(tmp_path / "r3")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "has no _manifest.json" in proc.stderr


def test_baseline_cost_and_savings(runs, tmp_path):
    """A baseline written as Parquet without traces: read through the same reader, NFE from its outputs;
    both runs' cost, the difference in money and accelerator-hours, the projected saving per 1M prompts."""
    base = run_report(_args(runs / "baseline", tmp_path / "base"))["run"]
    b_outputs = pq.read_table(sorted((runs / "baseline" / "outputs").glob("*.parquet")))
    assert base["nfe_source"] == "outputs" and base["nfe"] == sum(b_outputs["nfe"].to_pylist()) == base["step_budget"]

    result = run_report(_args(runs / "arrow", tmp_path / "vs", baseline=runs / "baseline"))
    r = result["run"]
    mine = json.loads((runs / "arrow" / "_manifest.json").read_text())
    theirs = json.loads((runs / "baseline" / "_manifest.json").read_text())
    acc, b_acc = mine["spent"]["accelerator_s"], theirs["spent"]["accelerator_s"]   # GPU-seconds: 1 GPU/actor
    assert r["accelerator_s"] == pytest.approx(acc) and r["baseline_accelerator_s"] == pytest.approx(b_acc)
    assert r["baseline_cost"] == pytest.approx(b_acc / 3600 * PRICE)
    assert r["cost_saved"] == pytest.approx((b_acc - acc) / 3600 * PRICE)
    assert r["accelerator_h_saved"] == pytest.approx((b_acc - acc) / 3600)
    busy = sum(a["elapsed_s"] for a in mine["actors"].values())
    b_busy = sum(a["elapsed_s"] for a in theirs["actors"].values())
    assert r["prompts"] == r["baseline_prompts"] == 10
    assert r["saving_per_million_prompts"] == pytest.approx((b_busy / 10 - busy / 10) / 3600 * PRICE * 1e6)
    assert any("cpu-actor seconds and the baseline gpu seconds" in w for w in result["warnings"])
    text = fmt_summary(result)
    assert "baseline cost" in text and "saved vs baseline" in text and "saving per 1M prompts" in text
    on_disk = pq.read_table(tmp_path / "vs" / "summary.parquet").to_pylist()
    assert on_disk[-1]["cost_saved"] == pytest.approx(r["cost_saved"]) and on_disk[0]["cost_saved"] is None
    html = (tmp_path / "vs" / "report.html").read_text()
    assert "saving_<wbr>per_<wbr>million_<wbr>prompts" in html and "<h3>Attempts</h3>" in html


@pytest.mark.slow
def test_report_takes_storage_settings_on_the_command_line(runs, s3_server, s3fs_client, tmp_path):
    bucket = "report-overrides"
    if not s3fs_client.exists(bucket):
        s3fs_client.mkdir(bucket)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("AWS_ENDPOINT_URL", None)
    try:
        s3fs_client.put(str(runs / "jsonl") + "/", f"{bucket}/run/", recursive=True)
        cmd = [sys.executable, "pipeline.py", "report", f"s3://{bucket}/run", "--out", str(tmp_path / "r"),
               f"storage.endpoint_url={s3_server}", "storage.max_attempts=2"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        local = run_report(_args(runs / "jsonl", tmp_path / "local"))["run"]
        remote = pq.read_table(tmp_path / "r" / "summary.parquet").to_pylist()[-1]
        assert remote["nfe"] == local["nfe"] and remote["accelerator_s"] == pytest.approx(local["accelerator_s"])
        wrong = subprocess.run(cmd[:-2] + ["decode.steps=8"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                               env=env)
        assert wrong.returncode == 2 and "report takes only storage.* settings" in wrong.stderr
    finally:
        s3fs_client.rm(bucket, recursive=True)
