"""Step and token traces: decode scripted rows, write both tables to Arrow IPC, read back, cross-check
against the SequenceResults."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
import torch

from decoder.config import DecodeConfig
from decoder.masked.engine import DecodeEngine
from decoder.types import Request
from decoder.policies.schedules import tau_cosine
from stages.write.trace_tables import STEP_SCHEMA, TOKEN_SCHEMA
from decoder.types import CommitReason
from stages.write.trace_tables import step_table, token_table
from tests.support.models import EOS, MASK, peaked, scripted_adapter

A, B, C = 40, 41, 42    # A exits by SchED at its third step, B runs its budget, C stops at EOS


def script(tag: int, answer: torch.Tensor) -> torch.Tensor:
    g = len(answer)
    if tag == A and int((answer == MASK).sum()) <= g - 2:
        return peaked([20 + j for j in range(g)], [30.0 - 0.1 * j for j in range(g)], 20.0)
    if tag == C:
        tokens = [EOS if j == 3 else 10 + j for j in range(g)]
        return peaked(tokens, [20.0 if j == 3 else (10.0 - j if j < 3 else 2.0 - 0.1 * j) for j in range(g)], 1.0)
    return peaked([10 + j for j in range(g)], [6.0 - 0.1 * j for j in range(g)], 0.5)


REQUESTS = [Request("a", [A, 50]), Request("b", [B, 50, 51]), Request("c", [C, 50], gen_length=16)]


def decode(trace: str):
    cfg = DecodeConfig(gen_length=8, block_length=8, steps=8, policy=["sched"], trace=trace)
    return DecodeEngine(scripted_adapter(script, {A: 2, B: 3, C: 2}), cfg).generate(REQUESTS)


def roundtrip(table: pa.Table, path) -> pa.Table:
    with ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table)
    with ipc.open_file(str(path)) as reader:
        return reader.read_all()


@pytest.fixture(scope="module")
def traced():
    results = decode("tokens")
    ids = [r.id for r in results]
    traces = [r.trace for r in results]
    return results, step_table(ids, traces, [r.exit_reason for r in results]), token_table(ids, traces)


def test_scenario(traced) -> None:
    results, _, _ = traced
    assert [(r.id, r.exit_reason, r.steps_taken) for r in results] == [("a", "sched", 3), ("b", "steps", 8),
                                                                      ("c", "eos", 4)]


def test_step_table_roundtrip(traced, tmp_path) -> None:
    results, steps, _ = traced
    back = roundtrip(steps, tmp_path / "steps.arrow")
    assert back.schema.equals(STEP_SCHEMA) and back.equals(steps)
    rows = back.to_pylist()
    for res in results:
        mine = [r for r in rows if r["id"] == res.id]
        assert len(mine) == res.steps_taken                                   # one row per forward (NFE)
        assert [r["step"] for r in mine] == list(range(res.steps_taken))
        assert sum(r["n_committed"] for r in mine) == len(res.output_ids)
        assert [r["exit_reason"] for r in mine] == [""] * (res.steps_taken - 1) + [res.exit_reason]
        assert [r["exit"] for r in mine] == [False] * (res.steps_taken - 1) + [res.exit_reason == "sched"]
        for r in mine:
            p = r["step"] / res.step_budget
            assert r["progress"] == pytest.approx(p)
            assert r["tau"] == pytest.approx(tau_cosine(p, 7.5, 2.5), rel=1e-5)
    a_rows = [r for r in rows if r["id"] == "a"]
    assert [r["gbar"] for r in a_rows] == pytest.approx([0.5, 0.5, 20.0])
    assert [r["n_committed"] for r in a_rows] == [1, 1, 6]


def test_token_table_roundtrip(traced, tmp_path) -> None:
    results, _, tokens = traced
    back = roundtrip(tokens, tmp_path / "tokens.arrow")
    assert back.schema.equals(TOKEN_SCHEMA) and back.equals(tokens)
    cols = back.to_pydict()
    ids = np.array(cols["id"])
    for res in results:
        sel = ids == res.id
        g = len(res.output_ids)
        # one row per position and step while it was still masked: steps 0..commit_step of each position
        assert sel.sum() == sum(c + 1 for c in res.commit_step)
        position = np.array(cols["position"])[sel]
        step = np.array(cols["step"])[sel]
        assert sorted(zip(step.tolist(), position.tolist())) == sorted(
            (s, p) for p, c in enumerate(res.commit_step) for s in range(c + 1))
        committed = np.array(cols["committed"])[sel]
        reason = np.array(cols["reason"], dtype=object)[sel]
        argmax = np.array(cols["argmax"])[sel]
        assert (np.bincount(position[committed], minlength=g) == 1).all()   # each position committed once
        order = np.argsort(position[committed])
        assert step[committed][order].tolist() == res.commit_step
        names = [CommitReason(c).name.lower() for c in res.commit_reason]
        assert reason[committed][order].tolist() == names
        assert set(reason[~committed]) <= {"none"}
        decided = [t for t, n in zip(argmax[committed][order], names) if n != "eos_fill"]
        assert decided == [t for t, n in zip(res.output_ids, names) if n != "eos_fill"]
    conf = np.array(cols["confidence"])
    assert ((conf > 0) & (conf <= 1)).all() and (np.array(cols["entropy"]) >= 0).all()


def test_trace_steps_has_no_token_rows() -> None:
    results = decode("steps")
    ids, traces = [r.id for r in results], [r.trace for r in results]
    assert all(t is not None and t.tokens is None for t in traces)
    tokens = token_table(ids, traces)
    assert tokens.num_rows == 0 and tokens.schema.equals(TOKEN_SCHEMA)
    steps = step_table(ids, traces, [r.exit_reason for r in results])
    assert steps.num_rows == sum(r.steps_taken for r in results)


def test_trace_off() -> None:
    results = decode("off")
    assert all(r.trace is None for r in results)
    assert [r.exit_reason for r in results] == ["sched", "steps", "eos"]


def test_empty_tables() -> None:
    assert step_table([], [], []).num_rows == 0 and step_table([], [], []).schema.equals(STEP_SCHEMA)
    assert token_table([], []).num_rows == 0


def test_policy_none_traces_nan_tau() -> None:
    cfg = DecodeConfig(gen_length=8, block_length=8, steps=8, policy=["none"], trace="steps")
    res = DecodeEngine(scripted_adapter(script, {B: 3}), cfg).generate([Request("b", [B, 50, 51])])[0]
    table = step_table([res.id], [res.trace], [res.exit_reason])
    assert all(math.isnan(t) for t in table.column("tau").to_pylist())
    assert table.column("exit_reason").to_pylist()[-1] == "steps"
