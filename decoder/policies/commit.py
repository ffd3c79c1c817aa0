"""Commit policies of the masked engine: LLaDA's schedule (`none`: fixed steps) and Fast-dLLM's threshold."""
from __future__ import annotations

import torch

from decoder.config import DecodeConfig
from decoder.policies.base import StepContext, topk_mask
from decoder.types import CommitReason


class SchedulePolicy:
    """LLaDA's baseline: commit the top-k by remasking score, k from the uniform transfer schedule."""
    kind, reason = "commit", CommitReason.SCHEDULE
    reads, reads_span = frozenset(), False   # signals it reads (beyond x0 and the score), and where

    def __init__(self, cfg: DecodeConfig) -> None:
        pass

    def select(self, ctx: StepContext) -> torch.Tensor:
        return topk_mask(ctx.score, ctx.candidates, ctx.k)


class FastDllmPolicy:
    """Fast-dLLM: commit every candidate whose confidence >= threshold_prob, at least one per step."""
    kind, reason = "commit", CommitReason.THRESHOLD
    reads, reads_span = frozenset({"confidence"}), False

    def __init__(self, cfg: DecodeConfig) -> None:
        self.threshold_prob = cfg.fastdllm.threshold_prob

    def select(self, ctx: StepContext) -> torch.Tensor:
        confident = ctx.candidates & (ctx.signals.confidence >= self.threshold_prob)
        best = topk_mask(ctx.score, ctx.candidates, torch.ones_like(ctx.k))
        return confident | best
