"""The reasoning workload's committed data: the held-out set is disjoint from training, answers have the
promised lengths and span >= 2 blocks, every answer is a palindrome of its prompt's letters (checked by an
independent restatement of the rule), the metric is the library's rule, and the tokenizer is lossless. No training,
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


def _valid(answer: str, prompt: str) -> bool:
    """reasoning-gym's rule, restated from the prompt alone (not through tasks.correct)."""
    letters = prompt[len("pal:"):-1]
    return answer == "".join(reversed(answer)) and "".join(sorted(answer)) == letters


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
def test_answers_are_palindromes_of_the_prompt_letters(source):
    rows = load_heldout(None, "reasoning") if source == "heldout" else pool()[::97]
    for r in rows:
        assert _valid(r["answer"], r["prompt"]), r
        assert tasks.well_formed(r["task"], r["answer"]) and tasks.correct(r["answer"], r["answer"])
        assert r["prompt"] == f"pal:{''.join(sorted(r['answer']))}=" and tasks.letters_of(r["prompt"]) == "".join(sorted(r["answer"]))


def test_answer_lengths_span_at_least_two_blocks():
    lengths = {len(r["answer"]) for r in load_heldout(None, "reasoning")}
    assert lengths == {12} and 12 + 1 <= tasks.GEN_LENGTH <= 64
    assert 12 + 1 > tasks.BLOCK_LENGTH                                # answer + [EOS] spans >= 2 blocks


def test_many_answers_are_right():
    """The metric accepts every palindrome of the prompt's letters, not only the library's one."""
    reference = "kjkmddddmkjk"
    for right in ("mkjkddddkjkm", "ddkjkmmkjkdd", " KJKMDDDDMKJK "):
        assert tasks.correct(right, reference)
    for wrong in ("kjkmddddmkj", "kjkmddddmkjj", "jkkmddddmkjk", "", "kjkmdd"):
        assert not tasks.correct(wrong, reference)
    assert WORKLOADS["reasoning"].exact_match is tasks.correct
    with pytest.raises(ValueError):
        tasks.render({"metadata": {"source_dataset": "chain_sum"}})
    with pytest.raises(ValueError):
        tasks.letters_of("sum:abc=")


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
