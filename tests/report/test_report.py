"""`pipeline.py report` on real runs: two small Ray Data runs (SchED, and a fixed-step baseline on fake
GPUs) made once per module; the report's numbers are checked against values computed here directly
from the runs' trace and output files, its PNGs and HTML are checked, and it runs on a copy of the run
in the moto S3 server and through the CLI."""
from __future__ import annotations

import re

import argparse
import json
import os
import shutil
from collections import Counter

import matplotlib.image as mpimg
import pyarrow.parquet as pq
import pytest

from settings.loader import load_config
from report.main import RUN_ROW, run_report
from driver.run import run_pipeline
from tests.support import EMBEDDED_MODEL, EMBEDDED_PROMPTS
from tests.support.cli import run_cli
from tests.support.files import read_arrow as _read

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PRICE = 3.5


def _args(run_url, out=None, baseline=None, price=PRICE, config=None) -> argparse.Namespace:
    return argparse.Namespace(run_url=str(run_url), out=str(out) if out else None,
                              baseline=str(baseline) if baseline else None, price_per_gpu_hour=price,
                              config=str(config) if config else None)


@pytest.fixture(scope="module")
def runs(ray_cluster, tmp_path_factory):
    """Two shards (6 prompts + 1 bad row, 6 prompts) decoded twice: default SchED on a CPU actor, and
    the fixed-step baseline (decode.policy=[none]) on an actor holding one (fake) GPU."""
    base = tmp_path_factory.mktemp("report-runs")
    lines = (EMBEDDED_PROMPTS / "shard-000.jsonl").read_text().splitlines()
    shards = base / "in"
    shards.mkdir()
    (shards / "part-a.jsonl").write_text("\n".join(lines[:6] + [json.dumps({"id": "bad", "prompt": ""})]) + "\n")
    (shards / "part-b.jsonl").write_text("\n".join(lines[6:12]) + "\n")
    common = [f"input.url={shards}", f"model.path={EMBEDDED_MODEL}", "progress=false"]
    run = base / "run"
    run_pipeline(load_config("configs/default.yaml", common + [f"output.url={run}"]))
    baseline = base / "baseline"
    run_pipeline(load_config("configs/default.yaml", common + [
        f"output.url={baseline}", "decode.policy=[none]", "actors.num_gpus=1", "actors.num_cpus=0"]))
    return {"run": run, "baseline": baseline, "base": base}


@pytest.fixture(scope="module")
def report(runs):
    out = runs["base"] / "report"
    result = run_report(_args(runs["run"], out))
    return {"result": result, "out": out, "summary": pq.read_table(out / "summary.parquet").to_pylist()}


def _independent(run) -> dict:
    """Per shard name: counts computed directly from the run's files (not through report.main)."""
    shards = {}
    for path in sorted((run / "outputs").glob("*.arrow")):
        name = path.stem
        out = _read(path)
        steps = _read(run / "traces" / f"{name}.steps.arrow")
        last = [r for r in steps.column("exit_reason").to_pylist() if r]
        budget = sum(out["step_budget"].to_pylist())
        shards[name] = {
            "sequences": out.num_rows, "errors": _read(run / "errors" / f"{name}.arrow").num_rows,
            "generated_tokens": sum(out["generated_tokens"].to_pylist()),
            "prompt_tokens": sum(out["prompt_tokens"].to_pylist()),
            "nfe": steps.num_rows, "step_budget": budget, "steps_saved": budget - steps.num_rows,
            "exits": dict(Counter(last)),
        }
    return shards


