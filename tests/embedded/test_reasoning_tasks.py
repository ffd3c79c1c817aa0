"""The reasoning workload's committed data: the held-out set is disjoint from training, answers have the
promised lengths and span >= 2 blocks, every answer is the function of its prompt the task says (checked
by an independent re-computation), the metric scores exactly, and the tokenizer is lossless. No training,
no reasoning-gym (the data was generated once with it; make_data.py checked its `score_answer`)."""
from __future__ import annotations

import json
import re
from functools import lru_cache

import pytest

from embedded.evaluate import WORKLOADS, load_heldout
from embedded.reasoning import tasks
from embedded.reasoning.make_data import HERE
from embedded.reasoning.tokenizer import build_tokenizer
from embedded.reasoning.train import PROBE, load_pool


@lru_cache(maxsize=1)
def pool() -> list[dict]:
    return load_pool()


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _solve(prompt: str) -> str:
    """The answer recomputed from the prompt alone (not through tasks.render)."""
    head, body = prompt.rstrip("=").replace(",__", "").split(":")
    if head == "sum":
        total, out = 0, []
        for term in body.split(","):
            total += int(term)
            out.append(("-" if total < 0 else "+") + f"{abs(total):02d}")
        return "".join(out)
    values = sorted((int(v) for v in body.split(",")), reverse=head == "dsc")
    return ",".join(f"{v:02d}" for v in values)


def test_heldout_is_disjoint_from_training_and_large_enough():
    heldout = load_heldout(None, "reasoning")
    assert len(heldout) >= 500 and {r["task"] for r in heldout} == set(tasks.TASKS)
    assert len({r["prompt"] for r in heldout}) == len(heldout)
    train = {r["prompt"] for r in pool()}
    assert not train & {r["prompt"] for r in heldout}
    tspd = {r["prompt"] for r in _jsonl(HERE / "tspd" / "prompts.jsonl")}
    shards = {r["prompt"] for s in sorted((HERE / "prompts").glob("shard-*.jsonl")) for r in _jsonl(s)}
    assert len(tspd) >= 400 and len(shards) == 128
    assert not train & tspd and not train & shards
    assert len(pool()) > 100 * PROBE   # the trainer's probe (the pool's tail) is a small held-back slice


@pytest.mark.parametrize("source", ["heldout", "train"])
def test_answers_follow_from_prompts(source):
    rows = load_heldout(None, "reasoning") if source == "heldout" else pool()[::97]
    for r in rows:
        assert _solve(r["prompt"]) == r["answer"], r
        assert tasks.well_formed(r["task"], r["answer"])
        assert r["prompt"].startswith("sum:" if r["task"] == "chain_sum" else ("asc:", "dsc:"))
        assert len(r["prompt"]) == 4 + 3 * tasks.SLOTS                # the fixed-width form


def test_answer_lengths_span_at_least_two_blocks():
    lengths = [len(r["answer"]) for r in load_heldout(None, "reasoning")]
    assert 8 <= min(lengths) and max(lengths) + 1 <= tasks.GEN_LENGTH <= 64
    assert min(lengths) + 1 > tasks.BLOCK_LENGTH                      # answer + [EOS] spans >= 2 blocks
    assert max(lengths) + 1 > 3 * tasks.BLOCK_LENGTH                  # and some reach the 4th
    assert len(set(lengths)) >= 10


def test_renderer_and_verifier_agree():
    prompt, answer = tasks.render_chain_sum("4 + 1 - 7 + 7 - 9")
    assert (prompt, answer) == ("sum:+4,+1,-7,+7,-9" + ",__" * 5 + "=", "+04+05-02+05-04")
    assert tasks.library_answer("chain_sum", answer) == "-4"          # the library's answer: 4 + 1 - 7 + 7 - 9
    entry = {"metadata": {"source_dataset": "number_sorting", "original_numbers": ["56.0", "9.0", "25.0"],
                          "direction": "descending"}}
    assert tasks.render(entry) == ("dsc:56,09,25" + ",__" * 7 + "=", "56,25,09")
    assert tasks.library_answer("number_sorting", "56,25,09") == "['56', '25', '9']"
    assert tasks.exact_match(" +04+05 ", "+04+05") and not tasks.exact_match("+04+06", "+04+05")
    assert not tasks.exact_match("56,25", "56,25,09")
    with pytest.raises(ValueError):
        tasks.render_number_sorting(["1.5"], "ascending")
    assert WORKLOADS["reasoning"].exact_match is tasks.exact_match


def test_tokenizer_round_trips_every_character():
    tok = build_tokenizer()
    assert (tok.pad_token_id, tok.mask_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    ids = tok(tasks.ALPHABET)["input_ids"]
    assert len(ids) == len(tasks.ALPHABET) == len(set(ids)) and tok.unk_token_id not in ids
    assert tok.decode(ids) == tasks.ALPHABET
    for r in load_heldout(None, "reasoning"):
        text = r["prompt"] + r["answer"]
        assert re.fullmatch(f"[{re.escape(tasks.ALPHABET)}]+", text)
        ids = tok(text)["input_ids"]
        assert len(ids) == len(text) and tok.decode(ids) == text
