"""Per-position trajectory features for the TSPD controller (pure tensor functions).

Computed once per step from the signals the engine already has (no extra forward) plus a small
running state per answer position. The same function is replayed over trace files to build training
rows (training/labels.py), so features seen in training and at decode time are the same by construction.
Shapes: every input and output is [...] over positions (e.g. [B, G]); features are [..., F].
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

FEATURE_NAMES = ("confidence", "entropy", "margin", "margin_delta", "margin_ema", "stable_steps",
                 "rel_pos_answer", "rel_pos_block", "progress")


@dataclass
class TrajectoryState:
    """Running state per position: last margin (NaN before the first observation), EMA of the margin
    change, last argmax (-1 before the first observation) and how many steps the argmax has held."""
    prev_margin: torch.Tensor
    margin_ema: torch.Tensor
    prev_argmax: torch.Tensor
    stable_steps: torch.Tensor

    @classmethod
    def empty(cls, shape, device="cpu") -> "TrajectoryState":
        return cls(torch.full(shape, float("nan"), device=device), torch.zeros(shape, device=device),
                   torch.full(shape, -1, dtype=torch.long, device=device), torch.zeros(shape, device=device))


def trajectory_features(confidence: torch.Tensor, entropy: torch.Tensor, margin: torch.Tensor,
                        argmax: torch.Tensor, state: TrajectoryState, rel_pos_answer: torch.Tensor,
                        rel_pos_block: torch.Tensor, progress: torch.Tensor,
                        ema_decay: float = 0.5) -> tuple[torch.Tensor, TrajectoryState]:
    """(features [..., F] in FEATURE_NAMES order, next state). margin_delta is 0 at the first observation;
    stable_steps counts consecutive steps with an unchanged argmax (0 at the first observation)."""
    seen = ~torch.isnan(state.prev_margin)
    delta = torch.where(seen, margin - state.prev_margin, torch.zeros_like(margin))
    ema = torch.where(seen, ema_decay * state.margin_ema + (1 - ema_decay) * delta, torch.zeros_like(margin))
    same = seen & (argmax == state.prev_argmax)
    stable = torch.where(same, state.stable_steps + 1, torch.zeros_like(state.stable_steps))
    feats = torch.stack([confidence.float(), entropy.float(), margin.float(), delta.float(), ema.float(),
                         stable.float(), rel_pos_answer.float().expand_as(margin),
                         rel_pos_block.float().expand_as(margin), progress.float().expand_as(margin)], -1)
    return feats, TrajectoryState(margin.float(), ema.float(), argmax.long(), stable.float())


def relative_positions(g: torch.Tensor, gmax: int, block_length: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """For rows of answer length g [B] right-aligned in a window of gmax columns: (position / (g-1),
    (position mod block) / (block-1)), both [B, gmax]; columns left of a row's answer get 0."""
    col = torch.arange(gmax, device=device)
    pos = (col - (gmax - g[:, None])).clamp(min=0)
    rel_answer = pos / (g[:, None] - 1).clamp(min=1)
    rel_block = (pos % block_length) / max(block_length - 1, 1)
    return rel_answer.float(), rel_block.float()
