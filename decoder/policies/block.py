"""The block-diffusion families' commit rule as a policy (`block`): threshold + quota over the current (sub-)block.

Every candidate (a masked position of the row's current block, or of its first unfinished sub-block) whose
probability is above the threshold is committed when there are at least the step's quota of them; otherwise
the quota's most probable candidates are. This is LLaDA2.0's rule, SDAR's `low_confidence_dynamic` and, with a
quota of one, Fast-dLLM v2's. The block engine sets `threshold_prob` from the family's loop and decode.block
(built alone, it takes decode.block.threshold_prob, else 0.9).
"""
from __future__ import annotations

import torch

from decoder.block.sampling import threshold_commits
from decoder.config import DecodeConfig
from decoder.policies.base import StepContext
from decoder.types import CommitReason


class BlockCommitPolicy:
    kind, reason = "commit", CommitReason.THRESHOLD
    reads, reads_span = frozenset({"confidence"}), False

    def __init__(self, cfg: DecodeConfig) -> None:
        self.threshold_prob = 0.9 if cfg.block.threshold_prob is None else cfg.block.threshold_prob
        self.over_block = False   # SDAR's unclamped quota (decoder/block/sampling.py threshold_commits)

    def select(self, ctx: StepContext) -> torch.Tensor:
        return threshold_commits(ctx.signals.confidence, ctx.candidates, self.threshold_prob, ctx.k, self.over_block)
