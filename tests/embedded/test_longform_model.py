"""The committed long-form checkpoint loads with from_pretrained, fits its budget, and solves held-out
documents at the full step budget (no early exit, no cache) through the project's engine."""
from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForCausalLM

from embedded.evaluate import WORKLOADS, accuracy, load_heldout
from stages.config import load_config
from stages.decode.adapters import load_model
from stages.decode.offline import decode_prompts
from stages.preprocess import load_tokenizer

MODEL = WORKLOADS["longform"].model


def test_checkpoint_loads_and_fits_the_budget():
    model = AutoModelForCausalLM.from_pretrained(MODEL)
    assert model.config.is_causal is False and model.config.mask_token_id == 1
    assert model.config.max_position_embeddings >= 512
    assert sum(f.stat().st_size for f in Path(MODEL).iterdir()) <= 25 * 2 ** 20


def test_full_budget_decoding_solves_held_out_documents():
    rows = load_heldout(12, "longform")
    cfg = load_config("configs/longform.yaml", ["decode.policy=[none]", "decode.trace=off"]).decode
    run = decode_prompts(load_model(str(MODEL)), load_tokenizer(str(MODEL)), [r["prompt"] for r in rows], cfg, 12)
    assert {r["task"] for r in rows} == {"ends", "section"}
    assert min(len(r["prompt"].split()) for r in rows) >= 300          # long prompts, multi-block answers
    assert max(len(r["prompt"].split()) for r in rows) >= 400          # of varying length (notes)
    assert max(len(r["answer"].split()) for r in rows) > 64            # answers of 3 blocks among them
    assert accuracy(run.texts, rows, "longform") >= 0.9                 # measured: 96 of the first 96 (gen 128)
