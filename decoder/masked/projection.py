"""One step's model call, lean: the body over the whole batch, the output head only at the positions the
policies read, in chunks whose temporaries stay under a byte bound.

For heads that can be split off the body (Llama/Qwen2-style `lm_head`, `ModelAdapter.split_head`), the
hidden states of the needed positions are gathered and projected chunk by chunk, each chunk reduced to its
signals (decoder/signals.py) before the next is projected: the [B, G, V] logits never exist. Other
heads (BERT-style masked-LM heads) run the model's own forward and the needed rows are reduced in chunks.
The mask token's logit is suppressed in each chunk in place (no copy of the logits). With temperature > 0
each row's Gumbel noise is drawn for its whole answer, in position order, from its own generator, so the
samples equal a full-logits draw whatever is projected (LLaDA's sampler). Dream's sampler (`Sampling.kind
= "dream"`) instead draws, per row and step, one categorical sample from q = softmax(filter(logits / T)) at
each still-masked answer position in position order, exactly as `torch.multinomial(q, 1)` would from the
row's generator (q / Exp(1) noise, argmax); greedy Dream takes q's argmax. With `deferred` (Dream's
`origin`, which picks positions before it samples), x0 is q's argmax and the commit policy draws the samples
of the positions it picked afterwards (`resample`), from the step's kept source. top_p / top_k filter each
chunk.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from decoder.families.base import ModelAdapter
from decoder.signals import (SAMPLE_SIGNALS, StepSignals, chunk_bytes_per_position, filter_logits, finish,
                                   reduce_chunk, sample_reductions, sampling_probs)


@dataclass
class Sampling:
    """How x0 is drawn: kind "gumbel" (LLaDA: argmax of logits + T * Gumbel noise in float64, noise for the
    whole answer) or "dream" (Dream: a categorical draw from q at each still-masked position; greedy: q's
    argmax); top_p (1 = off) and top_k (0 = off) filter the tempered logits first."""
    top_p: float = 1.0
    top_k: int = 0
    kind: str = "gumbel"
    deferred: bool = False     # dream: sample only the positions the policy picks, after it picks them

    @property
    def filtered(self) -> bool:
        return self.top_p < 1.0 or self.top_k > 0


@dataclass
class ProjectionStats:
    """Running totals: positions projected, chunks, seconds in the model (body + head matmuls), and the
    largest chunk's temporaries in bytes (from their shapes)."""
    positions: int = 0
    chunks: int = 0
    forward_s: float = 0.0
    peak_temp_bytes: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class StepInputs:
    """What one step projects. ids/attn [B, W]; where [B, G] bool (needed positions, answer window = last
    G columns); window [B, G] current tokens; lengths: answer length per row (right-aligned in the window);
    generators per row (None for greedy rows or rows not sampled); temperatures per row (None: the job's)."""
    ids: torch.Tensor
    attn: torch.Tensor
    where: torch.Tensor
    window: torch.Tensor
    lengths: list[int]
    generators: list
    temperatures: list[float] | None = None
    hidden: torch.Tensor | None = None   # [B, G, H] answer-window states computed by the caller (KV cache)
    filters: list[tuple[float, int]] | None = None   # per-row (top_p, top_k); None: the Sampling's for all


