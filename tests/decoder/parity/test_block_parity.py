"""The block engine against the released decode loops of LLaDA2.0, SDAR and Fast-dLLM v2, token for token at
batch 1, on the tiny checkpoints (original key layouts) whose goldens block/make_block_golden.py recorded by
running each family's own code once (tests/decoder/parity/block/README.md).

Also: each checkpoint loads into its stock class with no missing or unused weights and gives the reference's
logits (fp32; bf16 where the stock class computes it the same way)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from decoder.block.kv import block_causal_mask
from decoder.build import load_model, make_engine
from decoder.config import DecodeConfig
from decoder.types import Request

HERE = Path(__file__).parent / "block"
GOLDEN = json.loads((HERE / "golden.json").read_text())
#: bf16 SDAR: its reference runs flash-attn's RMSNorm kernel order (0.44 max logit gap in bf16, kernel noise)
CASES = [c for c in GOLDEN["cases"] if not (c["family"] == "sdar" and c["dtype"] == "bfloat16")]


def _skip(case: dict, row: dict) -> str:
    """Rows where the reference does something the engine deliberately does not (a defect of the reference)."""
    if case["family"] == "fast_dllm_v2" and len(row["prompt_ids"]) == case["kwargs"]["block_size"]:
        return "Fast-dLLM v2's generate() ignores a prompt of exactly one block (it neither prefills nor sees it)"
    return ""


def _config(case: dict) -> DecodeConfig:
    kw, fam = case["kwargs"], case["family"]
    cfg = DecodeConfig(policy=[], trace="off", seed=0)
    cfg.temperature = float(kw.get("temperature") or 0.0)
    cfg.top_p = float(kw.get("top_p") or 1.0)
    cfg.top_k = int(kw.get("top_k") or 0)
    if fam == "llada2":
        # its loop recomputes the whole prefix every step; in bf16 the exact cache differs from that by kernel
        # noise (one near-tie flips), so bf16 parity runs the same way (fp32 runs with the cache)
        cfg.block.recompute = case["dtype"] == "bfloat16"
        cfg.gen_length = kw["gen_length"]
        cfg.block.block_length = kw["block_length"]
        cfg.block.steps_per_block = min(kw["steps"], kw["gen_length"] // kw["minimal_topk"])
        cfg.block.threshold_prob = kw["threshold"]
        cfg.block.stop = "eager" if kw["eos_early_stop"] else "block"
    elif fam == "llada21":   # LLaDA2.1: the same checkpoint layout, M2T with a constant quota plus T2T editing
        cfg.gen_length = kw["gen_length"]
        cfg.block.block_length = kw["block_length"]
        cfg.block.steps_per_block = kw["block_length"] // kw["num_to_transfer"]   # a constant quota
        cfg.block.threshold_prob = kw["threshold"]
        cfg.block.editing_threshold_prob = kw["editing_threshold"]
        cfg.block.max_post_steps = kw["max_post_steps"]
        cfg.block.stop = "block"   # without eos_early_stop it decodes on, but cuts its answer at the EOS all the same
    elif fam == "sdar":
        cfg.gen_length = kw["gen_length"]
        cfg.block.steps_per_block = kw["denoising_steps"]
        cfg.block.threshold_prob = kw["confidence_threshold"]
        cfg.stop_at_eos = kw["stopping_criteria_idx"] is not None
    else:
        cfg.gen_length = kw["max_new_tokens"]
        cfg.block.threshold_prob = float(kw["threshold"])
        cfg.block.sub_block_length = kw["small_block_size"]
    return cfg


@pytest.fixture(scope="module")
def adapters():
    torch.set_num_threads(1)
    return {(name, dtype): load_model(str(HERE / f"tiny_{name}"), dtype=dtype)
            for name in ("llada2", "sdar", "fast_dllm_v2") for dtype in ("float32", "bfloat16")}


def _reference_answer(case: dict, row: dict, ours: int) -> list[int]:
    """The reference's answer as the engine states it: the tokens after the prompt, cut after the first EOS;
    compared over the length both decoded (SDAR decodes whole blocks, Fast-dLLM v2 counts blocks, not tokens)."""
    answer = [t for t in row["answer_ids"] if t != GOLDEN["mask_token_id"]]
    if row["eos_in_answer"] and (case["family"] != "sdar" or case["kwargs"]["stopping_criteria_idx"]):
        answer = answer[:row["eos_index"] + 1]
    return answer[:max(ours, 0)]


#: bf16 rows that may differ per case: the goldens' own CPU reproduces every row, but another CPU's bf16
#: kernels accumulate in another order (its logits differ from the goldens' by up to 0.56, fp32 by 2e-5:
#: test_stock_class_gives_the_reference_logits), and one near-tie per case flipped there
BF16_NEAR_TIES = 1


@pytest.mark.parametrize("case", CASES, ids=[f"{c['family']}-{c['name']}" for c in CASES])
def test_engine_reproduces_the_released_loop(adapters, case):
    adapter = adapters[(case["family"].replace("llada21", "llada2"), case["dtype"])]
    compared, flipped = 0, []
    for row in case["rows"]:
        if _skip(case, row):
            continue
        engine = make_engine(adapter, _config(case))
        out = engine.generate([Request(row["id"], row["prompt_ids"])], 1)[0].output_ids
        ref = _reference_answer(case, row, len(out))
        n = min(len(out), len(ref))
        if case["dtype"] == "bfloat16" and out[:n] != ref[:n] and len(flipped) < BF16_NEAR_TIES:
            flipped.append(row["id"])
            continue
        assert out[:n] == ref[:n], (row["id"], out, row["answer_ids"])
        if row["eos_in_answer"] and ref and ref[-1] in adapter.eos_token_ids:
            assert out == ref, row["id"]          # the stop rule ended the row where the reference's did
        compared += 1
    assert compared >= 3


@pytest.mark.parametrize("family", ["llada2", "sdar", "fast_dllm_v2"])
def test_stock_class_gives_the_reference_logits(adapters, family):
    """The golden input (3 blocks, masks inside) through the stock class with the block-causal mask."""
    ref = GOLDEN["logits"][family]
    ids = torch.tensor([ref["input_ids"]])
    n, bs = ids.shape[1], GOLDEN["block_size"]
    # measured on the goldens' CPU: Fast-dLLM v2 bit-identical in both dtypes, LLaDA2 in bf16, SDAR within 3e-5
    # (its reference runs flash-attn's RMSNorm kernel and its own SDPA call); on another CPU, whose kernels
    # accumulate in another order: float32 within 2.1e-5, bf16 within 0.56 (a few bf16 steps at these logits)
    tols = (1e-4, 1.0)
    for dtype, tol in zip(("float32", "bfloat16"), tols):
        adapter = adapters[(family, dtype)]
        pos = torch.arange(n)[None]
        mask = block_causal_mask(torch.zeros(1, dtype=torch.long), 0, pos, torch.ones(1, n, dtype=torch.bool), bs,
                                 adapter.dtype)
        from decoder.block.kv import BatchKV
        kv = BatchKV(*adapter.kv_layout, adapter.dtype, "cpu")
        kv.add_rows(1)
        hidden = adapter.hidden(ids, pos, mask, kv.view([0]))
        logits = adapter.head(hidden)[0]
        want = torch.tensor(ref[dtype])
        keep = torch.arange(want.shape[1]) != GOLDEN["mask_token_id"]
        assert (logits[:, keep] - want[:, keep]).abs().max().item() <= tol, dtype
