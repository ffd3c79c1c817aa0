"""The long-form task generators are seeded and pure, their shapes are what the workload promises, every
answer is a function of the prompt, and the metrics score exactly."""
from __future__ import annotations

import random
import statistics

import pytest

from embedded.longform.tasks import (DEFAULT, FILLER, LABELS, LEAD_WORDS, SLOT_WORDS, TASKS, WORDS, Shape, exact_match,
                                     make_document, make_example, sample_examples, token_f1)
from embedded.longform.tokenizer import build_tokenizer

N_SECTIONS = DEFAULT.sections[0]   # the form has a fixed number of sections


def test_seeded_and_pure():
    assert sample_examples(7, 50) == sample_examples(7, 50)
    assert sample_examples(7, 50) != sample_examples(8, 50)


def test_shapes_are_summarization_shaped():
    tok = build_tokenizer()
    ex = sample_examples(3, 400)
    prompt = [len(tok(e.prompt)["input_ids"]) for e in ex]
    answer = [len(tok(e.answer)["input_ids"]) for e in ex]
    assert statistics.median(prompt) >= 320 and min(prompt) >= 250   # 0-240 notes + 2 sections: 256-497 tokens
    assert sum(p >= 400 for p in prompt) / len(prompt) > 0.2 and len(set(prompt)) > 100   # varied, many >= 400
    assert 15 <= min(answer) and max(answer) <= 128 and statistics.median(answer) >= 32
    assert sum(a > 32 for a in answer) / len(answer) > 0.5            # most span >= 2 blocks of 32
    assert sum(a > 64 for a in answer) / len(answer) > 0.2            # some need 3 blocks,
    assert sum(a > 96 for a in answer) / len(answer) > 0.1 and max(answer) >= 120   # some all 4 (127 tokens)
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


def _parts(words: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(notes, instruction, form) of a prompt's words."""
    at = next(i for i, w in enumerate(words) if w in TASKS)
    head = 2 if words[at] == "section" else 1
    return words[:at], words[at:at + head], words[at + head:-1]


@pytest.mark.parametrize("task", TASKS)
def test_answer_is_a_function_of_the_prompt(task):
    rng = random.Random(11)
    for _ in range(50):
        e = make_example(rng, task)
        words = e.prompt.split()
        notes, head, form = _parts(words)
        assert head[0] == task and words[-1] == "="
        body = [w for w in words if w not in LABELS and w not in (FILLER, "=", *TASKS)]
        assert len(body) == len(set(body)) and "." not in words     # every word once, no repeated punctuation
        assert not set(notes) & set(e.answer.split())               # the notes are what a summary leaves out
        secs = _sections(form)
        if task == "ends":   # the first words of the first and of the last section: both ends of the prompt
            (first, ws0), (last, wsn) = list(secs.items())[0], list(secs.items())[-1]
            want = [first, *ws0[:LEAD_WORDS], last, *wsn[:LEAD_WORDS]]
            assert first == LABELS[0] and len(secs) == N_SECTIONS and len(want) == 2 * (1 + LEAD_WORDS)
        else:
            want = [head[1], *secs[head[1]]]
        assert e.answer.split() == want


def test_sections_have_a_fixed_width_so_every_label_sits_at_a_fixed_distance_from_the_answer():
    rng = random.Random(13)
    lengths = set()
    for task in TASKS * 30:
        words = make_example(rng, task).prompt.split()
        lengths.add(len(words))
        notes, head, form = _parts(words)
        labels = [len(words) - i for i, w in enumerate(words) if w in LABELS and i >= len(notes) + len(head)]
        assert labels == [1 + (N_SECTIONS - k) * (SLOT_WORDS + 1) for k in range(N_SECTIONS)]   # counted back from `=`
        assert DEFAULT.sections == (2, 2) and len(form) == N_SECTIONS * (SLOT_WORDS + 1)
        assert FILLER not in make_example(random.Random(len(words)), task).answer.split()
    assert len(lengths) > 20                                          # while the prompts' lengths vary


def test_documents_never_need_more_words_than_the_pool():
    rng = random.Random(5)
    wide = Shape(sections=(8, 8), sentences=(1, 1), words=(60, 70))   # 480-560 words: some draws redrawn
    for _ in range(20):
        notes, doc = make_document(rng, wide)
        words = notes + [w for sec in doc for s in sec for w in s]
        assert len(words) <= len(WORDS) and len(set(words)) == len(words)


def test_metrics():
    assert exact_match("§1 a b .", " §1  a b . ") and not exact_match("§1 a b .", "§1 a .")
    assert token_f1("a b c d", "a b c d") == 1.0 and token_f1("x y", "a b") == 0.0
    assert token_f1("a b", "a b c d") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert token_f1("", "") == 1.0
