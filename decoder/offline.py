"""In-process decoding of text prompts without Ray: for benchmarks, evaluation and quick checks.

The same engine and slot scheduler the decode actors run, wrapped with tokenization on the way in and
detokenization (answer up to the first end-of-text) on the way out.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from decoder.config import DecodeConfig
from decoder.types import Request, RowError, SequenceResult
from decoder.build import make_engine
from decoder.scheduler import SlotScheduler


def answer_text(tokenizer, output_ids: list[int], eos_ids) -> tuple[str, int]:
    """(decoded answer, generated token count): the answer ends at the first end-of-text token."""
    eos = set(eos_ids)
    n = next((i for i, t in enumerate(output_ids) if t in eos), len(output_ids))
    return tokenizer.decode(output_ids[:n], skip_special_tokens=True), n


@dataclass
class OfflineRun:
    texts: list[str]
    results: list[SequenceResult]
    seconds: float
    stats: dict


def decode_prompts(adapter, tokenizer, prompts: list[str], cfg: DecodeConfig,
                   batch_size: int | None = None) -> OfflineRun:
    """Decode `prompts` through the slot scheduler; outputs in input order."""
    engine = make_engine(adapter, cfg)
    sched = SlotScheduler(engine, batch_size or cfg.max_batch_size, cfg.max_batch_tokens)
    requests = [Request(str(i), tokenizer(p, add_special_tokens=False)["input_ids"]) for i, p in enumerate(prompts)]
    start = time.perf_counter()
    done: dict[str, SequenceResult] = {}
    for res in sched.run(requests):
        if isinstance(res, RowError):
            raise RuntimeError(f"prompt {res.id} failed: {res.reason}")
        done[res.id] = res
    seconds = time.perf_counter() - start
    results = [done[r.id] for r in requests]
    texts = [answer_text(tokenizer, r.output_ids, adapter.eos_token_ids)[0] for r in results]
    return OfflineRun(texts, results, seconds, sched.stats())
