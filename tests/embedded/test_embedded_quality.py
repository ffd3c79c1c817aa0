"""The committed checkpoint loads with from_pretrained and actually solves held-out tasks."""
from __future__ import annotations

from transformers import AutoModelForCausalLM

from embedded.evaluate import accuracy, load_heldout
from settings.loader import load_config
from decoder.build import load_model
from decoder.offline import decode_prompts
from stages.preprocess import load_tokenizer
from tests.support import EMBEDDED_MODEL


def test_checkpoint_loads_with_from_pretrained():
    model = AutoModelForCausalLM.from_pretrained(EMBEDDED_MODEL)
    assert model.config.is_causal is False and model.config.mask_token_id == 1


def test_baseline_decoding_is_mostly_exact():
    rows = load_heldout(40)
    cfg = load_config(None, ["decode.policy=[none]", "decode.trace=off"]).decode
    run = decode_prompts(load_model(str(EMBEDDED_MODEL)), load_tokenizer(str(EMBEDDED_MODEL)),
                         [r["prompt"] for r in rows], cfg)
    assert accuracy(run.texts, rows) >= 0.9
    assert all(r.steps_taken == 16 for r in run.results)


def test_sched_exits_early_on_the_embedded_model():
    rows = load_heldout(40)
    cfg = load_config(None, ["decode.policy=[sched]", "decode.sched.aggregate=min", "decode.sched.schedule=exp",
                             "decode.sched.k=16", "decode.trace=off"]).decode
    run = decode_prompts(load_model(str(EMBEDDED_MODEL)), load_tokenizer(str(EMBEDDED_MODEL)),
                         [r["prompt"] for r in rows], cfg)
    assert sum(r.steps_taken for r in run.results) < 16 * len(rows) / 2
    assert accuracy(run.texts, rows) >= 0.9
