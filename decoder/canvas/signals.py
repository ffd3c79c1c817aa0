"""One canvas step's head and reductions, in chunks of positions under the lean-step memory bound.

The decoder states [B, C, H] are projected a chunk of positions at a time ([n, V] float32 logits, never the
[B, C, V] tensor): user logits processors, the raw top-2 margin (exit policies), the temperature, the sample
(multinomial: torch's global RNG, or each row's generator over its own positions in order, so a sample does
not depend on the chunk or the batch), argmax, entropy, confidence and the self-conditioning soft embeddings
[n, H] for the next step. On CPU `torch.multinomial` draws the same numbers whatever the chunking (tested).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from decoder.canvas.sampler import categorical_entropy, top2_margin

#: float32 [n, V] temporaries alive while a chunk is reduced: logits, tempered logits, probabilities, the
#: entropy's normalised logits / probabilities / product, multinomial's noise and quotient
FLOAT32_COPIES = 8


@dataclass
class CanvasSignals:
    """[B, C]: sample, argmax (long), entropy (nats, tempered), confidence (tempered probability of the argmax),
    margin (raw logit units; 0 when not needed); soft [B, C, H] model dtype; the chunk temporaries' bytes."""
    sample: torch.Tensor
    argmax: torch.Tensor
    entropy: torch.Tensor
    confidence: torch.Tensor
    margin: torch.Tensor
    soft: torch.Tensor
    temporaries_bytes: int


def bytes_per_position(vocab: int, dtype: torch.dtype) -> int:
    """Bytes one position costs while its chunk is reduced (the bound's unit): the float32 copies plus the
    self-conditioning cast and softmax in the model dtype."""
    item = torch.empty(0, dtype=dtype).element_size()
    return vocab * (4 * FLOAT32_COPIES + 2 * item)


def chunk_positions(vocab: int, max_logits_mb: float, dtype: torch.dtype) -> int:
    return max(1, int(max_logits_mb * 2 ** 20) // bytes_per_position(vocab, dtype))


def _sample(probs: torch.Tensor, rows: torch.Tensor, generators: list | None) -> torch.Tensor:
    """[n] one draw per position; per-row generators draw over their own consecutive positions."""
    if generators is None:
        return torch.multinomial(probs, 1).squeeze(-1)
    out = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    bounds = torch.cat([torch.tensor([0]), (rows[1:] != rows[:-1]).nonzero().squeeze(-1).cpu() + 1,
                        torch.tensor([len(rows)])]).tolist()
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        out[lo:hi] = torch.multinomial(probs[lo:hi], 1, generator=generators[int(rows[lo])]).squeeze(-1)
    return out


@torch.inference_mode()
def canvas_signals(adapter, hidden: torch.Tensor, temps: torch.Tensor, generators: list | None,
                   processors: list, need_margin: bool, n_chunk: int) -> CanvasSignals:
    b, c, h = hidden.shape
    flat = hidden.reshape(b * c, h)
    dev = hidden.device
    rows = torch.arange(b, device=dev).repeat_interleave(c)
    positions = torch.arange(c, device=dev).repeat(b)
    sample = torch.empty(b * c, dtype=torch.long, device=dev)
    argmax = torch.empty_like(sample)
    entropy, confidence, margin = (torch.zeros(b * c, device=dev) for _ in range(3))
    soft = torch.empty(b * c, h, dtype=hidden.dtype, device=dev)
    for lo in range(0, b * c, n_chunk):
        sl = slice(lo, min(lo + n_chunk, b * c))
        z = adapter.head(flat[sl])
        for proc in processors:
            z = proc(z, positions[sl])
        if need_margin:
            margin[sl] = top2_margin(z)
        zt = z / temps[rows[sl]][:, None]
        probs = torch.softmax(zt, dim=-1, dtype=torch.float32)
        sample[sl] = _sample(probs, rows[sl], generators)
        argmax[sl] = zt.argmax(-1)
        entropy[sl] = categorical_entropy(zt)
        confidence[sl] = probs.gather(-1, argmax[sl, None]).squeeze(-1)
        soft[sl] = adapter.soft_embeddings(zt)
    used = min(n_chunk, b * c) * bytes_per_position(adapter.vocab_size, hidden.dtype)
    shape = (b, c)
    return CanvasSignals(sample.view(shape), argmax.view(shape), entropy.view(shape), confidence.view(shape),
                         margin.view(shape), soft.view(b, c, h), used + soft.numel() * soft.element_size())
