"""Summarization-shaped tasks for the long-form embedded model: long prompts, multi-block answers, exact checks.

A prompt is a synthetic *document*: 3-8 sections, each opened by a label token (`§1`, `§2`, ...) and made
of 3-7 sentences of 4-12 words ending in `.`. Words are drawn without replacement from a fixed pool, so
every word occurs once per document and an answer is a deterministic function of the prompt:

- `lead`: the lead (first) sentence of every section, each after its label — the answer depends on content
  spread over the whole prompt (what an approximate KV cache can break);
- `section §k`: the whole text of section k, named at the start of the prompt, far from the answer.

Prompts run ~100-500 tokens (median ~220), answers ~15-120 tokens (median ~45): most span >= 2 blocks
of 32. Everything is seeded and pure: the same seed gives the same examples.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

TASKS = ("lead", "section")
MAX_SECTIONS = 8
LABELS = tuple(f"§{i}" for i in range(1, MAX_SECTIONS + 1))
SYMBOLS = (".", "=", *TASKS, *LABELS)
_ONSETS = "b c d f g h j k l m n p r s t v w z".split()
_VOWELS = "a e i o u".split()
#: 2,000 distinct pronounceable words (CV-CV and CV-CV-C shapes), fixed order: the tokenizer's vocabulary.
WORDS = tuple(sorted({o1 + v1 + o2 + v2 for o1 in _ONSETS for v1 in _VOWELS for o2 in _ONSETS for v2 in _VOWELS}))[:2000]
#: Largest prompt (tokens) a generated example may have; longer draws are redrawn.
MAX_PROMPT_TOKENS = 500


@dataclass(frozen=True)
class Example:
    task: str
    prompt: str
    answer: str


@dataclass(frozen=True)
class Shape:
    """Size ranges of a document (inclusive); the training curriculum starts small and grows to DEFAULT."""
    sections: tuple[int, int] = (3, 8)
    sentences: tuple[int, int] = (3, 7)
    words: tuple[int, int] = (4, 12)


DEFAULT = Shape()


def make_document(rng: random.Random, shape: Shape = DEFAULT) -> list[list[list[str]]]:
    """sections -> sentences -> words, every word distinct within the document."""
    n_sec = rng.randint(*shape.sections)
    counts = [[rng.randint(*shape.words) for _ in range(rng.randint(*shape.sentences))] for _ in range(n_sec)]
    pool = iter(rng.sample(WORDS, sum(map(sum, counts))))
    return [[[next(pool) for _ in range(n)] for n in sec] for sec in counts]


def render_section(label: str, sentences: list[list[str]]) -> list[str]:
    return [label] + [w for s in sentences for w in (*s, ".")]


def make_example(rng: random.Random, task: str, shape: Shape = DEFAULT) -> Example:
    """One example of `task`; prompts are at most MAX_PROMPT_TOKENS tokens (redrawn otherwise)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {TASKS}")
    while True:
        doc = make_document(rng, shape)
        body = [t for i, sec in enumerate(doc) for t in render_section(LABELS[i], sec)]
        if task == "lead":
            head = ["lead"]
            answer = [t for i, sec in enumerate(doc) for t in render_section(LABELS[i], sec[:1])]
        else:
            k = rng.randrange(len(doc))
            head = ["section", LABELS[k]]
            answer = render_section(LABELS[k], doc[k])
        prompt = head + body + ["="]
        if len(prompt) <= MAX_PROMPT_TOKENS:
            return Example(task, " ".join(prompt), " ".join(answer))


def sample_examples(seed: int, n: int, tasks: tuple[str, ...] = TASKS, shape: Shape = DEFAULT) -> list[Example]:
    """`n` examples drawn round-robin over `tasks` from a seeded generator."""
    rng = random.Random(seed)
    return [make_example(rng, tasks[i % len(tasks)], shape) for i in range(n)]


def exact_match(prediction: str, reference: str) -> bool:
    """The task metric: the decoded answer's words equal the reference's."""
    return prediction.split() == reference.split()


def token_f1(prediction: str, reference: str) -> float:
    """Partial credit: F1 of the multiset of words (SQuAD-style); 1.0 iff the bags of words are equal."""
    pred, ref = prediction.split(), reference.split()
    if not pred and not ref:
        return 1.0
    common = sum(min(pred.count(w), ref.count(w)) for w in set(pred))
    if common == 0:
        return 0.0
    p, r = common / len(pred), common / len(ref)
    return 2 * p * r / (p + r)
