"""The one engine interface: what the slot scheduler, the decode actor and the static loop ask of an engine.

An engine owns the rows being decoded and nothing else (no tokenizer, no queue, no Ray). Three implement it:
the masked-diffusion engine (decoder/masked: LLaDA, Dream, native), the canvas engine (decoder/canvas:
DiffusionGemma) and the block engine (decoder/block: LLaDA2, SDAR, Fast-dLLM v2). Rows are admitted with `add`,
advanced together by `step` (each row at its own step, block or canvas), and leave as `SequenceResult`s as
soon as they finish, so a scheduler can refill their slots.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from decoder.config import DecodeConfig
from decoder.types import Request, SequenceResult


class EngineRow(Protocol):
    """What a scheduler reads of an engine's row."""
    request: Request
    done: bool

    @property
    def length(self) -> int: ...       # tokens one forward of this row touches (the token budget)


@runtime_checkable
class Engine(Protocol):
    cfg: DecodeConfig
    rows: list                         # EngineRow, in batch order
    stats: dict                        # forwards, row_steps, useful_row_steps, tokens, pad_tokens, ...
    cached: object                     # the KV-cache runner when decode.cache is on, else None

    def row_config(self, request: Request) -> tuple:
        """The row's layout; raises ValueError for a request this engine refuses (that row's error)."""

    def temperature(self, request: Request) -> float | None:
        """The row's sampling temperature (None: the family has no single one)."""

    def filters(self, request: Request) -> tuple:
        """The row's (top_p, top_k) (None, None: the family's sampler has none)."""

    def add(self, requests: list[Request]) -> None:
        """Admit rows into the batch (a freed slot is refilled this way)."""

    def step(self) -> list[SequenceResult]:
        """One forward over the rows; returns the rows that finished (they leave the batch)."""

    def clear(self) -> None:
        """Drop every row (after a failed forward)."""

    @property
    def num_active(self) -> int: ...

    @property
    def kv_bytes_per_token(self) -> int: ...

    def generate(self, requests: list[Request], batch_size: int | None = None) -> list[SequenceResult]:
        """The static loop: batches of `batch_size`, no refill; input order kept."""


def static_batches(engine: Engine, requests: list[Request], batch_size: int) -> list[SequenceResult]:
    """Any engine's static loop: admit `batch_size` rows, step until all left, next batch; input order kept."""
    done: dict[str, SequenceResult] = {}
    for start in range(0, len(requests), batch_size):
        engine.add(requests[start:start + batch_size])
        while engine.rows:
            for res in engine.step():
                done[res.id] = res
    return [done[r.id] for r in requests]
