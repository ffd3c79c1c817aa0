"""The reasoning workload's tasks: reasoning-gym entries rendered as character-level prompts and answers.

Two reasoning-gym datasets (pinned in requirements-reasoning.txt; only embedded/reasoning/make_data.py
imports the library, so runtime, training and tests read the committed jsonl files instead):

- `chain_sum` (4-10 one-digit terms joined by + and -): the answer is the *running total* after each term,
  every total written as sign + 2 digits, e.g. prompt `sum:+4,+1,-7,+7,__,...,__=` -> answer `+04+05-02+05`. The last
  total is the library's answer. Total k is total k-1 plus term k: one small step once total k-1 is
  committed, but a sum of k terms from the prompt alone, which a 1-4M-parameter model does not do in one
  forward. So committed answer tokens are the scratchpad, and committing several totals at once (or
  exiting early) gets the later ones wrong.
- `number_sorting` (4-8 integers of 0-99, ascending or descending): prompt `asc:56,25,75,09,__,...=` ->
  answer `09,25,56,75`, each number as 2 digits. Number k is the smallest (largest) one after number k-1.

Prompts are a fixed-width form of 10 slots (unused ones `__`), 34 characters, and items are 3 characters
wide in prompt and answer alike (`+4,` / `+05`, `56,` / `56,`): answer item k sits at the same distance
from prompt item k in every example, and from answer item k-1, so attention finds both by relative
position alone (a variable-width prompt left a 0.86M model at ~1 % exact after 1,500 steps). Answers are
11-30 characters: with blocks of 8 and [EOS] after the answer, every answer spans 2-4 blocks of a
32-position window.

The metric is exact match of the whole rendered answer. It is stricter than the library's verifiers
(`score_answer`), which see only the final total (chain_sum) or accept numbers within 1 (number_sorting);
make_data.py checks that every rendered reference scores 1.0 with the library's `score_answer`.
"""
from __future__ import annotations

import re
import string

#: Every character a prompt or answer may contain; the tokenizer's vocabulary is built from it.
ALPHABET = string.digits + string.ascii_lowercase + ":=,+-_"
TASKS = ("chain_sum", "number_sorting")
#: reasoning-gym settings of each dataset (the keyword arguments of `reasoning_gym.create_dataset`).
SETTINGS = {
    "chain_sum": {"min_terms": 4, "max_terms": 10, "min_digits": 1, "max_digits": 1, "allow_negation": False},
    "number_sorting": {"min_numbers": 4, "max_numbers": 8, "min_decimals": 0, "max_decimals": 0,
                       "min_value": 0.0, "max_value": 99.0},
}
GEN_LENGTH = 32      # answer window: the longest answer (30) + [EOS], 4 blocks of 8
BLOCK_LENGTH = 8
SLOTS = 10           # prompt items, the unused ones filled with `__`: every prompt is 34 characters
FILL = "__"


def _form(prefix: str, items: list[str]) -> str:
    """'sum', ['+4', '-7'] -> 'sum:+4,-7,__,...,__=' (SLOTS items, each 2 characters and a comma)."""
    if len(items) > SLOTS:
        raise ValueError(f"{len(items)} items do not fit the form's {SLOTS} slots")
    return f"{prefix}:" + ",".join(items + [FILL] * (SLOTS - len(items))) + "="


def _total(value: int) -> str:
    if abs(value) > 99:
        raise ValueError(f"running total {value} does not fit sign + 2 digits")
    return f"{'-' if value < 0 else '+'}{abs(value):02d}"


def render_chain_sum(expression: str) -> tuple[str, str]:
    """'4 + 1 - 7' (the library's metadata["expression"]) -> ('sum:+4,+1,-7=', '+04+05-02')."""
    tokens = expression.split()
    terms = [("+", tokens[0])] + list(zip(tokens[1::2], tokens[2::2]))
    totals, running = [], 0
    for op, digits in terms:
        running += int(digits) if op == "+" else -int(digits)
        totals.append(_total(running))
    return _form("sum", [op + d for op, d in terms]), "".join(totals)


def render_number_sorting(numbers: list[str], direction: str) -> tuple[str, str]:
    """(['56.0', '9.0'], 'ascending') (the library's metadata) -> ('asc:56,09,__,...,__=', '09,56')."""
    values = [int(float(n)) for n in numbers]
    if any(not 0 <= v <= 99 or float(n) != v for v, n in zip(values, numbers)):
        raise ValueError(f"numbers must be integers of 0-99: {numbers}")
    ordered = sorted(values, reverse=direction == "descending")
    prefix = {"ascending": "asc", "descending": "dsc"}[direction]
    return _form(prefix, [f"{v:02d}" for v in values]), ",".join(f"{v:02d}" for v in ordered)


def render(entry: dict) -> tuple[str, str]:
    """(prompt, answer) of one reasoning-gym entry ({"question", "answer", "metadata"})."""
    meta = entry["metadata"]
    if meta["source_dataset"] == "chain_sum":
        return render_chain_sum(meta["expression"])
    if meta["source_dataset"] == "number_sorting":
        return render_number_sorting(meta["original_numbers"], meta["direction"])
    raise ValueError(f"unknown dataset {meta['source_dataset']!r}; known: {TASKS}")


def library_answer(task: str, answer: str) -> str:
    """The rendered answer in the form the library's `score_answer` reads: the final total
    (chain_sum) or a list of number strings (number_sorting)."""
    if task == "chain_sum":
        return str(int(answer[-3:]))
    if task == "number_sorting":
        return str([str(int(v)) for v in answer.split(",")])
    raise ValueError(f"unknown task {task!r}; known: {TASKS}")


ANSWER_RE = {"chain_sum": re.compile(r"^([+-]\d\d)+$"), "number_sorting": re.compile(r"^\d\d(,\d\d)*$")}


def well_formed(task: str, answer: str) -> bool:
    return bool(ANSWER_RE[task].match(answer))


def exact_match(prediction: str, reference: str) -> bool:
    """The task metric: the decoded answer, stripped, equals the reference (every total / number)."""
    return prediction.strip() == reference.strip()
