"""Block-diffusion families end to end: moto S3 -> Ray Data -> moto S3 on tiny checkpoints in each family's
original layout (family auto-detected from config.json): outputs, traces with the block column, per-row
exit policies inside blocks, and the report's cost figures."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from driver.run import run_pipeline
from report.main import run_report
from settings.loader import load_config
from tests.support import EMBEDDED_MODEL
from tests.support.files import read_arrow
from tests.support.tiny_block import save_fast_dllm_v2, save_sdar

ROWS = [{"id": f"p{i}", "prompt": p} for i, p in enumerate(["copy:abc=", "rev:hello=", "sort:dcba=", "next:ab="])]
ROWS += [{"id": "short", "prompt": "copy:x=", "max_new_tokens": 5}]
LLADA2 = Path(__file__).parents[1] / "decoder" / "parity" / "block" / "tiny_llada2"


def _checkpoint(family: str, path: Path) -> str:
    if family == "llada2":
        shutil.copytree(LLADA2, path)
        config = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**config, "block_size": 4}))   # the tiny model's blocks
    else:
        {"sdar": save_sdar, "fast_dllm_v2": save_fast_dllm_v2}[family](str(path), eos=90)
    for name in ("tokenizer.json", "tokenizer_config.json"):   # the embedded byte-level tokenizer: 44 ids < vocab
        shutil.copy(EMBEDDED_MODEL / name, path / name)
    return str(path)


@pytest.mark.parametrize("family", [pytest.param("sdar"), pytest.param("llada2", marks=pytest.mark.slow),
                                    pytest.param("fast_dllm_v2", marks=pytest.mark.slow)])
def test_block_family_pipeline_s3(ray_cluster, s3_server, s3fs_client, tmp_path, family):
    bucket = f"block-e2e-{family.replace('_', '-')}"
    if not s3fs_client.exists(bucket):
        s3fs_client.mkdir(bucket)
    s3fs_client.pipe(f"{bucket}/in/part-a.jsonl", ("\n".join(json.dumps(r) for r in ROWS) + "\n").encode())
    try:
        cfg = load_config("configs/s3.yaml", [
            f"input.url=s3://{bucket}/in/", f"output.url=s3://{bucket}/out", f"storage.endpoint_url={s3_server}",
            f"model.path={_checkpoint(family, tmp_path / family)}", "decode.policy=[sched]", "decode.gen_length=11",
            "decode.sched.tau_high_logit=3.0", "decode.sched.tau_low_logit=1.0", "decode.max_batch_size=3",
            "actors.num_cpus=0.5", "progress=false"])
        manifest = run_pipeline(cfg)
        fs = s3fs_client
        out = {r["id"]: r for r in read_arrow(f"{bucket}/out/outputs/part-a.arrow", fs).to_pylist()}
        assert sorted(out) == ["p0", "p1", "p2", "p3", "short"]
        for rid, r in out.items():
            n = 5 if rid == "short" else 11
            assert len(r["output_ids"]) == n or (r["exit_reason"] == "eos" and len(r["output_ids"]) < n), r
            assert r["nfe"] == r["steps_taken"] <= r["step_budget"] and r["encoder_passes"] >= 1
        steps = read_arrow(f"{bucket}/out/traces/part-a.steps.arrow", fs)
        tokens = read_arrow(f"{bucket}/out/traces/part-a.tokens.arrow", fs)
        assert steps.num_rows == sum(r["steps_taken"] for r in out.values())
        assert steps["block"].null_count == 0 and steps["canvas"].null_count == steps.num_rows
        assert tokens.num_rows > 0 and set(tokens["reason"].to_pylist()) >= {"threshold"} | {"schedule"} - {""}
        assert manifest["totals"]["outputs"] == 5
        (tmp_path / "s3.yaml").write_text(f"storage:\n  endpoint_url: {s3_server}\n")
        result = run_report(argparse.Namespace(run_url=f"s3://{bucket}/out", out=str(tmp_path / "report"),
                                               baseline=None, price_per_gpu_hour=2.0,
                                               config=str(tmp_path / "s3.yaml")))
        run = result["run"]
        assert run["nfe"] == sum(r["nfe"] for r in out.values())
        assert run["encoder_passes"] == sum(r["encoder_passes"] for r in out.values())
        rows_blocks = steps.group_by("id").aggregate([("block", "max")])["block_max"].to_pylist()
        assert run["blocks"] == sum(b + 1 for b in rows_blocks)
        assert run["blocks_exited"] == sum(steps["exit"].to_pylist()) > 0   # SchED closed some blocks early
        assert (tmp_path / "report" / "report.html").exists()
    finally:
        s3fs_client.rm(bucket, recursive=True)
