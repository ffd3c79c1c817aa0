"""Summarization-shaped tasks for the long-form embedded model: long prompts, multi-block answers, exact checks.

A prompt is a document: free *notes* of 0-240 words that no answer quotes (what a summary leaves out),
the instruction, then a *form* of 2 sections, each opened by a label token (`§1`, `§2`) and made of
20-126 words, filled up with `_` to a fixed width of SLOT_WORDS words. Words are drawn without
replacement from a fixed pool, so every word occurs once per document and an answer is a deterministic
function of the prompt:

- `ends`: the first and the last section's label and first LEAD_WORDS words — the answer needs both ends
  of the form, ~130-250 tokens from the answer (what an approximate KV cache can break);
- `section §k`: the whole text of section k, named in the instruction.

Prompts are 256-497 tokens (median ~374, ~41 % >= 400), answers 21-127 tokens (median 42): ~94 % span
>= 2 blocks of 32, ~30 % >= 3 and ~14 % all 4 (gen_length 128).
Why fixed-width sections (embedded/longform/README.md, "Why fixed-width sections"): the only copy a small
model learned here within the CPU budget reads a word at a fixed distance from the answer; a copy that first
has to find a section at an arbitrary offset did not form. With fixed-width sections, a fixed number of them
and the notes of varying length *before* the instruction, every answer word sits at a fixed distance from the
answer whatever the prompt's length (with 3-8 sections the model learned the places far more slowly;
2 sections of width 126 give `section` answers that fill all 4 blocks of gen_length 128).
There is no sentence punctuation (a repeated `.` makes "the token after this one" ambiguous). Everything
is seeded and pure: the same seed gives the same examples.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

TASKS = ("ends", "section")
MAX_SECTIONS = 8
LABELS = tuple(f"§{i}" for i in range(1, MAX_SECTIONS + 1))
#: `_` fills a section up to SLOT_WORDS; it has the id the (no longer written) `.` had, so ids stay stable.
FILLER = "_"
SYMBOLS = (FILLER, "=", *TASKS, *LABELS)
_ONSETS = "b c d f g h j k l m n p r s t v w z".split()
_VOWELS = "a e i o u".split()
#: 512 distinct pronounceable words (CV-CV shapes), fixed order: the tokenizer's vocabulary. The pool is
#: small on purpose: with 2,000 words (each seen rarely) a small model's copy circuit did not form within
#: the CPU budget; with 512 it forms in ~1,100 steps (embedded/longform/README.md, "Why fixed-width
#: sections").
WORDS = tuple(sorted({o1 + v1 + o2 + v2 for o1 in _ONSETS for v1 in _VOWELS for o2 in _ONSETS for v2 in _VOWELS}))[:512]
#: Words of the first and the last section the `ends` task keeps (every section has at least this many).
LEAD_WORDS = 20
#: Width of every section in words (label not counted); shorter sections are filled up with FILLER.
SLOT_WORDS = 126
#: Largest prompt (tokens) a generated example may have; longer draws are redrawn.
MAX_PROMPT_TOKENS = 500


@dataclass(frozen=True)
class Example:
    task: str
    prompt: str
    answer: str


@dataclass(frozen=True)
class Shape:
    """Size ranges of a document (inclusive); the training curriculum starts small and grows to DEFAULT.
    A section is `sentences` runs of `words` words, written one after the other (no punctuation);
    `notes` is the number of words before the instruction."""
    sections: tuple[int, int] = (2, 2)
    sentences: tuple[int, int] = (1, 1)
    words: tuple[int, int] = (20, 126)
    notes: tuple[int, int] = (0, 240)


DEFAULT = Shape()


def make_document(rng: random.Random, shape: Shape = DEFAULT) -> tuple[list[str], list[list[list[str]]]]:
    """(notes, sections -> sentences -> words), every word distinct within the document."""
    while True:  # every word distinct: redraw the (rare) shapes that need more words than the pool has
        n_sec = rng.randint(*shape.sections)
        counts = [[rng.randint(*shape.words) for _ in range(rng.randint(*shape.sentences))] for _ in range(n_sec)]
        n_notes = rng.randint(*shape.notes)
        if sum(map(sum, counts)) + n_notes <= len(WORDS):
            break
    pool = iter(rng.sample(WORDS, sum(map(sum, counts)) + n_notes))
    notes = [next(pool) for _ in range(n_notes)]
    return notes, [[[next(pool) for _ in range(n)] for n in sec] for sec in counts]


def render_section(label: str, sentences: list[list[str]], limit: int | None = None, slot: int | None = None) -> list[str]:
    """The label, then the section's words (the first `limit` of them when given), filled up with FILLER to
    `slot` words when given (sections longer than `slot` are kept whole)."""
    words = [w for s in sentences for w in s][:limit]
    return [label] + words + [FILLER] * max(0, (slot or 0) - len(words))


def make_example(rng: random.Random, task: str, shape: Shape = DEFAULT) -> Example:
    """One example of `task`; prompts are at most MAX_PROMPT_TOKENS tokens (redrawn otherwise)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {TASKS}")
    while True:
        notes, doc = make_document(rng, shape)
        body = [t for i, sec in enumerate(doc) for t in render_section(LABELS[i], sec, slot=SLOT_WORDS)]
        if task == "ends":
            head = ["ends"]
            answer = [t for i in (0, len(doc) - 1) for t in render_section(LABELS[i], doc[i], LEAD_WORDS)]
        else:
            k = rng.randrange(len(doc))
            head = ["section", LABELS[k]]
            answer = render_section(LABELS[k], doc[k])
        prompt = notes + head + body + ["="]
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
