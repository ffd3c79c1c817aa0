"""Rows of a shard already decoded into parts kept from an interrupted run: the read stage skips them.

A shard's rows are keyed by (line, sample). An interrupted run leaves the parts it wrote under
`_parts/<shard>/` (stages/write/sink.py); a rerun with the same fingerprint keeps them (driver/resume.py)
and gives the read stage their keys as a `Coverage`, so only the rest is decoded again and the commit
merges old and new parts. Keys come in runs of consecutive lines (a part holds whole blocks), so a
coverage is held as sorted line intervals per sample: small to ship to every read task, O(log n) to ask.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Iterable


@dataclass(frozen=True)
class Coverage:
    """(line, sample) keys held by kept parts; `spans[sample]` = sorted, disjoint (first, last) line ranges."""
    spans: dict[int, tuple[tuple[int, int], ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, keys: Iterable[tuple[int, int]]) -> "Coverage":
        lines: dict[int, list[int]] = {}
        for line, sample in keys:
            lines.setdefault(int(sample), []).append(int(line))
        spans = {}
        for sample, ls in lines.items():
            runs: list[list[int]] = []
            for line in sorted(set(ls)):
                if runs and line == runs[-1][1] + 1:
                    runs[-1][1] = line
                else:
                    runs.append([line, line])
            spans[sample] = tuple((a, b) for a, b in runs)
        return cls(spans)

    def __contains__(self, key: tuple[int, int]) -> bool:
        line, sample = key
        runs = self.spans.get(sample, ())
        i = bisect_right(runs, (line, float("inf"))) - 1
        return i >= 0 and runs[i][0] <= line <= runs[i][1]

    def __len__(self) -> int:
        return sum(b - a + 1 for runs in self.spans.values() for a, b in runs)

    def keep(self, lines: list[int], samples: list[int]) -> list[bool]:
        """Per row, True when it is not covered (it must be decoded)."""
        return [(l, s) not in self for l, s in zip(lines, samples)]