def test_numbers_match_traces(runs, report):
    expected = _independent(runs["run"])
    rows = {r["shard"]: r for r in report["summary"]}
    assert set(rows) == set(expected) | {RUN_ROW}
    assert expected["part-a"]["errors"] == 1 and expected["part-a"]["sequences"] == 6
    for name, e in expected.items():
        r = rows[name]
        for key in ("sequences", "errors", "generated_tokens", "prompt_tokens", "nfe", "step_budget", "steps_saved"):
            assert r[key] == e[key], (name, key)
        assert r["nfe_source"] == "traces"
        assert r["step_speedup"] == pytest.approx(e["step_budget"] / e["nfe"])
        assert json.loads(r["exit_reasons"]) == e["exits"]
        for reason, n in e["exits"].items():
            assert r[f"exit_{reason}"] == n
    total = rows[RUN_ROW]
    for key in ("sequences", "errors", "generated_tokens", "nfe", "step_budget", "steps_saved"):
        assert total[key] == sum(e[key] for e in expected.values()), key
    assert total["nfe"] < total["step_budget"]   # SchED exits early on this model

    manifest = json.loads((runs["run"] / "_manifest.json").read_text())
    assert total["wall_s"] == pytest.approx(manifest["wall_s"])
    assert total["accelerator"] == "cpu-actor"      # actors.num_gpus = 0: CPU actor-seconds
    busy = sum(a["elapsed_s"] for a in manifest["actors"].values())
    assert total["accelerator_s"] == pytest.approx(busy, rel=1e-6)
    assert sum(rows[n]["accelerator_s"] for n in expected) == pytest.approx(busy, rel=1e-6)
    assert total["cost"] == pytest.approx(busy / 3600 * PRICE, rel=1e-6)
    assert total["cost_per_1k_generated_tokens"] == pytest.approx(total["cost"] / total["generated_tokens"] * 1000)
    load = sum(a["load_s"] for a in manifest["actors"].values())
    assert load > 0 and total["startup_accelerator_s"] == pytest.approx(load, rel=1e-6)
    assert total["startup_cost"] == pytest.approx(load / 3600 * PRICE, rel=1e-6)
    csv = (report["out"] / "summary.csv").read_text().splitlines()
    assert len(csv) == 1 + len(expected) + 1 and csv[-1].startswith(f'"{RUN_ROW}"')


