"""Confidence Extrapolation: a training-free modifier that forecasts each position's margin with a
Kalman filter (decoder/policies/kalman.py) and adjusts what the commit policy picked.

(a) look-ahead: also fix a candidate whose forecast lower bound (mean - z sigma, H steps ahead) reaches
fix_margin_logit; (b) stabilisation: hold back a pick whose argmax just changed, whose innovation is
large (|y| > k sqrt(S)), or whose forecast lower bound is under hold_margin_logit — always keeping at
least one pick per row so decoding progresses. On exit policies it holds a row's exit while any of its
still-masked positions has an argmax that changed at this step.
"""
from __future__ import annotations

import torch

from decoder.config import DecodeConfig
from decoder.policies.kalman import kalman_forecast, kalman_init, kalman_step
from decoder.policies.base import StepContext, topk_mask
from decoder.types import CommitReason


class ConfidenceExtrapolation:
    kind, reason, needs_features = "modifier", CommitReason.CE_LOOKAHEAD, True
    reads, reads_span = frozenset({"margin"}), True   # filters track every still-masked position
    position_state = {"kf_x": (torch.float32, 0.0, (2,)), "kf_P": (torch.float32, 0.0, (2, 2)),
                      "kf_seen": (torch.bool, False, ())}

    def __init__(self, cfg: DecodeConfig) -> None:
        self.c = cfg.ce

    def _observe(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Update every position's filter with this step's margin; returns (lower bound, oscillating, margin)."""
        c, pos, z = self.c, ctx.pos, ctx.signals.margin.float()
        x0, p0 = kalman_init(z, c.observation_noise)
        x1, p1, innov, s = kalman_step(pos["kf_x"], pos["kf_P"], z, c.process_noise, c.observation_noise)
        seen = pos["kf_seen"]
        pos["kf_x"].copy_(torch.where(seen[..., None], x1, x0))
        pos["kf_P"].copy_(torch.where(seen[..., None, None], p1, p0))
        big_innovation = seen & (innov.abs() > c.innovation_k * s.clamp(min=1e-12).sqrt())
        pos["kf_seen"].fill_(True)
        mean, var = kalman_forecast(pos["kf_x"], pos["kf_P"], c.horizon, c.process_noise)
        flipped = ctx.features[..., FEATURE_STABLE] == 0
        return mean - c.z * var.clamp(min=0).sqrt(), big_innovation | flipped, z

    def modify(self, ctx: StepContext, commit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(commit after hold-back, look-ahead additions)."""
        lower, oscillating, _ = self._observe(ctx)
        self._oscillating = oscillating
        hold = commit & (oscillating | (lower < self.c.hold_margin_logit))
        kept = commit & ~hold
        lookahead = ctx.candidates & ~commit & (lower >= self.c.fix_margin_logit) & ~oscillating
        chosen = kept | lookahead
        empty = ~chosen.any(-1) & commit.any(-1)
        keep_best = topk_mask(ctx.score, commit, torch.ones_like(ctx.k)) & empty[:, None]
        return kept | keep_best, lookahead

    def modify_exit(self, ctx: StepContext, exit_now: torch.Tensor) -> torch.Tensor:
        return exit_now & ~(self._oscillating & ctx.masked).any(-1)


FEATURE_STABLE = 5  # index of stable_steps in features.FEATURE_NAMES
