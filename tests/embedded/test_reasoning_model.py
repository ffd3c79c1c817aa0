"""The committed reasoning checkpoint loads with from_pretrained and shows the trade early exit is about:
through the project's engine it solves held-out prompts at the full budget (one token per step) and fails
most of them at a quarter of the steps."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from decoder.build import load_model
from decoder.offline import decode_prompts
from embedded.evaluate import WORKLOADS, accuracy, load_heldout
from embedded.evaluate import main as evaluate
from settings.loader import load_config
from stages.preprocess import load_tokenizer

MODEL = WORKLOADS["reasoning"].model
ROWS = 64


def test_checkpoint_loads_and_fits_the_budget():
    model = AutoModelForCausalLM.from_pretrained(MODEL)
    assert model.config.is_causal is False and model.config.mask_token_id == 1
    assert sum(f.stat().st_size for f in Path(MODEL).iterdir()) <= 5 * 2 ** 20
    card = (Path(MODEL) / "README.md").read_text()
    assert "bash embedded/reasoning/train.sh" in card


def test_full_budget_solves_what_a_quarter_of_the_steps_does_not(capsys):
    torch.set_num_threads(1)
    result = evaluate(["--workload", "reasoning", "--limit", str(ROWS), "--threads", "1"])
    assert json.loads(capsys.readouterr().out) == result and result["rows"] == ROWS
    assert result["exact_match"] >= 0.85
    rows = load_heldout(ROWS, "reasoning")
    cfg = load_config(WORKLOADS["reasoning"].config, ["decode.policy=[none]", "decode.trace=off", "decode.steps=8"]).decode
    run = decode_prompts(load_model(str(MODEL)), load_tokenizer(str(MODEL)), [r["prompt"] for r in rows], cfg, 32)
    assert accuracy(run.texts, rows, "reasoning") <= result["exact_match"] - 0.5
