"""Exact-match evaluation of the embedded model on the held-out set (used by bench/ and the quality test)."""
from __future__ import annotations

import json
from pathlib import Path

from embedded.taskmix import exact_match

HELDOUT = Path(__file__).resolve().parent / "eval" / "heldout.jsonl"


def load_heldout(limit: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in HELDOUT.read_text().splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def accuracy(texts: list[str], rows: list[dict]) -> float:
    return sum(exact_match(t, r["answer"]) for t, r in zip(texts, rows)) / max(len(rows), 1)


def accuracy_by_task(texts: list[str], rows: list[dict]) -> dict[str, float]:
    tasks: dict[str, list[bool]] = {}
    for t, r in zip(texts, rows):
        tasks.setdefault(r["task"], []).append(exact_match(t, r["answer"]))
    return {k: sum(v) / len(v) for k, v in sorted(tasks.items())}
