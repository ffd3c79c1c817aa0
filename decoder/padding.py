"""Left padding for batches of prompts of different lengths.

Rows are right-aligned so every answer span ends at the same column; the attention mask hides pads and
`position_ids = cumsum(mask) - 1` gives each row the positions it would have alone, which is what makes
batched greedy decoding identical to decoding the row alone.
"""
from __future__ import annotations

import torch


def left_pad(rows: list[list[int]], pad_id: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token lists into ([B, W] ids, [B, W] mask) with pads on the left."""
    width = max(len(r) for r in rows) if width is None else width
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r) > width:
            raise ValueError(f"row {i} has {len(r)} tokens, more than the width {width}")
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L] positions counting only real tokens (pads get 0, harmless: they are masked out)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
