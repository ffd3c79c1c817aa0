"""The math of one block-diffusion step, as pure functions: the families' samplers and the commit rule.

Samplers return (x0, p): the candidate token of each position and its probability under the distribution it
was drawn from. Two op orders exist among the released loops and both are kept exactly, since a sampled
decode is reproducible only when the same ops consume the same random numbers in the same order:
- `logits` (LLaDA2.x, SDAR/TraDo): logits / T, top-k, then top-p on the logits (entries set to -inf),
  softmax, one multinomial draw per position;
- `probs` (Fast-dLLM v2): softmax(logits / T), top-p on the probabilities (entries zeroed; applied even at
  top_p 1, as there), renormalised, one multinomial draw per position.
At temperature 0 both take the argmax and its softmax probability.

The commit rule (LLaDA2's threshold + quota, SDAR's `low_confidence_dynamic`, Fast-dLLM v2's threshold with
its always-commit-the-best): commit every candidate whose p is above the threshold when they are at least
the step's quota; otherwise the quota's most confident candidates. Fast-dLLM v2's rule is this rule with a
quota of one.
"""
from __future__ import annotations

import torch

from decoder.policies.base import topk_mask

SAMPLERS = ("logits", "probs")


def top_k_logits(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Entries below the k-th largest set to -inf (k <= 0: unchanged)."""
    if k <= 0:
        return logits
    kth = torch.topk(logits, k).values[..., -1:]
    return torch.where(logits < kth, torch.full_like(logits, float("-inf")), logits)


def top_p_logits(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter on logits: keep the most likely tokens until their mass exceeds p (the first always)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True)
    drop = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1) > p
    drop[..., 1:] = drop[..., :-1].clone()
    drop[..., 0] = False
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, drop)
    return logits.masked_fill(mask, float("-inf"))


def top_p_probs(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter on probabilities, renormalised (Fast-dLLM v2's order)."""
    sorted_probs, order = torch.sort(probs, descending=True)
    drop = torch.cumsum(sorted_probs, dim=-1) > p
    drop[..., 1:] = drop[..., :-1].clone()
    drop[..., 0] = False
    probs = probs.masked_fill(torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, drop), 0.0)
    return probs / probs.sum(-1, keepdim=True)


def sample(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator | None,
           style: str = "logits") -> tuple[torch.Tensor, torch.Tensor]:
    """(x0 [n], p [n]) of float32 logits [n, V] for one row: argmax at temperature 0, else one draw per position
    from the row's generator, in the op order of `style` (see the module docstring)."""
    if temperature <= 0:
        probs = torch.softmax(logits, dim=-1)
        x0 = probs.argmax(-1)
        return x0, probs.gather(-1, x0[:, None])[:, 0]
    if style == "logits":
        z = logits / temperature if temperature != 1.0 else logits
        probs = torch.softmax(top_p_logits(top_k_logits(z, top_k), top_p), dim=-1)
    elif style == "probs":
        probs = torch.softmax(top_k_logits(logits / temperature, top_k), dim=-1)
        probs = top_p_probs(probs, top_p)   # always, as the reference: at 1.0 float error can drop a tail
    else:
        raise ValueError(f"unknown sampler {style!r}; known: {', '.join(SAMPLERS)}")
    x0 = torch.multinomial(probs, 1, generator=generator)[:, 0]
    return x0, probs.gather(-1, x0[:, None])[:, 0]


def quota_schedule(block_length: int, steps: int) -> list[int]:
    """Tokens the quota asks for at each step of a block: block_length split evenly over `steps`, the
    remainder to the earliest steps (LLaDA2's and SDAR's `get_num_transfer_tokens`)."""
    base, rem = divmod(block_length, steps)
    return [base + (1 if i < rem else 0) for i in range(steps)]


def threshold_commits(p: torch.Tensor, candidates: torch.Tensor, threshold: torch.Tensor | float,
                      quota: torch.Tensor, over_block: bool = False) -> torch.Tensor:
    """[B, L] bool: per row, every candidate with p > threshold when there are at least quota[b] of them, else
    the min(quota, candidates) most probable candidates (ties to the leftmost).

    `over_block` is SDAR's released rule instead: the quota's `torch.topk` runs over the whole row of
    confidences (-inf where not a candidate) unclamped, so with fewer candidates than the quota it also picks
    decided positions, which then take their fresh sample (the prompt tail of a first block included)."""
    threshold = torch.as_tensor(threshold, dtype=p.dtype, device=p.device)
    high = candidates & (p > (threshold[:, None] if threshold.dim() else threshold))
    enough = high.sum(-1) >= quota
    if over_block:
        conf = torch.where(candidates, p, float("-inf"))
        top = torch.zeros_like(candidates)
        for b in range(p.shape[0]):   # torch.topk's own order among equal values decides which decided positions
            top[b, torch.topk(conf[b], int(quota[b])).indices] = True
    else:
        top = topk_mask(p, candidates, torch.minimum(quota, candidates.sum(-1)))
    return torch.where(enough[:, None], high, top)
