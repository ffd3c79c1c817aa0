"""Per-row state of the canvas engine, and its conversion to a `SequenceResult` with traces.

A row is a request decoding canvas after canvas: its encoder cache, the tokens still to encode (its prompt,
then each committed canvas), the current canvas, its self-conditioning soft embeddings, the argmax history of
the stop rule, and what the traces need. Attribute names the exit policies read (`gen_length`,
`answer_tokens`, `prompt_length`) describe the current canvas, the span those policies aggregate over.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from decoder.types import Request, SequenceResult, SequenceTrace
from decoder.families.canvas_kv import RowKV


@dataclass
class CanvasRow:
    request: Request
    n_tokens: int                      # answer tokens at most (the row's max_new_tokens)
    canvases: int                      # canvases in its budget: ceil(n_tokens / C)
    steps_per_canvas: int
    generator: torch.Generator | None
    cache: RowKV
    canvas_length: int
    pending: list[int] = field(default_factory=list)   # tokens to encode before the next canvas starts
    admitted_at: float = field(default_factory=time.time)
    canvas_index: int = 0
    canvas_step: int = 0
    step: int = 0
    canvas: torch.Tensor | None = None  # [C] current noisy canvas (None: the next canvas has not started)
    soft: torch.Tensor | None = None    # [C, H] self-conditioning soft embeddings of the last step
    history: torch.Tensor | None = None  # [S, C] argmax of the last S steps (-1: none yet)
    settled: torch.Tensor | None = None  # [C] global step from which each position's argmax held
    last_argmax: torch.Tensor | None = None
    pos: dict = field(default_factory=dict)            # exit policies' per-position state, [C] each
    output: list[int] = field(default_factory=list)
    commit_step: list[int] = field(default_factory=list)
    commit_reason: list[int] = field(default_factory=list)
    done: bool = False
    exit_reason: str = ""
    encoder_passes: int = 0
    encoded_now: int = 0               # tokens encoded for this row at the current step (trace)
    forward_tokens: int = 0
    step_records: list = field(default_factory=list)
    token_records: list = field(default_factory=list)
    canvas_settled: list = field(default_factory=list)  # per committed canvas: [C] settled steps

    @property
    def length(self) -> int:
        """Tokens a forward of this row touches at most (the scheduler's token budget)."""
        return len(self.request.prompt_ids) + self.canvases * self.canvas_length

    @property
    def prompt_length(self) -> int:
        return len(self.request.prompt_ids)

    @property
    def gen_length(self) -> int:
        return self.canvas_length

    @property
    def answer_tokens(self) -> int:
        return self.canvas_length

    @property
    def step_budget(self) -> int:
        return self.canvases * self.steps_per_canvas

    def reset_canvas(self, stability: int, fresh_pos: dict) -> None:
        c = self.canvas_length
        self.canvas = self.soft = self.last_argmax = None
        self.canvas_step = 0
        self.history = torch.full((stability, c), -1, dtype=torch.long, device=self.cache.keys[0].device)
        self.settled = torch.zeros(c, dtype=torch.long)
        self.pos = {k: v.clone() for k, v in fresh_pos.items()}


def to_result(r: CanvasRow, eos_ids: set[int], pad_id: int) -> SequenceResult:
    """The finished row: output = its committed canvases up to n_tokens, after the first EOS `pad_id` (as
    `generate()` pads); token rows get each position's settled step of their canvas."""
    out = list(r.output[:r.n_tokens])
    first = next((i for i, t in enumerate(out) if t in eos_ids), None)
    if first is not None:
        out = out[:first + 1] + [pad_id] * (len(out) - first - 1)
    trace = None
    if r.step_records:
        steps = np.stack([s for s, _ in r.step_records]).astype(np.float32)
        extra = {k: np.array([e[k] for _, e in r.step_records]) for k in ("canvas", "accepted", "entropy_mean")}
        trace = SequenceTrace(steps, None, None, extra_steps=extra)
        if r.token_records:
            trace = _with_tokens(trace, r)
    return SequenceResult(
        id=r.request.id, prompt_ids=list(r.request.prompt_ids), output_ids=out, steps_taken=r.step,
        step_budget=r.step_budget, exit_reason=r.exit_reason, commit_step=r.commit_step[:r.n_tokens],
        commit_reason=r.commit_reason[:r.n_tokens], trace=trace, submitted_at=r.request.submitted_at,
        admitted_at=r.admitted_at, finished_at=time.time(), refreshes=0,
        forward_tokens=r.forward_tokens, encoder_passes=r.encoder_passes)


def _with_tokens(trace: SequenceTrace, r: CanvasRow) -> SequenceTrace:
    """Token rows: per step, every canvas position (all are resampled each step)."""
    steps, canvases, tokens, reasons, accepted = zip(*r.token_records)
    c = r.canvas_length
    settled = np.stack([np.asarray(s) for s in r.canvas_settled]) if r.canvas_settled else np.zeros((1, c))
    trace.token_step = np.repeat(np.asarray(steps, dtype=np.int32), c)
    trace.position = np.concatenate([k * c + np.arange(c) for k in canvases]).astype(np.int32)
    trace.tokens = np.concatenate(tokens).astype(np.float32)
    trace.reasons = np.concatenate(reasons).astype(np.int8)
    trace.extra_tokens = {"accepted": np.concatenate(accepted).astype(bool),
                          "settled_step": np.concatenate([settled[k] for k in canvases]).astype(np.int32)}
    return trace
