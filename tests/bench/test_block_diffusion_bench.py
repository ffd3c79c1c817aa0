"""bench/block_diffusion.py kept honest on CPU: its generate() baseline is the released LLaDA2 loop (the goldens that
code recorded), its random checkpoint has LLaDA2's own layout, and its quick run decodes identical tokens on
every path."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import bench.common
from bench import block_diffusion as bd


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_transcribed_generate_reproduces_the_released_goldens():
    got = bd.check_against_goldens()
    assert got["mismatched"] == 0 and got["rows"] == 30 and got["greedy_rows"] == 20


def test_the_checkpoint_has_llada2s_own_layout():
    """At the tiny golden checkpoint's sizes, the benchmark's weights have exactly its names and shapes, and its
    config.json every field of that one's."""
    tiny = json.loads((bd.TINY / "config.json").read_text())
    shape = {k: tiny[k] for k in bd.CPU_SHAPE}
    with safe_open(str(bd.TINY / "model.safetensors"), "pt") as f:
        want = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    got = {k: tuple(v.shape) for k, v in bd.llada2_weights(shape, torch.float32).items()}
    assert got == want
    assert set(tiny) - set(bd.llada2_config(shape)) == {"transformers_version"}


def test_quick_run_decodes_identical_tokens_on_every_path(tmp_path, monkeypatch):
    monkeypatch.setattr(bench.common, "RESULTS", tmp_path)
    bd.main(["--quick", "--skip-check", "--threads", "1", "--name", "bd_test"])
    out = json.loads((tmp_path / "bd_test.json").read_text())
    assert out["cache"]["identical"] == {"cache_vs_generate": 1.0, "recompute_vs_generate": 1.0,
                                         "cache_vs_recompute": 1.0, "all_decoded": True}
    assert out["refill"]["identical"] and out["refill"]["all_full"]
    assert {r["mode"] for r in out["rows"]} >= {"generate() loop, batch 1", "engine cache, static B",
                                                "slot refill, B slots"}
    assert all(r["seconds"] > 0 for r in out["rows"]) and set(out["ratios"]) == {
        "cache_vs_generate", "recompute_vs_generate", "cache_vs_recompute", "refill_vs_static",
        "refill_vs_engine_static"}
    assert out["model"]["parameters"] > 0 and out["step_cost"]["ms_per_step"]
