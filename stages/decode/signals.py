"""Per-position signals computed once per step from the answer-window logits (no extra forward).

Shapes: logits [B, G, V] (any float dtype); every output is [B, G]. `x0` is the candidate token (argmax,
or argmax after Gumbel noise in float64 when temperature > 0, as LLaDA does); confidence is the softmax
probability of x0 under the raw logits; margin is top-1 minus top-2 of the raw logits (SchED's signal,
logit units); entropy is in nats.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StepSignals:
    """All [B, G]: x0 (long), confidence, margin, entropy (float32)."""
    x0: torch.Tensor
    confidence: torch.Tensor
    margin: torch.Tensor
    entropy: torch.Tensor


def gumbel_argmax(logits, temperature, generators, lengths=None):
    """argmax(logits + temperature * Gumbel) in float64 with one generator per row (batch-invariant noise)."""
    if temperature <= 0:
        return logits.argmax(-1)
    out = logits.argmax(-1)
    g_max, v = logits.shape[1:]
    lengths = lengths or [g_max] * len(generators)
    for i, (gen, n) in enumerate(zip(generators, lengths)):
        u = torch.rand((n, v), generator=gen, dtype=torch.float64, device="cpu").to(logits.device)
        gumbel = -torch.log(-torch.log(u.clamp(min=1e-300)))
        out[i, g_max - n:] = (logits[i, g_max - n:].double() + temperature * gumbel).argmax(-1)
    return out


def step_signals(logits, temperature=0.0, generators=None, lengths=None):
    logits32 = logits.float()
    top2 = logits32.topk(2, dim=-1).values
    margin = top2[..., 0] - top2[..., 1]
    log_z = torch.logsumexp(logits32, dim=-1)
    probs = torch.exp(logits32 - log_z.unsqueeze(-1))
    entropy = log_z - (probs * logits32).sum(-1)
    if temperature > 0:
        x0 = gumbel_argmax(logits, temperature, generators or [None] * logits.shape[0], lengths)
        confidence = probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    else:
        x0 = logits32.argmax(-1)
        confidence = torch.exp(top2[..., 0] - log_z)
    return StepSignals(x0=x0, confidence=confidence, margin=margin, entropy=entropy)


def aggregate(values: torch.Tensor, mask: torch.Tensor, how: str = "mean", quantile: float = 0.5) -> torch.Tensor:
    """Reduce [B, G] values over the positions in `mask` per row -> [B]; rows with no position give +inf."""
    if how == "mean":
        total = (values * mask).sum(-1)
        count = mask.sum(-1)
        out = total / count.clamp(min=1)
    elif how in ("min", "median", "quantile"):
        q = {"min": 0.0, "median": 0.5}.get(how, quantile)
        filled = torch.where(mask, values, torch.nan)
        out = torch.nanquantile(filled.float(), q, dim=-1, interpolation="lower")
    else:
        raise ValueError(f"unknown aggregate {how!r}; use mean, median, min or quantile")
    return torch.where(mask.any(-1), out, torch.inf)
