"""Task-metric evaluation of an embedded workload's held-out set (used by bench/ and the quality tests).

Two workloads: `toy` (embedded/model: copy/rev/sort/next of short strings; exact match) and `longform`
(embedded/longform/model: summarization-shaped documents; exact match plus bag-of-words token F1 for
partial credit). `WORKLOADS[name]` gives the held-out file, the model and the config of each.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from embedded import taskmix
from embedded.longform import tasks as longform

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Workload:
    heldout: Path
    model: Path
    config: str | None                      # config layered on default.yaml (None: default.yaml alone)
    exact_match: Callable[[str, str], bool]
    token_score: Callable[[str, str], float] | None = None   # partial credit per answer (0..1)


WORKLOADS = {
    "toy": Workload(HERE / "eval" / "heldout.jsonl", HERE / "model", None, taskmix.exact_match),
    "longform": Workload(HERE / "longform" / "eval" / "heldout.jsonl", HERE / "longform" / "model",
                         "configs/longform.yaml", longform.exact_match, longform.token_f1),
}
HELDOUT = WORKLOADS["toy"].heldout


def load_heldout(limit: int | None = None, workload: str = "toy") -> list[dict]:
    path = WORKLOADS[workload].heldout
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def accuracy(texts: list[str], rows: list[dict], workload: str = "toy") -> float:
    match = WORKLOADS[workload].exact_match
    return sum(match(t, r["answer"]) for t, r in zip(texts, rows)) / max(len(rows), 1)


def token_score(texts: list[str], rows: list[dict], workload: str = "toy") -> float | None:
    """Mean partial-credit score (token F1 on the long-form workload); None where the workload has none."""
    score = WORKLOADS[workload].token_score
    if score is None:
        return None
    return sum(score(t, r["answer"]) for t, r in zip(texts, rows)) / max(len(rows), 1)


def accuracy_by_task(texts: list[str], rows: list[dict], workload: str = "toy") -> dict[str, float]:
    match = WORKLOADS[workload].exact_match
    tasks: dict[str, list[bool]] = {}
    for t, r in zip(texts, rows):
        tasks.setdefault(r["task"], []).append(match(t, r["answer"]))
    return {k: sum(v) / len(v) for k, v in sorted(tasks.items())}
