"""The reasoning workload's task: reasoning-gym's `palindrome_generation`, rendered character by character.

The prompt is a multiset of letters (sorted), the answer any palindrome that uses exactly those letters:
`pal:ddddjjkkkkmm=` -> e.g. `kjkmddddmkjk` or `dkmkjddjkmkd`. reasoning-gym is pinned in
requirements-reasoning.txt; only embedded/reasoning/make_data.py imports it, so the runtime, training and
the tests read committed files.

Why decoding order matters here: many answers are right, and which letter may go at a position depends on
the letters committed elsewhere. Once a letter is committed, its mirror position is certain; the letters of
the first half are an arbitrary arrangement, so the model spreads its belief over the letters still unused.
Committed one per step, each choice sees the earlier ones and the answer stays a valid arrangement; committed
several per step, independent choices take the same letter twice or break the mirror, and the answer fails.
A confidence-aware policy can still save steps: mirrors and the [EOS] tail are certain, the free choices
are not.

The metric is the library's verifier (`score_answer` == 1.0: a palindrome with exactly the prompt's letters),
reimplemented here as a pure function of the prediction and the reference answer (the reference holds the
prompt's letters); make_data.py checks that both agree on every reference and on wrong answers made from
them.
"""
from __future__ import annotations

import string

#: Every character a prompt or answer may contain; the tokenizer's vocabulary is built from it.
ALPHABET = string.digits + string.ascii_lowercase + ":=,+-_"
TASKS = ("palindrome_generation",)
#: reasoning-gym settings (the keyword arguments of `reasoning_gym.create_dataset`).
SETTINGS = {"palindrome_generation": {"min_length": 12, "max_length": 12}}
GEN_LENGTH = 32      # answer window: 12 letters + [EOS] fill, 4 blocks of 8 (the answer spans 2)
BLOCK_LENGTH = 8
PREFIX = "pal"


def render(entry: dict) -> tuple[str, str]:
    """(prompt, answer) of one reasoning-gym entry ({"question", "answer", "metadata"}): the prompt lists
    the entry's letters sorted (their order in the question is a shuffle), the answer is the library's."""
    meta = entry["metadata"]
    if meta["source_dataset"] != "palindrome_generation":
        raise ValueError(f"unknown dataset {meta['source_dataset']!r}; known: {TASKS}")
    return f"{PREFIX}:{''.join(sorted(meta['letters']))}=", entry["answer"]


def letters_of(prompt: str) -> str:
    """'pal:aabb=' -> 'aabb'."""
    head, _, body = prompt.rstrip("=").partition(":")
    if head != PREFIX:
        raise ValueError(f"not a {PREFIX}: prompt: {prompt!r}")
    return body


def well_formed(task: str, answer: str) -> bool:
    return task in TASKS and answer.isalpha() and answer.islower() and answer == answer[::-1]


def correct(prediction: str, reference: str) -> bool:
    """The task metric (reasoning-gym's `score_answer` == 1.0): the prediction, stripped and lower-cased,
    is a palindrome made of exactly the reference's letters (the prompt's multiset)."""
    answer = prediction.strip().lower()
    return bool(answer) and answer == answer[::-1] and sorted(answer) == sorted(reference.strip())

