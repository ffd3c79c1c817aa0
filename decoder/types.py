"""The decoder library's shared vocabulary: what goes in (`Request`), what comes out (`SequenceResult`,
`RowError`), why a row ended (`ExitReason`), why a position was committed (`CommitReason`) and what one step
of a row records (`StepRecord`).

Torch-free on purpose: the writer, the report and the driver import these names without loading torch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import NamedTuple

import numpy as np


@dataclass
class Request:
    """One row to decode. Per-row fields left None take the engine's config."""
    id: str
    prompt_ids: list[int]
    gen_length: int | None = None      # per-row override of cfg.gen_length (answer tokens, any positive count)
    seed_key: str | None = None        # seeds the row's generator (default: id), so output is batch-invariant
    temperature: float | None = None   # per-row override of cfg.temperature
    steps: int | None = None           # per-row step budget (a multiple of the row's blocks); None: cfg's rate
    tau_low_logit: float | None = None  # per-row override of SchED's tau_low (logit margin)
    top_p: float | None = None         # per-row override of cfg.top_p (probability mass kept)
    top_k: int | None = None           # per-row override of cfg.top_k (tokens; 0 = off)
    submitted_at: float = field(default_factory=time.time)


class ExitReason(StrEnum):
    """Why a row stopped (a str, so it compares and serialises as its value)."""
    STEPS = "steps"                    # its step budget ran out
    ALL_COMMITTED = "all_committed"    # every position was committed before the budget ran out
    EOS = "eos"                        # an end-of-text was committed with everything before it decoded
    SCHED = "sched"                    # SchED's exit policy (the remaining masks filled)
    PROPHET = "prophet"                # Prophet's exit policy
    DGEMMA = "dgemma"                  # DiffusionGemma's stable-and-confident stop rule ended its last canvas


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
    AUTOREGRESSIVE = 9  # a block family's block start: the argmax of the previous block's last position
    EDIT = 10          # a block family's token edit (LLaDA2.1): a decided token replaced by a confident other one


REASON_NAMES = [r.name.lower() for r in sorted(CommitReason)]


class StepRecord(NamedTuple):
    """What one step decided for one row; a trace's `steps` array holds these fields as columns, in this order."""
    step: float            # 0-based global step of the row
    progress: float        # p used by the exit policy at this step
    tau: float             # threshold tau(p), logit units (NaN without an exit policy)
    gbar: float            # aggregated margin over the still-masked span, logit units
    n_committed: float     # positions committed at this step (exit/EOS fills included)
    exit: float            # 1: an exit policy stopped the row at this step
    refresh: float         # 1: the step ran the row's full sequence (always, without a KV cache)
    forward_tokens: float  # tokens the step's forward ran for the row (sequence or cached span)


STEP_FIELDS = StepRecord._fields
#: per still-masked position of a step, the columns of a trace's `tokens` array, in this order
TOKEN_FIELDS = ("argmax", "confidence", "margin", "entropy")


@dataclass
class SequenceTrace:
    """One finished row's trace. steps [S, len(STEP_FIELDS)]; token rows, one per still-masked position of each
    step (N in all): tokens [N, len(TOKEN_FIELDS)], reasons [N] int8 CommitReason, token_step [N] and position [N]
    int32 (all None when tracing at `steps` level). Canvas families add columns of their own by name
    (`extra_steps`: [S] each, `extra_tokens`: [N] each)."""
    steps: np.ndarray
    tokens: np.ndarray | None
    reasons: np.ndarray | None
    token_step: np.ndarray | None = None
    position: np.ndarray | None = None
    extra_steps: dict | None = None
    extra_tokens: dict | None = None

    def step_column(self, name: str) -> np.ndarray:
        """[S] one StepRecord field over the row's steps."""
        return self.steps[:, STEP_FIELDS.index(name)]

    def token_column(self, name: str) -> np.ndarray:
        """[N] one TOKEN_FIELDS column over the traced positions."""
        return self.tokens[:, TOKEN_FIELDS.index(name)]


@dataclass
class SequenceResult:
    """One finished row. `output_ids` are the row's answer tokens (at most its max_new_tokens: positions its
    last block holds past them are EOS-fixed and dropped); commit_* are per answer position."""
    id: str
    prompt_ids: list[int]
    output_ids: list[int]
    steps_taken: int                   # forwards this row took part in (= its NFE)
    step_budget: int
    exit_reason: ExitReason
    commit_step: list[int]             # 0-based step at which each position was committed
    commit_reason: list[int]           # CommitReason per position
    trace: SequenceTrace | None
    submitted_at: float
    admitted_at: float
    finished_at: float
    refreshes: int = 0                 # KV-cache refresh forwards (full sequence) among its steps
    forward_tokens: int = 0            # tokens the forwards ran for this row (sequence or cached span)
    encoder_passes: int | None = None  # canvas families: encoder passes (prefill + canvas commits), apart
                                       # from the decoder forwards counted in steps_taken; None otherwise


@dataclass
class RowError:
    """A request that could not be decoded; `reason` goes to the errors output."""
    id: str
    reason: str