def _check_pngs_and_html(out_dir) -> list[str]:
    pngs = sorted(p.name for p in out_dir.glob("*.png"))
    assert len(pngs) == 4, pngs
    for name in pngs:
        data = (out_dir / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 1024, name
        img = mpimg.imread(out_dir / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0, name
    html = (out_dir / "report.html").read_text()
    for name in pngs:
        assert f"src='{name}'" in html, name
    cells = re.findall(r"<td>(.*?)</td>", html)
    assert cells and not [c for c in cells if "{" in c or '"' in c], "raw JSON in a table cell"
    decimals = [c.replace(",", "").lstrip("-") for c in cells if re.fullmatch(r"-?[\d,]*\.\d+", c)]
    assert not [c for c in decimals if len(c.replace(".", "").lstrip("0")) > 4], "more than 4 significant digits"
    return pngs


def test_plots_and_html(report):
    pngs = _check_pngs_and_html(report["out"])
    assert set(pngs) == set(report["result"]["plots"].values())
    html = (report["out"] / "report.html").read_text()
    assert "Time and cost" in html and "Against the baseline" not in html


def test_baseline_agreement_and_qps(runs, tmp_path):
    result = run_report(_args(runs["run"], tmp_path / "vs", baseline=runs["baseline"]))
    run, base = runs["run"], runs["baseline"]
    outputs = {r["id"]: r["output"] for p in (run / "outputs").glob("*.arrow") for r in _read(p).to_pylist()}
    b_outputs = {r["id"]: r["output"] for p in (base / "outputs").glob("*.arrow") for r in _read(p).to_pylist()}
    nfe = Counter(i for p in (run / "traces").glob("*.steps.arrow") for i in _read(p)["id"].to_pylist())
    b_nfe = Counter(i for p in (base / "traces").glob("*.steps.arrow") for i in _read(p)["id"].to_pylist())
    ids = set(outputs) & set(b_outputs)
    assert len(ids) == 12
    agreement = sum(outputs[i] == b_outputs[i] for i in ids) / len(ids)
    speedup = sum(b_nfe[i] for i in ids) / sum(nfe[i] for i in ids)
    total = result["run"]
    assert 0.0 <= total["agreement"] <= 1.0
    assert total["agreement"] == pytest.approx(agreement)
    assert total["baseline_matched"] == 12
    assert total["step_speedup_vs_baseline"] == pytest.approx(speedup)
    assert speedup > 1.0   # the baseline runs every row to its full budget
    assert total["qps4"] == pytest.approx(speedup * agreement ** 4)
    assert "Against the baseline" in (tmp_path / "vs" / "report.html").read_text()
    on_disk = pq.read_table(tmp_path / "vs" / "summary.parquet").to_pylist()[-1]
    assert on_disk["qps4"] == pytest.approx(total["qps4"])

    # the baseline itself: no exit policy (tau/gbar NaN, margins come from token traces), GPU accounting
    b = run_report(_args(base, tmp_path / "base"))["run"]
    manifest = json.loads((base / "_manifest.json").read_text())
    assert b["accelerator"] == "gpu" and b["accelerators_per_actor"] == 1.0
    assert b["accelerator_s"] == pytest.approx(sum(a["elapsed_s"] for a in manifest["actors"].values()), rel=1e-6)
    assert b["steps_saved"] == 0 and b["nfe"] == b["step_budget"]
    _check_pngs_and_html(tmp_path / "base")


def test_report_on_s3(runs, report, s3_server, s3fs_client, tmp_path):
    bucket = "report-e2e"
    if not s3fs_client.exists(bucket):
        s3fs_client.mkdir(bucket)
    try:
        s3fs_client.put(str(runs["run"]) + "/", f"{bucket}/runs/sched/", recursive=True)
        assert s3fs_client.exists(f"{bucket}/runs/sched/_manifest.json")
        assert s3fs_client.exists(f"{bucket}/runs/sched/traces/part-a.steps.arrow")
        config = tmp_path / "s3.yaml"
        config.write_text(f"storage:\n  endpoint_url: {s3_server}\n")
        result = run_report(_args(f"s3://{bucket}/runs/sched", tmp_path / "s3-report", config=config))
        local = {r["shard"]: r for r in report["summary"]}
        for r in pq.read_table(tmp_path / "s3-report" / "summary.parquet").to_pylist():
            for key in ("sequences", "errors", "nfe", "step_budget", "steps_saved", "generated_tokens",
                        "exit_reasons", "accelerator_s", "cost"):
                assert r[key] == pytest.approx(local[r["shard"]][key]), (r["shard"], key)
        _check_pngs_and_html(tmp_path / "s3-report")
        assert result["run"]["nfe"] == local[RUN_ROW]["nfe"]
        # an object-store --out: the files are uploaded there
        run_report(_args(f"s3://{bucket}/runs/sched", f"s3://{bucket}/reports/sched", config=config))
        uploaded = {p.rsplit("/", 1)[-1] for p in s3fs_client.ls(f"{bucket}/reports/sched")}
        assert {"summary.parquet", "summary.csv", "report.html"} | set(result["plots"].values()) <= uploaded
    finally:
        s3fs_client.rm(bucket, recursive=True)


def test_default_out_is_under_a_local_run(runs, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(runs["run"], copy)
    run_report(_args(copy))
    assert (copy / "report" / "report.html").exists() and (copy / "report" / "summary.csv").exists()


@pytest.mark.slow
def test_cli_end_to_end(runs, tmp_path):
    out = tmp_path / "cli"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = run_cli("report", str(runs["run"]), "--out", str(out), "--price-per-gpu-hour", "1.5", env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "steps saved" in proc.stdout and "cost per 1k generated tokens" in proc.stdout
    assert {"summary.parquet", "summary.csv", "report.html"} <= set(os.listdir(out))
    assert pq.read_table(out / "summary.parquet").to_pylist()[-1]["price_per_hour"] == 1.5
    bad = run_cli("report", str(tmp_path / "missing"), "--out", str(out), env=env, timeout=300)
    assert bad.returncode == 2 and "no run at" in bad.stderr


def test_run_without_traces_uses_outputs_nfe(runs, tmp_path):
    """Shards decoded with decode.trace=off (as their fingerprints record it): NFE comes from the outputs'
    nfe column, the trace files are not needed, plots still render."""
    copy = tmp_path / "notrace"
    shutil.copytree(runs["run"], copy)
    shutil.rmtree(copy / "traces")
    manifest = json.loads((copy / "_manifest.json").read_text())
    for shard in manifest["shards"].values():
        shard["fingerprint"]["config"]["decode.trace"] = "off"
    (copy / "_manifest.json").write_text(json.dumps(manifest))
    total = run_report(_args(copy, tmp_path / "out"))["run"]
    nfe = sum(sum(_read(p)["nfe"].to_pylist()) for p in (copy / "outputs").glob("*.arrow"))
    assert total["nfe_source"] == "outputs" and total["nfe"] == nfe
    assert total["steps_saved"] == total["step_budget"] - nfe
    _check_pngs_and_html(tmp_path / "out")


def test_report_reads_each_shards_own_settings(runs, tmp_path):
    """A manifest whose command config disagrees with the shards (what an old resume wrote): the report
    shows the settings the shards' fingerprints recorded, and warns when shards differ."""
    copy = tmp_path / "misstated"
    shutil.copytree(runs["run"], copy)
    manifest = json.loads((copy / "_manifest.json").read_text())
    manifest["config"]["decode"].update(policy=["none"], steps=8)
    (copy / "_manifest.json").write_text(json.dumps(manifest))
    run_report(_args(copy, tmp_path / "out"))
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<th>policy</th><td>sched</td>" in html and "<td>16 / 16 / 16</td>" in html
    manifest["shards"]["part-b"]["fingerprint"]["config"]["decode.steps"] = 8
    (copy / "_manifest.json").write_text(json.dumps(manifest))
    result = run_report(_args(copy, tmp_path / "out2"))
    assert any("different settings (decode.steps)" in w for w in result["warnings"])