class Projector:
    def __init__(self, adapter: ModelAdapter, max_logits_mb: float, sampling: Sampling | None = None,
                 stats: ProjectionStats | None = None) -> None:
        self.adapter, self.max_bytes = adapter, int(max_logits_mb * 2 ** 20)
        self.sampling = sampling or Sampling()
        self.stats = stats or ProjectionStats()
        self._src: torch.Tensor | None = None    # this step's source, kept for `resample`
        self._chunk = 1

    @torch.inference_mode()
    def signals(self, inp: StepInputs, needs: frozenset, temperature: float) -> StepSignals:
        """[B, G] signals, valid at `inp.where` (see StepSignals for the other positions)."""
        t0 = time.perf_counter()
        rows_src = self._sources(inp)
        self.stats.forward_s += time.perf_counter() - t0
        vocab = self._vocab(rows_src)
        smp = self.sampling
        temps = inp.temperatures or [temperature] * len(inp.lengths)
        filters = inp.filters or [(smp.top_p, smp.top_k)] * len(inp.lengths)
        hottest = max(temps, default=0.0)
        filtered = any(p < 1.0 or k > 0 for p, k in filters)
        dist = smp.kind == "dream" or bool(needs & set(SAMPLE_SIGNALS)) or (hottest > 0 and filtered)
        per_pos = chunk_bytes_per_position(vocab, self.adapter.dtype.itemsize, needs, hottest, dist)
        chunk = max(1, self.max_bytes // per_pos)
        flat = inp.where.nonzero()                       # [N, 2] (row, column), row-major
        self._src, self._chunk = (rows_src, chunk) if smp.deferred else (None, chunk)
        if hottest > 0 and smp.kind == "dream" and not smp.deferred:
            parts = self._dream_sampled(rows_src, inp, flat, needs, temps, filters, chunk, per_pos)
        elif hottest > 0 and smp.kind != "dream":
            parts = self._sampled(rows_src, inp, flat, needs, temps, filters, chunk, per_pos)
        elif inp.filters is None:
            parts = self._greedy(rows_src, flat, needs, chunk, per_pos)
        else:   # per-row filters change Dream's greedy scores: reduce row by row
            parts = _cat([self._greedy(rows_src, flat[flat[:, 0] == b], needs, chunk, per_pos, *filters[b])
                          for b in range(len(filters)) if (flat[:, 0] == b).any()], needs)
        self.stats.positions += len(flat)
        return finish(parts, inp.where, inp.window)

    @torch.inference_mode()
    def resample(self, row: int, cols: torch.Tensor, temperature: float, gen: torch.Generator,
                 top_p: float = 1.0, top_k: int = 0) -> torch.Tensor:
        """Dream's draw at this step's answer columns `cols` [n] of `row` (deferred sampling): one Exp(1)
        noise row per position in order, as `torch.multinomial(q, 1)` over exactly these positions would."""
        out = []
        for a in range(0, len(cols), self._chunk):
            sel = cols[a:a + self._chunk]
            z = self._logits(self._src[row, sel]).float()
            q = sampling_probs(z, temperature, top_p, top_k)
            noise = torch.empty(q.shape, dtype=torch.float32).exponential_(1, generator=gen)
            out.append((q / q.sum(-1, keepdim=True) / noise.to(z.device)).argmax(-1))
        return torch.cat(out) if out else cols.new_empty(0)

    # ----- sources: hidden states (split head) or the model's own logits ----------------------
    def _sources(self, inp: StepInputs) -> torch.Tensor:
        """[B, G, H] hidden states feeding each answer position's logits, or [B, G, V] logits."""
        g = inp.where.shape[1]
        if inp.hidden is not None:
            return inp.hidden
        if self.adapter.split_head:
            return self.adapter.answer_hidden(inp.ids, inp.attn, g)
        return self.adapter.logits(inp.ids, inp.attn, keep=g)

    def _vocab(self, src: torch.Tensor) -> int:
        return self.adapter.vocab_size if self.adapter.split_head else src.shape[-1]

    def _logits(self, src_rows: torch.Tensor) -> torch.Tensor:
        """Logits [n, V] of source rows in the model's dtype, the mask token suppressed in place (a fresh
        tensor either way: the head's output or gathered rows)."""
        t0 = time.perf_counter()
        z = self.adapter.head(src_rows) if self.adapter.split_head else src_rows
        self.stats.forward_s += time.perf_counter() - t0
        z[:, self.adapter.mask_token_id] = torch.finfo(z.dtype).min
        return z

    def _note(self, n: int, per_pos: int) -> None:
        self.stats.chunks += 1
        self.stats.peak_temp_bytes = max(self.stats.peak_temp_bytes, n * per_pos)

    # ----- reductions ------------------------------------------------------------------------
    def _greedy(self, src, flat, needs, chunk, per_pos, top_p: float | None = None,
                top_k: int | None = None) -> dict[str, torch.Tensor]:
        pieces, smp = [], self.sampling
        top_p = smp.top_p if top_p is None else top_p
        top_k = smp.top_k if top_k is None else top_k
        for a in range(0, len(flat), chunk):
            idx = flat[a:a + chunk]
            z = self._logits(src[idx[:, 0], idx[:, 1]]).float()
            if smp.kind == "dream" or needs & set(SAMPLE_SIGNALS):
                q = sampling_probs(z, 0.0, top_p, top_k)
                x0 = q.max(dim=-1).indices if smp.kind == "dream" else None   # Dream: the argmax of q
                part = reduce_chunk(z, needs, x0)
                part.update(sample_reductions(q, part["x0"], needs))
            else:
                part = reduce_chunk(z, needs)
            pieces.append(part)
            self._note(len(idx), per_pos)
        return _cat(pieces, needs)

    def _dream_sampled(self, src, inp, flat, needs, temps, filters, chunk, per_pos) -> dict[str, torch.Tensor]:
        """Per row, walk its still-masked answer positions in order in chunks: draw the chunk's Exp(1) noise
        [n, V] (all masked positions, as Dream's one multinomial call over them would), sample the needed ones
        as argmax(q / sum(q) / noise)."""
        g, pieces = inp.where.shape[1], []
        col = torch.arange(g, device=inp.window.device)
        for b, (gen, n, temperature, (top_p, top_k)) in enumerate(zip(inp.generators, inp.lengths, temps, filters)):
            cols = flat[flat[:, 0] == b, 1]
            if temperature <= 0:   # a greedy row in a sampled batch: the greedy reduction, same keys
                if len(cols):
                    pieces.append(self._greedy(src, flat[flat[:, 0] == b], needs, chunk, per_pos, top_p, top_k))
                continue
            if gen is None:
                if len(cols):
                    raise ValueError("a sampled step needs a generator for every row it reads")
                continue
            masked = ((inp.window[b] == self.adapter.mask_token_id) & (col >= g - n)).nonzero().squeeze(-1)
            for a in range(0, len(masked), chunk):
                span = masked[a:a + chunk]
                noise = torch.empty((len(span), self._vocab(src)), dtype=torch.float32).exponential_(1, generator=gen)
                keep = torch.isin(span, cols)
                if not keep.any():
                    continue
                sel = span[keep]
                z = self._logits(src[b, sel]).float()
                q = sampling_probs(z, temperature, top_p, top_k)
                x0 = (q / q.sum(-1, keepdim=True) / noise[keep.cpu()].to(z.device)).argmax(-1)
                part = reduce_chunk(z, needs, x0)
                part.update(sample_reductions(q, x0, needs))
                pieces.append(part)
                self._note(len(sel), per_pos)
        return _cat(pieces, needs)

    def _sampled(self, src, inp, flat, needs, temps, filters, chunk, per_pos) -> dict[str, torch.Tensor]:
        """Per row, walk its answer positions in order in chunks: draw the chunk's noise (all positions, so
        the generator advances exactly as a full draw would), reduce only the needed ones. A row at
        temperature 0 is reduced greedily (no noise drawn)."""
        g, pieces = inp.where.shape[1], []
        for b, (gen, n, temperature, (top_p, top_k)) in enumerate(zip(inp.generators, inp.lengths, temps, filters)):
            cols = flat[flat[:, 0] == b, 1]
            if temperature <= 0:   # x0 given (= argmax): the same keys as sampled rows
                for a in range(0, len(cols), chunk):
                    z = self._logits(src[b, cols[a:a + chunk]]).float()
                    pieces.append(reduce_chunk(z, needs, z.argmax(-1)))
                    self._note(len(z), per_pos)
                continue
            if gen is None:
                if len(cols):
                    raise ValueError("a sampled step needs a generator for every row it reads")
                continue
            for a in range(g - n, g, chunk):
                hi = min(a + chunk, g)
                sel = cols[(cols >= a) & (cols < hi)]
                u = torch.rand((hi - a, self._vocab(src)), generator=gen, dtype=torch.float64, device="cpu")
                if not len(sel):
                    continue
                z = self._logits(src[b, sel])
                noise = -torch.log(-torch.log(u[(sel - a).cpu()].to(z.device).clamp(min=1e-300)))
                noisy = z.double() + temperature * noise
                if top_p < 1.0 or top_k > 0:  # top-p / top-k over the tempered distribution; dropped tokens never win
                    dropped = filter_logits(z.float() / temperature, top_p, top_k)
                    noisy = noisy.masked_fill(dropped == torch.finfo(torch.float32).min, -torch.inf)
                x0 = noisy.argmax(-1)
                part = reduce_chunk(z.float(), needs, x0)
                if needs & set(SAMPLE_SIGNALS):
                    part.update(sample_reductions(sampling_probs(z.float(), temperature, top_p, top_k), x0, needs))
                pieces.append(part)
                self._note(len(sel), per_pos)
        return _cat(pieces, needs)


def _cat(pieces: list[dict], needs: frozenset) -> dict[str, torch.Tensor]:
    if not pieces:
        return {"x0": torch.empty(0, dtype=torch.long)}
    return {k: torch.cat([p[k] for p in pieces]) for k in pieces[0]}

