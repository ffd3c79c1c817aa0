"""The long-form task generators are seeded and pure, their shapes are what the workload promises, every
answer is a function of the prompt, and the metrics score exactly."""
from __future__ import annotations

import random
import statistics

import pytest

from embedded.longform.tasks import (FILLER, LABELS, LEAD_WORDS, SLOT_WORDS, TASKS, WORDS, Shape, exact_match,
                                     make_document, make_example, sample_examples, token_f1)
from embedded.longform.tokenizer import build_tokenizer


def test_seeded_and_pure():
    assert sample_examples(7, 50) == sample_examples(7, 50)
    assert sample_examples(7, 50) != sample_examples(8, 50)


def test_shapes_are_summarization_shaped():
    tok = build_tokenizer()
    ex = sample_examples(3, 400)
    prompt = [len(tok(e.prompt)["input_ids"]) for e in ex]
    answer = [len(tok(e.answer)["input_ids"]) for e in ex]
    assert statistics.median(prompt) >= 256 and min(prompt) >= 256   # 5 fixed-width sections: 257-258 tokens
    assert 15 <= min(answer) and max(answer) <= 128 and statistics.median(answer) >= 32
    assert sum(a > 32 for a in answer) / len(answer) > 0.5            # most span >= 2 blocks of 32
    for e in ex:  # word-level, lossless: nothing is unknown and decoding gives the text back
        ids = tok(e.answer)["input_ids"]
        assert tok.unk_token_id not in ids and tok.decode(ids) == e.answer


def _sections(body: list[str]) -> dict[str, list[str]]:
    out, cur = {}, None
    for w in body:
        if w in LABELS:
            cur = w
            out[cur] = []
        elif cur and w != FILLER:
            out[cur].append(w)
    return out


@pytest.mark.parametrize("task", TASKS)
def test_answer_is_a_function_of_the_prompt(task):
    rng = random.Random(11)
    for _ in range(50):
        e = make_example(rng, task)
        words = e.prompt.split()
        assert words[0] == task and words[-1] == "="
        body = [w for w in words if w not in LABELS and w not in (FILLER, "=", *TASKS)]
        assert len(body) == len(set(body)) and "." not in words     # every word once, no repeated punctuation
        secs = _sections(words[2 if task == "section" else 1:-1])   # the body: after the instruction, before `=`
        if task == "ends":   # the first words of the first and of the last section: both ends of the prompt
            (first, ws0), (last, wsn) = list(secs.items())[0], list(secs.items())[-1]
            want = [first, *ws0[:LEAD_WORDS], last, *wsn[:LEAD_WORDS]]
            assert first == LABELS[0] and len(secs) >= 3 and len(want) == 2 * (1 + LEAD_WORDS)
        else:
            want = [words[1], *secs[words[1]]]
        assert e.answer.split() == want


def test_sections_have_a_fixed_width_so_every_label_sits_at_a_fixed_place():
    rng = random.Random(13)
    for task in TASKS * 20:
        words = make_example(rng, task).prompt.split()
        head = 2 if task == "section" else 1
        labels = [i for i, w in enumerate(words) if w in LABELS and i >= head]
        assert labels == [head + k * (SLOT_WORDS + 1) for k in range(len(labels))]
        assert len(words) == head + len(labels) * (SLOT_WORDS + 1) + 1
        assert FILLER not in make_example(random.Random(len(words)), task).answer.split()


def test_documents_never_need_more_words_than_the_pool():
    rng = random.Random(5)
    wide = Shape(sections=(8, 8), sentences=(1, 1), words=(60, 70))   # 480-560 words: some draws redrawn
    for _ in range(20):
        doc = make_document(rng, wide)
        words = [w for sec in doc for s in sec for w in s]
        assert len(words) <= len(WORDS) and len(set(words)) == len(words)


def test_metrics():
    assert exact_match("§1 a b .", " §1  a b . ") and not exact_match("§1 a b .", "§1 a .")
    assert token_f1("a b c d", "a b c d") == 1.0 and token_f1("x y", "a b") == 0.0
    assert token_f1("a b", "a b c d") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert token_f1("", "") == 1.0
