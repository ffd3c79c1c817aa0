"""bench/gpu_all.py, the one GPU script, kept alive on CPU: `--smoke` runs every part's code path at tiny
shapes (each part in its own process, as on the GPU), and `--dry-run` plans the GPU sizes within budget."""
from __future__ import annotations

import json
import subprocess
import sys

from bench import gpu_all
from bench.common import ROOT


def test_dry_run_plans_every_part_within_the_budget(capsys):
    plan = gpu_all.dry_run()
    assert [r["part"] for r in plan] == list(gpu_all.ORDER)
    assert 0 < sum(r["estimate_s"] for r in plan) <= gpu_all.BUDGET_S
    assert plan[1]["sizes"]["batches"] == [1, 8, 32, 64] and plan[4]["sizes"]["prompts"] == 2000
    assert "within" in capsys.readouterr().out


def test_smoke_runs_every_part(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench.gpu_all", "--smoke",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu_smoke_summary.json").read_text())
    status = {p["part"]: p["status"] for p in summary["parts"]}
    assert set(status) == set(gpu_all.ORDER)
    assert all(s == "ok" for s in status.values()), status
    correctness = json.loads((tmp_path / "gpu_correctness.json").read_text())["rows"]
    assert correctness[0]["identical_to_plain_loop"] and all(r["all_decoded"] for r in correctness)
    llada = json.loads((tmp_path / "gpu_llada8b.json").read_text())["rows"]
    assert {r["mode"] for r in llada} == set(gpu_all.MODES) and all(r["tokens_per_s"] > 0 for r in llada)
    assert json.loads((tmp_path / "diffusion_gemma.json").read_text())["results"]
    block = json.loads((tmp_path / "block_diffusion.json").read_text())
    assert block["cache"]["identical"]["cache_vs_generate"] == 1.0 and block["refill"]["identical"]
    assert json.loads((tmp_path / "pipeline_overhead.json").read_text())["results"][0]["prompts"] == 32
    assert not (ROOT / "bench" / "results" / "gpu_smoke_summary.json").exists()


def test_llada8b_sizes_agree_with_the_gpu_config():
    from settings.loader import load_config
    cfg = load_config("configs/gpu.yaml")
    s = gpu_all.sizes(smoke=False)["llada8b"]
    assert cfg.model.family == "llada" and cfg.model.dtype == "bfloat16"
    assert s["block"] == cfg.decode.block_length and max(s["batches"]) == cfg.decode.max_batch_size
    assert s["shape"]["hidden_size"] == 4096 and s["shape"]["num_hidden_layers"] == 32   # LLaDA-8B
