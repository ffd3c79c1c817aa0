"""DiffusionGemma end to end: moto S3 -> Ray Data -> moto S3 on a tiny random checkpoint (family auto-detected),
with an image row refused per row; outputs, traces (canvas columns) and the report are written."""
from __future__ import annotations

import argparse
import json
import shutil

import pytest

from settings.loader import load_config
from report.main import run_report
from driver.run import run_pipeline
from tests.support import EMBEDDED_MODEL
from tests.support.files import read_arrow
from tests.support.tiny_dgemma import CANVAS, save_tiny

ROWS = [{"id": f"p{i}", "prompt": p} for i, p in enumerate(["copy:abc=", "rev:hello=", "sort:dcba=", "next:ab="])]
ROWS += [{"id": "short", "prompt": "copy:x=", "max_new_tokens": 5},
         {"id": "image", "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]}]


@pytest.fixture
def tiny_model(tmp_path):
    path = save_tiny(str(tmp_path / "dgemma"))
    for name in ("tokenizer.json", "tokenizer_config.json"):   # the embedded byte-level tokenizer: 44 ids < vocab
        shutil.copy(EMBEDDED_MODEL / name, tmp_path / "dgemma" / name)
    return path


@pytest.mark.slow   # the default run's time budget: the canvas engine's tests cover the family without Ray
def test_dgemma_pipeline_s3(ray_cluster, s3_server, s3fs_client, tiny_model, tmp_path):
    bucket = "dgemma-e2e"
    if not s3fs_client.exists(bucket):
        s3fs_client.mkdir(bucket)
    s3fs_client.pipe(f"{bucket}/in/part-a.jsonl", ("\n".join(json.dumps(r) for r in ROWS) + "\n").encode())
    try:
        cfg = load_config("configs/s3.yaml", [
            f"input.url=s3://{bucket}/in/", f"output.url=s3://{bucket}/out", f"storage.endpoint_url={s3_server}",
            f"model.path={tiny_model}", "decode.policy=[dgemma,sched]", "decode.gen_length=16",
            "decode.dgemma.max_denoising_steps=3", "decode.max_batch_size=3", "actors.num_cpus=0.5",
            "progress=false", "run.max_error_fraction=0.5"])
        manifest = run_pipeline(cfg)
        fs = s3fs_client
        out = read_arrow(f"{bucket}/out/outputs/part-a.arrow", fs).to_pylist()
        err = read_arrow(f"{bucket}/out/errors/part-a.arrow", fs).to_pylist()
        assert sorted(r["id"] for r in out) == ["p0", "p1", "p2", "p3", "short"]
        assert [e["id"] for e in err] == ["image"] and "text only" in err[0]["error"]
        for r in out:
            canvases = 1 if r["id"] == "short" else 2
            assert len(r["output_ids"]) == (5 if r["id"] == "short" else 16)
            assert r["nfe"] == r["steps_taken"] <= r["step_budget"] == 3 * canvases
            assert r["encoder_passes"] >= 1 and r["refreshes"] == 0
        steps = read_arrow(f"{bucket}/out/traces/part-a.steps.arrow", fs)
        tokens = read_arrow(f"{bucket}/out/traces/part-a.tokens.arrow", fs)
        assert steps.num_rows == sum(r["steps_taken"] for r in out)
        assert tokens.num_rows == steps.num_rows * CANVAS
        assert steps["canvas"].null_count == 0 and tokens["settled_step"].null_count == 0
        assert manifest["totals"]["outputs"] == 5
        args = argparse.Namespace(run_url=f"s3://{bucket}/out", out=str(tmp_path / "report"), baseline=None,
                                  price_per_gpu_hour=2.0, config=None)
        (tmp_path / "s3.yaml").write_text(f"storage:\n  endpoint_url: {s3_server}\n")
        args.config = str(tmp_path / "s3.yaml")
        result = run_report(args)
        run = result["run"]
        assert run["nfe"] == sum(r["nfe"] for r in out) and run["encoder_passes"] == sum(r["encoder_passes"] for r in out)
        assert (tmp_path / "report" / "report.html").exists()
    finally:
        s3fs_client.rm(bucket, recursive=True)
