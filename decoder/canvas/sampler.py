"""DiffusionGemma's canvas sampler as pure tensor functions (the rules of transformers' `generate()`).

A canvas of C tokens starts as uniform noise and is denoised for at most N steps. Step n (0-based within the
canvas) scales the logits by the linear temperature T = t_min + (t_max - t_min) * (N - n) / N (HF counts the
remaining steps N..1), samples every position from softmax(logits / T), accepts the lowest-entropy positions
while sum(H) - max(H) <= the entropy bound (nats), re-noises the rest uniformly, and keeps the argmax. A canvas
is done when its argmax held for `stability_threshold` steps and its mean entropy is below
`confidence_threshold` nats ("StableAndConfident"); the committed canvas is the last argmax. Entropies are of
the temperature-scaled distribution, computed as `torch.distributions.Categorical` does, so the acceptance
is decided on the same numbers as HF's. Shapes: a chunk is [n, V]; canvases are [B, C].
"""
from __future__ import annotations

import torch


def temperatures(canvas_step: torch.Tensor, n_steps: int, t_min: float, t_max: float) -> torch.Tensor:
    """[B] float32 temperature per row at its 0-based canvas step, in HF's op order (float32, remaining steps)."""
    remaining = (n_steps - canvas_step).to(torch.int32)
    return t_min + ((t_max - t_min) * (remaining / n_steps))


def categorical_entropy(z: torch.Tensor) -> torch.Tensor:
    """[n] entropy (nats) of softmax(z) for logits [n, V] float32, as Categorical(logits=z).entropy()."""
    norm = z - z.logsumexp(dim=-1, keepdim=True)
    probs = torch.softmax(norm, dim=-1)
    return -(norm.clamp(min=torch.finfo(norm.dtype).min) * probs).sum(-1)


def top2_margin(z: torch.Tensor) -> torch.Tensor:
    """[n] top-1 minus top-2 of logits [n, V] (logit units)."""
    top = z.float().topk(2, dim=-1).values
    return top[:, 0] - top[:, 1]


def accept_mask(entropy: torch.Tensor, bound_nats: float) -> torch.Tensor:
    """[B, C] bool: per row, the lowest-entropy positions while cumsum(H) - H_k <= bound (entropy-bound rule)."""
    sorted_h, order = torch.sort(entropy, dim=-1, descending=False)
    keep = torch.cumsum(sorted_h, dim=-1) - sorted_h <= bound_nats
    return torch.scatter(torch.zeros_like(keep), -1, order, keep)


def renoise(sample: torch.Tensor, accepted: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """[B, C] next canvas: accepted positions take the sample, the others fresh uniform noise (HF's accept
    then renoise, which never keeps a position of the current canvas)."""
    return torch.where(accepted, sample, noise)


def stable_and_confident(history: torch.Tensor, argmax: torch.Tensor, entropy_mean: torch.Tensor,
                         confidence_nats: float) -> torch.Tensor:
    """[B] bool: argmax [B, C] equals every canvas of history [B, S, C] (S = stability_threshold; -1 = no step
    yet; S = 0 is always stable) and the mean entropy is below the threshold."""
    stable = (history == argmax[:, None, :]).all(-1).all(-1)
    return stable & (entropy_mean < confidence_nats)


def push_history(history: torch.Tensor, argmax: torch.Tensor) -> torch.Tensor:
    """history [B, S, C] shifted left by one canvas with `argmax` [B, C] last (S = 0: unchanged)."""
    if history.shape[1] == 0:
        return history
    return torch.cat([history[:, 1:], argmax[:, None, :]], dim=1)
