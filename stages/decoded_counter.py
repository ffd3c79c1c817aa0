"""Rows decoded so far, counted by the decode actors as each Ray batch of rows finishes.

A decode task's rows reach the writer (and so the parts the progress bar reads) only when the task's last
row is done; on a job of a few thousand rows per actor that is minutes after the first rows are decoded.
The actors add each finished batch here (fire and forget, one small call per batch) and the driver's
progress line reads the totals, so it counts rows from the first batch on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import ray


@dataclass
class DecodedCounts:
    rows: int = 0          # rows the actors returned (decoded, or with their error)
    outputs: int = 0       # of which decoded
    nfe: int = 0
    step_budget: int = 0


@ray.remote(num_cpus=0)
class DecodedCounter:
    def __init__(self) -> None:
        self.counts = DecodedCounts()

    def add(self, rows: int, outputs: int, nfe: int, step_budget: int) -> None:
        c = self.counts
        c.rows, c.outputs, c.nfe, c.step_budget = c.rows + rows, c.outputs + outputs, c.nfe + nfe, c.step_budget + step_budget

    def totals(self) -> dict:
        return asdict(self.counts)
