"""Per-row state of the block engine, and its conversion to a `SequenceResult` with traces.

A row decodes block after block. Blocks are aligned to the row's own position 0: block k holds positions
[k * B, (k + 1) * B); its first block may start with the prompt's tail (or, for families that start a block
autoregressively, with that token), which is fixed, not decoded. The row's cache holds every position before
its current block (decoder/block/kv.py). Attribute names the exit policies read (`gen_length`,
`answer_tokens`, `prompt_length`) describe the current block, the span those policies aggregate over.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from decoder.types import Request, SequenceResult, SequenceTrace


@dataclass
class BlockRow:
    request: Request
    n_tokens: int                      # answer tokens at most (the row's max_new_tokens)
    block_length: int
    steps_per_block: int               # the block's step budget (the quota's denominator)
    generator: torch.Generator | None
    admitted_at: float = field(default_factory=time.time)
    block_index: int = -1              # absolute block (positions block_index * B ...); -1: not started
    block: torch.Tensor | None = None  # [B] current block's tokens
    fixed: torch.Tensor | None = None  # [B] bool: prompt tail / autoregressive start, never decoded
    cstep: torch.Tensor | None = None  # [B] step at which each position was committed (-1: not yet)
    creason: torch.Tensor | None = None   # [B] its CommitReason
    block_step: int = 0
    post_steps: int = 0                # editing: steps since the block's last mask was decided
    step: int = 0                      # denoise forwards so far (its NFE)
    pending: list[int] = field(default_factory=list)   # tokens to write to the cache before the next step
    start_token: int | None = None     # the next block's autoregressive first token, once known
    sequence: list[int] = field(default_factory=list)  # every finished token (prompt, finished blocks)
    output: list[int] = field(default_factory=list)
    commit_step: list[int] = field(default_factory=list)
    commit_reason: list[int] = field(default_factory=list)
    pos: dict = field(default_factory=dict)   # exit policies' per-position state of the block, [B] each
    done: bool = False
    exit_reason: str = ""
    block_reasons: list[str] = field(default_factory=list)   # why each finished block ended
    encoder_passes: int = 0            # cache-writing forwards: prefill, then one per finished block
    stored_now: int = 0                # tokens written to the cache before this step (trace)
    forward_tokens: int = 0
    step_records: list = field(default_factory=list)
    token_records: list = field(default_factory=list)

    @property
    def prompt_length(self) -> int:
        return len(self.request.prompt_ids)

    @property
    def first_block(self) -> int:
        return self.prompt_length // self.block_length

    @property
    def blocks(self) -> int:
        """Blocks the row decodes at most: from the one after the prompt's whole blocks to the one holding its
        last answer position."""
        return -(-(self.prompt_length + self.n_tokens) // self.block_length) - self.first_block

    @property
    def step_budget(self) -> int:
        return self.blocks * self.steps_per_block

    @property
    def length(self) -> int:
        """Tokens a forward of this row touches at most (the scheduler's token budget)."""
        return self.prompt_length + self.n_tokens

    @property
    def gen_length(self) -> int:
        return self.block_length

    @property
    def answer_tokens(self) -> int:
        return self.block_length

    @property
    def block_offset(self) -> int:
        """Answer position of the block's first slot (negative while the block holds prompt tokens)."""
        return self.block_index * self.block_length - self.prompt_length


def to_result(r: BlockRow) -> SequenceResult:
    trace = None
    if r.step_records:
        steps = np.stack([s for s, _ in r.step_records]).astype(np.float32)
        trace = SequenceTrace(steps, None, None, extra_steps={"block": np.array([b for _, b in r.step_records])})
        if r.token_records:
            step, pos, tok, reason = zip(*r.token_records)
            trace.token_step = np.concatenate(step).astype(np.int32)
            trace.position = np.concatenate(pos).astype(np.int32)
            trace.tokens = np.concatenate(tok).astype(np.float32)
            trace.reasons = np.concatenate(reason).astype(np.int8)
    n = len(r.output)
    return SequenceResult(
        id=r.request.id, prompt_ids=list(r.request.prompt_ids), output_ids=list(r.output), steps_taken=r.step,
        step_budget=r.step_budget, exit_reason=r.exit_reason, commit_step=r.commit_step[:n],
        commit_reason=r.commit_reason[:n], trace=trace, submitted_at=r.request.submitted_at,
        admitted_at=r.admitted_at, finished_at=time.time(), refreshes=0, forward_tokens=r.forward_tokens,
        encoder_passes=r.encoder_passes)
