"""Step traces as Arrow: the two trace tables' schemas and their construction from the decoder's
`SequenceTrace`s (the decode actor converts once per batch; the write stage commits them per shard).

Two tables joined on (id, step): `STEP_SCHEMA`, one row per sequence and step (what the step decided),
and `TOKEN_SCHEMA`, one row per sequence, step and answer position (what each position looked like and
whether/why it was committed then).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from decoder.types import REASON_NAMES, STEP_FIELDS, TOKEN_FIELDS, CommitReason, SequenceTrace

STEP_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("step", pa.int32()),            # 0-based global step of the row
    ("progress", pa.float32()),      # p used by the exit policy at this step
    ("tau", pa.float32()),           # threshold tau(p), logit units (NaN without an exit policy)
    ("gbar", pa.float32()),          # aggregated margin over the still-masked span, logit units
    ("n_committed", pa.int32()),     # positions committed at this step (exit/EOS fills included)
    ("exit", pa.bool_()),            # an exit policy stopped the row at this step
    ("exit_reason", pa.string()),    # on the row's last step: steps | all_committed | eos | <policy>; else ""
    ("refresh", pa.bool_()),         # the step ran the row's full sequence (always, without a KV cache)
    ("forward_tokens", pa.int32()),  # tokens the step's forward ran for the row (sequence or cached span)
    # canvas families only (null for masked families):
    ("canvas", pa.int32()),          # 0-based canvas of the row the step denoised
    ("accepted", pa.int32()),        # canvas positions the sampler accepted (the rest were re-noised)
    ("entropy_mean", pa.float32()),  # mean entropy of the canvas (nats, temperature-scaled): the stop signal
    # block-diffusion families only (null for the others):
    ("block", pa.int32()),           # 0-based answer block of the row the step denoised
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
    # canvas families only (null for masked families):
    ("accepted", pa.bool_()),        # the sampler accepted the position's sample at this step
    ("settled_step", pa.int32()),    # the step from which the position's argmax kept its committed value
])

#: the family-specific columns, filled with nulls for families that have no such value
STEP_EXTRA = ("canvas", "accepted", "entropy_mean", "block")
TOKEN_EXTRA = ("accepted", "settled_step")


def _extra(traces: list[SequenceTrace], names: tuple[str, ...], schema: pa.Schema, attr: str, sizes: list[int]
           ) -> dict[str, pa.Array]:
    """The family-specific columns: each trace's values where it has them, nulls where it does not."""
    out = {}
    for name in names:
        typ = schema.field(name).type
        parts = [pa.array(getattr(t, attr)[name], typ) if name in (getattr(t, attr) or {}) else pa.nulls(n, typ)
                 for t, n in zip(traces, sizes)]
        out[name] = pa.concat_arrays(parts) if parts else pa.array([], typ)
    return out


def step_table(ids: list[str], traces: list[SequenceTrace], exit_reasons: list[str]) -> pa.Table:
    counts = [len(t.steps) for t in traces]
    s = np.concatenate([t.steps for t in traces]) if traces else np.zeros((0, len(STEP_FIELDS)), np.float32)
    last = np.zeros(len(s), dtype=bool)
    last[np.cumsum(counts, dtype=np.int64) - 1] = True
    reasons = np.where(last, np.repeat(np.asarray([str(r) for r in exit_reasons], dtype=object), counts), "")

    def col(name: str) -> np.ndarray:
        return s[:, STEP_FIELDS.index(name)]
    return pa.table({
        "id": pa.array(np.repeat(np.asarray(ids, dtype=object), counts), pa.string()),
        "step": col("step").astype(np.int32), "progress": col("progress").astype(np.float32),
        "tau": col("tau").astype(np.float32), "gbar": col("gbar").astype(np.float32),
        "n_committed": col("n_committed").astype(np.int32), "exit": col("exit") > 0,
        "exit_reason": pa.array(reasons, pa.string()),
        "refresh": col("refresh") > 0, "forward_tokens": col("forward_tokens").astype(np.int32),
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
        parts["tok"].append(t.tokens.reshape(-1, len(TOKEN_FIELDS)))
        parts["reason"].append(t.reasons.reshape(-1))
    tok = np.concatenate(parts["tok"])
    reason = np.concatenate(parts["reason"]).astype(np.int8)
    return pa.table({
        "id": pa.array(np.concatenate(parts["id"]), pa.string()),
        "step": np.concatenate(parts["step"]), "position": np.concatenate(parts["position"]),
        "argmax": tok[:, TOKEN_FIELDS.index("argmax")].astype(np.int32),
        **{name: tok[:, TOKEN_FIELDS.index(name)].astype(np.float32) for name in ("confidence", "margin", "entropy")},
        "committed": reason != CommitReason.NONE,
        "reason": pa.DictionaryArray.from_arrays(pa.array(reason, pa.int8()), pa.array(REASON_NAMES)),
        **_extra([t for _, t in kept], TOKEN_EXTRA, TOKEN_SCHEMA, "extra_tokens", [len(t.reasons) for _, t in kept]),
    }, schema=TOKEN_SCHEMA)
