"""The trace schemas and commit reasons, torch-free: the writer and report import them without loading torch.

Two tables joined on (id, step): `STEP_SCHEMA`, one row per sequence and step (what the step decided),
and `TOKEN_SCHEMA`, one row per sequence, step and answer position (what each position looked like and
whether/why it was committed then).
"""
from __future__ import annotations

from enum import IntEnum

import pyarrow as pa


class CommitReason(IntEnum):
    """Why a position was committed at a step (stored as int8 in traces)."""
    NONE = 0
    SCHEDULE = 1       # top-k of the uniform transfer schedule
    THRESHOLD = 2      # confidence threshold (Fast-dLLM)
    EXIT_FILL = 3      # filled when an exit policy stopped the row (candidate, or argmax: decode.exit_fill)
    EOS_FILL = 4       # after a committed end-of-text: padding, not work
    FORCED = 5         # at-least-one-per-step guarantee of a threshold policy
    TSPD = 6           # the TSPD controller judged the position converged
    CE_LOOKAHEAD = 7   # Confidence Extrapolation forecast the margin to clear the fixing threshold
    CANVAS = 8         # a canvas family's canvas ended (max steps or its stop rule): its last argmax committed


REASON_NAMES = [r.name.lower() for r in sorted(CommitReason)]

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

#: the canvas-only columns, filled with nulls for masked families
STEP_EXTRA = ("canvas", "accepted", "entropy_mean")
TOKEN_EXTRA = ("accepted", "settled_step")
