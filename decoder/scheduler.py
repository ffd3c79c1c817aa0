"""Slot scheduler: continuous batching of diffusion rows over one engine (decoder/engine.py: either kind).

The engine exits rows per sequence and compacts them out of the forward; this scheduler refills the
freed slots from a waiting queue before the next step, so the forward stays full while work remains
(the vLLM split: `schedule()` admits, the engine steps, finished rows come back). Limits: at most
`max_batch_size` rows and `max_batch_tokens` padded tokens per forward. With `bucket`, admission
prefers waiting rows whose length is closest to the batch's width, to keep left-padding small.

A step that raises evicts every row of that forward and decodes each alone, so one poisoned row is
reported as an error while its batch-mates complete (greedy decoding restarts deterministically). An
accelerator out-of-memory error is not a row's fault: the slot limit is halved (from the rows that were
in the failed forward), those rows go back to the front of the queue to restart, and decoding continues;
only a row that runs out of memory alone becomes an error.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Callable, Iterable, Iterator

import torch

from decoder.engine import Engine
from decoder.types import Request, RowError, SequenceResult


class SlotScheduler:
    def __init__(self, engine: Engine, max_batch_size: int, max_batch_tokens: int,
                 bucket: bool = False, lookahead: int = 64,
                 before_step: Callable[[list[str]], None] | None = None) -> None:
        """`before_step(ids)` is a fault-injection hook for tests (called with the ids in each forward)."""
        self.engine, self.max_rows, self.max_tokens = engine, max_batch_size, max_batch_tokens
        self.bucket, self.lookahead, self.before_step = bucket, lookahead, before_step
        self.waiting: deque[Request] = deque()
        self.isolate: deque[Request] = deque()
        self.started_at: float | None = None
        self.finished = 0
        self.steady_forwards = 0   # forwards taken while rows were still waiting for a slot
        self.steady_rows = 0
        self.oom_events = 0

    def submit(self, requests: Iterable[Request]) -> None:
        self.waiting.extend(requests)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.isolate or self.engine.rows)

    # ----- admission --------------------------------------------------------------------------
    def _fits(self, req: Request, rows: int, width: int) -> bool:
        """Token budget of the forward and, under a KV cache, `decode.max_cache_mb` for the slots' caches
        (each row's cache is bounded by the batch width); a lone row is always admitted."""
        length = len(req.prompt_ids) + (req.gen_length or self.engine.cfg.gen_length)
        tokens = (rows + 1) * max(width, length)
        cache_mb = self.engine.cfg.max_cache_mb
        if cache_mb and (self.engine.cached or getattr(self.engine, "exact_cache", False)) and tokens * self.engine.kv_bytes_per_token > cache_mb * 2 ** 20:
            return rows == 0
        return rows == 0 or tokens <= self.max_tokens

    def _pick(self, width: int) -> int:
        """Index in the waiting queue of the next row to admit."""
        if not self.bucket or width == 0:
            return 0
        window = min(len(self.waiting), self.lookahead)
        lengths = [len(self.waiting[i].prompt_ids) + (self.waiting[i].gen_length or self.engine.cfg.gen_length)
                   for i in range(window)]
        return min(range(window), key=lambda i: abs(lengths[i] - width))

    def schedule(self) -> list[RowError]:
        """Fill free slots from the waiting queue; rows the engine refuses become errors."""
        errors, admit = [], []
        rows = len(self.engine.rows)
        width = max((r.length for r in self.engine.rows), default=0)
        while self.waiting and rows < self.max_rows:
            i = self._pick(width)
            req = self.waiting[i]
            if not self._fits(req, rows, width):
                break
            del self.waiting[i]
            try:
                self.engine.row_config(req)
            except ValueError as e:
                errors.append(RowError(req.id, str(e)))
                continue
            admit.append(req)
            rows += 1
            width = max(width, len(req.prompt_ids) + (req.gen_length or self.engine.cfg.gen_length))
        self.engine.add(admit)
        return errors

    # ----- stepping ---------------------------------------------------------------------------
    def step(self) -> list[SequenceResult | RowError]:
        """Admit, run one engine step, return what finished (results and errors)."""
        if self.started_at is None:
            self.started_at = time.time()
        if self.isolate and not self.engine.rows:
            return [self._decode_alone(self.isolate.popleft())]
        out: list[SequenceResult | RowError] = list(self.schedule())
        if not self.engine.rows:
            return out
        if self.waiting:
            self.steady_forwards += 1
            self.steady_rows += len(self.engine.rows)
        try:
            if self.before_step:
                self.before_step([r.request.id for r in self.engine.rows])
            out.extend(self.engine.step())
        except torch.OutOfMemoryError as e:
            out.extend(self._shrink(e))
        except Exception:
            self.isolate.extend(r.request for r in self.engine.rows if not r.done)
            self.engine.clear()
        self.finished += sum(isinstance(o, SequenceResult) for o in out)
        return out

    def _shrink(self, error: Exception) -> list[RowError]:
        """After an out-of-memory step: halve the slot limit and requeue that forward's rows (in order, at
        the front); a forward of one row cannot shrink, so that row is an error."""
        rows = [r.request for r in self.engine.rows if not r.done]
        self.engine.clear()
        self.oom_events += 1
        if len(rows) <= 1:
            return [RowError(r.id, f"decode failed: out of memory with the row alone: {error}") for r in rows]
        self.max_rows = max(1, min(self.max_rows, len(rows)) // 2)
        self.waiting.extendleft(reversed(rows))
        return []

    def _decode_alone(self, req: Request) -> SequenceResult | RowError:
        try:
            self.engine.add([req])
            while self.engine.rows:
                if self.before_step:
                    self.before_step([req.id])
                done = self.engine.step()
            self.finished += 1
            return done[0]
        except Exception as e:
            self.engine.clear()
            return RowError(req.id, f"decode failed: {type(e).__name__}: {e}")

    def run(self, requests: Iterable[Request]) -> Iterator[SequenceResult | RowError]:
        """Decode everything, yielding each row as soon as it finishes."""
        self.submit(requests)
        while self.has_work:
            yield from self.step()

    def stats(self) -> dict:
        """Slot utilisation (useful row-steps / computed row-steps), padding fraction, sequences/s."""
        s = self.engine.stats
        elapsed = time.time() - self.started_at if self.started_at else 0.0
        return {
            "forwards": s["forwards"], "row_steps": s["row_steps"], "useful_row_steps": s["useful_row_steps"],
            "slot_utilisation": s["useful_row_steps"] / (s["forwards"] * self.max_rows) if s["forwards"] else 0.0,
            "steady_slot_utilisation": (self.steady_rows / (self.steady_forwards * self.max_rows)
                                        if self.steady_forwards else 0.0),
            "padding_fraction": s["pad_tokens"] / s["tokens"] if s["tokens"] else 0.0,
            "oom_events": self.oom_events, "slot_limit": self.max_rows,
            **({f"cache_{k}": v for k, v in vars(self.engine.cached.stats).items()} if self.engine.cached else {}),
            **{k: v for k, v in s.items() if k.startswith(("encoder_", "peak_"))},   # canvas engine only
            "sequences": self.finished, "started_at": self.started_at, "elapsed_s": elapsed,
            "sequences_per_s": self.finished / elapsed if elapsed > 0 else 0.0,
        }
