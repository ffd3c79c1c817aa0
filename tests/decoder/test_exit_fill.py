"""decode.exit_fill: at an exit step with sampling, the remaining masks take the step's samples (`sample`,
the default) or the raw argmax (`argmax`, SchED's released code); greedy decoding gives the same either way."""
from __future__ import annotations

import pytest
import torch

from decoder.config import DecodeConfig, SchedConfig
from decoder.masked.engine import DecodeEngine
from decoder.types import Request
from decoder.types import CommitReason
from tests.support.models import peaked, scripted_adapter

A, G = 10, 16
WANT = [20 + j for j in range(G)]   # the argmax of every position


def flat_but_peaked(tag: int, answer: torch.Tensor) -> torch.Tensor:
    return peaked(WANT, [1.0] * G, 0.5)   # margin 0.5 logit: a hot sample rarely lands on the argmax


def decode(fill: str, temperature: float):
    cfg = DecodeConfig(gen_length=G, block_length=G, steps=G, policy=["sched"], temperature=temperature,
                       exit_fill=fill, trace="off",
                       sched=SchedConfig(schedule="linear", tau_high_logit=0.1, tau_low_logit=0.1))
    engine = DecodeEngine(scripted_adapter(flat_but_peaked, {A: 2}), cfg)
    return engine.generate([Request("r", [A, 50])])[0]


def test_argmax_fill_takes_the_argmax_where_samples_do_not():
    res = {fill: decode(fill, temperature=20.0) for fill in ("sample", "argmax")}
    for r in res.values():
        assert r.exit_reason == "sched" and r.steps_taken == 1
    filled = [j for j, c in enumerate(res["argmax"].commit_reason) if c == CommitReason.EXIT_FILL]
    assert len(filled) == G - 1                     # one committed by the schedule, the rest filled
    assert all(res["argmax"].output_ids[j] == WANT[j] for j in filled)
    sampled = [res["sample"].output_ids[j] for j in filled]
    assert sum(t != WANT[j] for t, j in zip(sampled, filled)) >= G // 2   # samples: mostly not the argmax
    # the schedule's own commit is a sample under both settings (same generator, same draw)
    first = next(j for j, c in enumerate(res["argmax"].commit_reason) if c == CommitReason.SCHEDULE)
    assert res["argmax"].output_ids[first] == res["sample"].output_ids[first]


def test_greedy_is_the_same_under_both():
    assert decode("sample", 0.0).output_ids == decode("argmax", 0.0).output_ids == WANT


def test_unknown_fill_is_refused():
    with pytest.raises(ValueError, match="exit_fill"):
        DecodeConfig(exit_fill="mode")
