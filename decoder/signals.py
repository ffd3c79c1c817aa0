"""Per-position signals of one step, computed only where and only as far as the policies read them.

Shapes: a chunk of logits is [n, V] (n positions, any float dtype, reduced in float32); the finished
signals are [B, G] over the answer window. `x0` is the candidate token (argmax, or argmax after Gumbel
noise in float64 when temperature > 0, as LLaDA does); confidence is the softmax probability of x0 under
the raw logits; margin is top-1 minus top-2 of the raw logits (SchED's signal, logit units); entropy is in
nats; argmax is the raw argmax (differs from x0 only when sampled). The sampling distribution's signals
(Dream's scores) are read off q = softmax(filter(logits / temperature)) with top-p then top-k filtering, as
Dream computes them: sample_prob (q of x0), sample_margin (top-1 minus top-2 of q, probability units) and
sample_neg_entropy (sum q log(q + 1e-10), nats, <= 0). Names a consumer may read: SIGNALS, SAMPLE_SIGNALS.
Row reductions over V happen per chunk (`reduce_chunk`); the cheap element-wise finish happens once on the
dense [B, G] window (`finish`), so a value does not depend on which chunk or batch its position was reduced
in.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

SIGNALS = ("x0", "confidence", "margin", "entropy", "argmax")
SAMPLE_SIGNALS = ("sample_prob", "sample_margin", "sample_neg_entropy")


@dataclass
class StepSignals:
    """All [B, G]: x0 (long), confidence, margin, entropy (float32). Positions that were not needed hold
    x0 = the window's current token and 0.0 elsewhere; nothing reads them. argmax and the sample_* signals
    are None unless computed."""
    x0: torch.Tensor
    confidence: torch.Tensor
    margin: torch.Tensor
    entropy: torch.Tensor
    argmax: torch.Tensor | None = None
    sample_prob: torch.Tensor | None = None
    sample_margin: torch.Tensor | None = None
    sample_neg_entropy: torch.Tensor | None = None


def chunk_bytes_per_position(vocab: int, itemsize: int, needs: frozenset, temperature: float,
                             distribution: bool = False) -> int:
    """Bytes of the temporaries one position costs while its chunk is reduced (the memory bound's unit):
    the head output, its float32 copy (when the model is not float32), one float32 exp/probs buffer when a
    normaliser is needed, their product for the entropy, and the float64 uniforms, logits and noise of
    Gumbel sampling; with a sampling distribution (filters, Dream's sampler) its tempered copy, a sort
    (values and indices), the probabilities and the noise."""
    per = itemsize + (4 if itemsize != 4 else 0)
    if needs & {"confidence", "entropy"}:
        per += 4
    if "entropy" in needs:
        per += 4
    if temperature > 0:
        per += 3 * 8
    if distribution:
        per += 4 + 12 + 4 + 4
    return per * vocab


def filter_logits(z: torch.Tensor, top_p: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """Top-p then top-k filtering of logits [n, V] (a new tensor; removed entries at the dtype's min), as
    Dream and HF order them: top-p keeps the smallest prefix of the sorted distribution whose mass exceeds
    top_p (the first token always), top-k the k largest logits (ties at the k-th kept)."""
    if top_p < 1.0:
        sorted_z, order = torch.sort(z, descending=True)
        drop = torch.cumsum(torch.softmax(sorted_z, dim=-1), dim=-1) > top_p
        drop[..., 1:] = drop[..., :-1].clone()
        drop[..., 0] = False
        z = z.masked_fill(torch.zeros_like(z, dtype=torch.bool).scatter_(-1, order, drop), torch.finfo(z.dtype).min)
    if top_k > 0:
        kth = torch.topk(z, min(top_k, z.shape[-1])).values[..., -1:]
        z = z.masked_fill(z < kth, torch.finfo(z.dtype).min)
    return z


def sampling_probs(z: torch.Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """q [n, V]: softmax of the tempered (temperature > 0), filtered float32 logits z [n, V]."""
    return torch.softmax(filter_logits(z / temperature if temperature > 0 else z, top_p, top_k), dim=-1)


def sample_reductions(q: torch.Tensor, x0: torch.Tensor, needs: frozenset) -> dict[str, torch.Tensor]:
    """Dream's scores from the sampling distribution q [n, V] and the chosen tokens x0 [n] -> [n] each."""
    out: dict[str, torch.Tensor] = {}
    if "sample_prob" in needs:
        out["sample_prob"] = q.gather(-1, x0[:, None]).squeeze(-1)
    if "sample_margin" in needs:
        top = torch.topk(q, 2, dim=-1).values
        out["sample_margin"] = top[:, 0] - top[:, 1]
    if "sample_neg_entropy" in needs:
        out["sample_neg_entropy"] = torch.sum(q * torch.log(q + 1e-10), dim=-1)
    return out


def reduce_chunk(z: torch.Tensor, needs: frozenset, x0: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Row reductions of float32 logits z [n, V] -> dict of [n] tensors: x0, top1 (logit of x0), max and
    top2, log_z, pz (= sum of softmax * logits), p_x0 (softmax of a sampled x0), whichever `needs`
    requires. A given `x0` (sampled) replaces the argmax. `z` may be overwritten (callers pass a chunk they
    own)."""
    out: dict[str, torch.Tensor] = {}
    if "margin" in needs:
        top = z.topk(2, dim=-1).values
        out["top2"] = top[:, 1]
    if x0 is None:  # the first maximum, as argmax picks it
        out["top1"], out["x0"] = z.max(-1)
    else:
        out["x0"] = x0
        out["top1"] = z.gather(-1, x0[:, None]).squeeze(-1)
    sampled_conf = x0 is not None and "confidence" in needs
    if "confidence" in needs and not ("entropy" in needs or sampled_conf):
        # log-sum-exp as torch.logsumexp computes it (max + log(sum(exp(z - max)))), in place: z is not read
        # again, and one [n, V] temporary and a pass fewer matter at a 126k vocabulary
        top1 = out["top1"]
        out["log_z"] = z.sub_(top1[:, None]).exp_().sum(-1).log_().add_(top1)
    elif needs & {"confidence", "entropy"}:
        log_z = torch.logsumexp(z, dim=-1)
        out["log_z"] = log_z
        if "entropy" in needs or sampled_conf:
            probs = torch.exp(z - log_z[:, None])
            if sampled_conf:  # the probability of a sampled token, read off the softmax as LLaDA does
                out["p_x0"] = probs.gather(-1, out["x0"][:, None]).squeeze(-1)
            if "entropy" in needs:
                out["pz"] = (probs * z).sum(-1)
    if "margin" in needs and x0 is not None:
        out["max"] = top[:, 0]
    elif "margin" in needs:
        out["max"] = out["top1"]
    if "argmax" in needs:
        out["argmax"] = z.argmax(-1) if x0 is not None else out["x0"]
    return out


def finish(parts: dict[str, torch.Tensor], where: torch.Tensor, window: torch.Tensor) -> StepSignals:
    """Scatter the [n] reductions of the positions `where` ([B, G] bool, row-major order) into [B, G] and
    derive the signals there."""
    def dense(name: str, fill: float = 0.0) -> torch.Tensor:
        out = torch.full(where.shape, fill, dtype=torch.float32, device=where.device)
        if name in parts:
            out[where] = parts[name].float()
        return out

    x0 = window.clone()
    x0[where] = parts["x0"].to(x0.dtype)
    top1, log_z = dense("top1"), dense("log_z")
    confidence = (dense("p_x0") if "p_x0" in parts else torch.exp(top1 - log_z) if "log_z" in parts
                  else dense("none"))
    margin = dense("max") - dense("top2") if "top2" in parts else dense("none")
    entropy = log_z - dense("pz") if "pz" in parts else dense("none")
    argmax = None
    if "argmax" in parts:
        argmax = window.clone()
        argmax[where] = parts["argmax"].to(argmax.dtype)
    extra = {name: dense(name) for name in SAMPLE_SIGNALS if name in parts}
    return StepSignals(x0=x0, confidence=confidence, margin=margin, entropy=entropy, argmax=argmax, **extra)


def gumbel_argmax(logits, temperature, generators, lengths=None):
    """argmax(logits + temperature * Gumbel) in float64 with one generator per row (batch-invariant noise)."""
    if temperature <= 0:
        return logits.argmax(-1)
    out = logits.argmax(-1)
    g_max, v = logits.shape[1:]
    lengths = lengths or [g_max] * len(generators)
    for i, (gen, n) in enumerate(zip(generators, lengths)):
        out[i, g_max - n:] = gumbel_rows(logits[i, g_max - n:], temperature, gen)
    return out


def gumbel_rows(logits: torch.Tensor, temperature: float, gen: torch.Generator | None) -> torch.Tensor:
    """Sampled tokens [n] for logits [n, V], drawing n x V float64 uniforms from `gen` in row order."""
    u = torch.rand(logits.shape, generator=gen, dtype=torch.float64, device="cpu").to(logits.device)
    gumbel = -torch.log(-torch.log(u.clamp(min=1e-300)))
    return (logits.double() + temperature * gumbel).argmax(-1)


def step_signals(logits, temperature=0.0, generators=None, lengths=None) -> StepSignals:
    """Every signal at every position of full [B, G, V] logits (tests, references; the engine computes
    only what it needs through decoder/masked/projection.py)."""
    b, g, v = logits.shape
    where = torch.ones(b, g, dtype=torch.bool, device=logits.device)
    x0 = gumbel_argmax(logits, temperature, generators or [None] * b, lengths) if temperature > 0 else None
    parts = reduce_chunk(logits.float().reshape(-1, v), frozenset(SIGNALS),
                         None if x0 is None else x0.reshape(-1))
    return finish(parts, where, torch.zeros(b, g, dtype=torch.long, device=logits.device))


def aggregate(values: torch.Tensor, mask: torch.Tensor, how: str = "mean", quantile: float = 0.5) -> torch.Tensor:
    """Reduce [B, G] values over the positions in `mask` per row -> [B]; rows with no position give +inf."""
    if how == "mean":
        total = (values * mask).sum(-1)
        count = mask.sum(-1)
        out = total / count.clamp(min=1)
    elif how in ("min", "median", "quantile", "quantile_linear"):
        q = {"min": 0.0, "median": 0.5}.get(how, quantile)
        filled = torch.where(mask, values, torch.nan)
        # quantile: the lower of the two order statistics (torch.median's convention); quantile_linear:
        # interpolated between them, as torch.quantile (SchED's released `q` aggregate) computes it
        out = torch.nanquantile(filled.float(), q, dim=-1,
                                interpolation="linear" if how == "quantile_linear" else "lower")
    else:
        raise ValueError(f"unknown aggregate {how!r}; use mean, median, min, quantile or quantile_linear")
    return torch.where(mask.any(-1), out, torch.inf)
