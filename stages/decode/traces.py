"""Per-sequence step traces and the one place their Arrow schemas are defined.

Two tables joined on (id, step): `STEP_SCHEMA`, one row per sequence and step (what the step decided),
and `TOKEN_SCHEMA`, one row per sequence, step and answer position (what each position looked like and
whether/why it was committed then). The engine records on device and converts once per finished
sequence into a `SequenceTrace` of numpy arrays; `trace_tables` turns many of those into Arrow.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from stages.decode.policies import CommitReason

REASON_NAMES = [r.name.lower() for r in sorted(CommitReason)]

STEP_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("step", pa.int32()),            # 0-based global step of the row
    ("progress", pa.float32()),      # p used by the exit policy at this step
    ("tau", pa.float32()),           # threshold tau(p), logit units (NaN without an exit policy)
    ("gbar", pa.float32()),          # aggregated margin over the still-masked span, logit units
    ("n_committed", pa.int32()),     # positions committed at this step (exit/EOS fills included)
    ("exit", pa.bool_()),            # an exit policy stopped the row at this step
    ("exit_reason", pa.string()),    # on the row's last step: steps | eos | <policy>; else ""
])

TOKEN_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("step", pa.int32()),
    ("position", pa.int32()),        # 0-based answer position
    ("argmax", pa.int32()),          # candidate token x0 at this step
    ("confidence", pa.float32()),    # softmax probability of x0
    ("margin", pa.float32()),        # top-1 minus top-2 logit
    ("entropy", pa.float32()),       # nats
    ("committed", pa.bool_()),       # committed at this step
    ("reason", pa.dictionary(pa.int8(), pa.string())),  # CommitReason name, "none" when not committed
])


@dataclass
class SequenceTrace:
    """steps [S, 6]: step, progress, tau, gbar, n_committed, exit. tokens [S, G, 4]: argmax, confidence,
    margin, entropy; reasons [S, G] int8 (None when tracing at `steps` level)."""
    steps: np.ndarray
    tokens: np.ndarray | None
    reasons: np.ndarray | None


def step_table(ids: list[str], traces: list[SequenceTrace], exit_reasons: list[str]) -> pa.Table:
    counts = [len(t.steps) for t in traces]
    s = np.concatenate([t.steps for t in traces]) if traces else np.zeros((0, 6), np.float32)
    last = np.zeros(len(s), dtype=bool)
    last[np.cumsum(counts, dtype=np.int64) - 1] = True
    reasons = np.where(last, np.repeat(np.asarray(exit_reasons, dtype=object), counts), "")
    return pa.table({
        "id": pa.array(np.repeat(np.asarray(ids, dtype=object), counts), pa.string()),
        "step": s[:, 0].astype(np.int32), "progress": s[:, 1].astype(np.float32),
        "tau": s[:, 2].astype(np.float32), "gbar": s[:, 3].astype(np.float32),
        "n_committed": s[:, 4].astype(np.int32), "exit": s[:, 5] > 0,
        "exit_reason": pa.array(reasons, pa.string()),
    }, schema=STEP_SCHEMA)


def token_table(ids: list[str], traces: list[SequenceTrace]) -> pa.Table:
    kept = [(i, t) for i, t in zip(ids, traces) if t.tokens is not None]
    if not kept:
        return TOKEN_SCHEMA.empty_table()
    parts = {k: [] for k in ("id", "step", "position", "tok", "reason")}
    for seq_id, t in kept:
        n_steps, g = t.reasons.shape
        parts["id"].append(np.full(n_steps * g, seq_id, dtype=object))
        parts["step"].append(np.repeat(t.steps[:, 0].astype(np.int32), g))
        parts["position"].append(np.tile(np.arange(g, dtype=np.int32), n_steps))
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
    }, schema=TOKEN_SCHEMA)
