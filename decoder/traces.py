"""Per-sequence step traces: conversion to the two Arrow tables whose schemas `trace_schema` defines.

The engine records on device and converts once per finished sequence into a `SequenceTrace` of numpy
arrays; `step_table` / `token_table` turn many of those into Arrow (the decode actor: once per batch).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from decoder.trace_schema import (REASON_NAMES, STEP_EXTRA, STEP_SCHEMA, TOKEN_EXTRA, TOKEN_SCHEMA,
                                        CommitReason)


@dataclass
class SequenceTrace:
    """steps [S, 8]: step, progress, tau, gbar, n_committed, exit, refresh, forward_tokens. Token rows, one per still-masked position
    of each step (N in all): tokens [N, 4] argmax, confidence, margin, entropy; reasons [N] int8; token_step
    [N] and position [N] int32 (all None when tracing at `steps` level). Canvas families add the STEP_EXTRA
    columns ([S] each) and TOKEN_EXTRA columns ([N] each) by name; masked families leave them null."""
    steps: np.ndarray
    tokens: np.ndarray | None
    reasons: np.ndarray | None
    token_step: np.ndarray | None = None
    position: np.ndarray | None = None
    extra_steps: dict | None = None
    extra_tokens: dict | None = None


def _extra(traces: list[SequenceTrace], names: tuple[str, ...], schema: pa.Schema, attr: str, sizes: list[int]
           ) -> dict[str, pa.Array]:
    """The canvas-only columns: each trace's values where it has them, nulls where it does not."""
    out = {}
    for name in names:
        typ = schema.field(name).type
        parts = [pa.array(getattr(t, attr)[name], typ) if getattr(t, attr) else pa.nulls(n, typ)
                 for t, n in zip(traces, sizes)]
        out[name] = pa.concat_arrays(parts) if parts else pa.array([], typ)
    return out


def step_table(ids: list[str], traces: list[SequenceTrace], exit_reasons: list[str]) -> pa.Table:
    counts = [len(t.steps) for t in traces]
    s = np.concatenate([t.steps for t in traces]) if traces else np.zeros((0, 8), np.float32)
    last = np.zeros(len(s), dtype=bool)
    last[np.cumsum(counts, dtype=np.int64) - 1] = True
    reasons = np.where(last, np.repeat(np.asarray(exit_reasons, dtype=object), counts), "")
    return pa.table({
        "id": pa.array(np.repeat(np.asarray(ids, dtype=object), counts), pa.string()),
        "step": s[:, 0].astype(np.int32), "progress": s[:, 1].astype(np.float32),
        "tau": s[:, 2].astype(np.float32), "gbar": s[:, 3].astype(np.float32),
        "n_committed": s[:, 4].astype(np.int32), "exit": s[:, 5] > 0,
        "exit_reason": pa.array(reasons, pa.string()),
        "refresh": s[:, 6] > 0, "forward_tokens": s[:, 7].astype(np.int32),
        **_extra(traces, STEP_EXTRA, STEP_SCHEMA, "extra_steps", counts),
    }, schema=STEP_SCHEMA)


def token_table(ids: list[str], traces: list[SequenceTrace]) -> pa.Table:
    kept = [(i, t) for i, t in zip(ids, traces) if t.tokens is not None]
    if not kept:
        return TOKEN_SCHEMA.empty_table()
    parts = {k: [] for k in ("id", "step", "position", "tok", "reason")}
    for seq_id, t in kept:
        parts["id"].append(np.full(len(t.reasons), seq_id, dtype=object))
        parts["step"].append(t.token_step.astype(np.int32))
        parts["position"].append(t.position.astype(np.int32))
        parts["tok"].append(t.tokens.reshape(-1, 4))
        parts["reason"].append(t.reasons.reshape(-1))
    tok = np.concatenate(parts["tok"])
    reason = np.concatenate(parts["reason"]).astype(np.int8)
    return pa.table({
        "id": pa.array(np.concatenate(parts["id"]), pa.string()),
        "step": np.concatenate(parts["step"]), "position": np.concatenate(parts["position"]),
        "argmax": tok[:, 0].astype(np.int32), "confidence": tok[:, 1].astype(np.float32),
        "margin": tok[:, 2].astype(np.float32), "entropy": tok[:, 3].astype(np.float32),
        "committed": reason != CommitReason.NONE,
        "reason": pa.DictionaryArray.from_arrays(pa.array(reason, pa.int8()), pa.array(REASON_NAMES)),
        **_extra([t for _, t in kept], TOKEN_EXTRA, TOKEN_SCHEMA, "extra_tokens", [len(t.reasons) for _, t in kept]),
    }, schema=TOKEN_SCHEMA)
