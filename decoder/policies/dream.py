"""Dream's `diffusion_generate` as a commit policy (per row, per block), selectable for any model family and
the Dream family's default (FamilySpec.default_commit, decoder/families).

Its transfer counts come from `transfer_plan` (decoder/transfer.py `dream_transfer_tokens`, read
back as ctx.k); its scores from the sampling distribution q are the signals `sample_*`
(decoder/signals.py), computed by Dream's sampler (`sampler = "dream"`, decoder/masked/projection.py).
Positions are chosen on each row's whole-sequence vector (prompt + answer tokens, -inf where nothing is
masked), exactly the vector Dream ranks, so torch.topk and the alg_temp draw break ties and consume the
row's generator as Dream's loop does.
"""
from __future__ import annotations

import torch

from decoder.config import DecodeConfig
from decoder.policies.base import StepContext
from decoder.types import CommitReason
from decoder.transfer import dream_transfer_tokens


class DreamPolicy:
    """Dream's `diffusion_generate` per row and block: over a block's S steps, timesteps linspace(1, eps,
    S + 1); step i commits int(n_i (1 - s/t)) of the n_i still-masked positions (all at the last step), the
    highest by the alg's score of the sampling distribution q: maskgit_plus q(x0), topk_margin top-1 minus
    top-2 of q, entropy the negative entropy of q; with alg_temp > 0 the positions are drawn from
    softmax(score / alg_temp) instead (from the row's generator, over the row's whole sequence as Dream
    does). origin commits each masked position with probability 1 - s/t (a uniform per position) and then,
    when sampling, draws x0 at the positions it took only (Dream's order: the uniforms, then the samples)."""
    kind, reason, sampler = "commit", CommitReason.SCHEDULE, "dream"
    SCORE = {"maskgit_plus": "sample_prob", "topk_margin": "sample_margin", "entropy": "sample_neg_entropy"}
    reads_span = False

    def __init__(self, cfg: DecodeConfig) -> None:
        d = cfg.dream
        self.alg, self.alg_temp, self.eps = d.alg, d.alg_temp, d.eps
        self.reads = frozenset({self.SCORE[self.alg]}) if self.alg in self.SCORE else frozenset()
        self.draws = self.alg == "origin" or self.alg_temp > 0   # needs a generator even when greedy
        self.defer_sampling = self.alg == "origin"

    def transfer_plan(self, masked: int, steps: int) -> list[int]:
        return dream_transfer_tokens(masked, steps, self.eps)

    def select(self, ctx: StepContext) -> torch.Tensor:
        if self.alg == "origin":
            return self._origin(ctx)
        score = getattr(ctx.signals, self.SCORE[self.alg])
        pick = torch.zeros_like(ctx.candidates)
        g = ctx.candidates.shape[1]
        for b, row in enumerate(ctx.rows):
            k = min(int(ctx.k[b]), int(ctx.candidates[b].sum()))
            if k <= 0:
                continue
            # Dream's whole-sequence score vector (prompt + answer tokens, -inf where nothing is masked), so
            # torch.topk breaks ties exactly as it does in Dream's loop
            a, n, p = g - row.gen_length, row.answer_tokens, row.prompt_length
            full = torch.full((1, p + n), -torch.inf, dtype=torch.float32, device=score.device)
            full[0, p:] = torch.where(ctx.candidates[b, a:a + n], score[b, a:a + n].float(), -torch.inf)
            if self.alg_temp:
                probs = torch.softmax(full / self.alg_temp, dim=-1).cpu()
                noise = torch.empty_like(probs).exponential_(1, generator=row.generator)
                idx = torch.topk(probs / noise, k, dim=-1).indices[0] - p
            else:
                idx = torch.topk(full, k, dim=-1).indices[0] - p
            pick[b, a + idx.to(pick.device)] = True
        return pick & ctx.candidates

    def _origin(self, ctx: StepContext) -> torch.Tensor:
        pick = torch.zeros_like(ctx.candidates)
        x0 = ctx.signals.x0.clone()   # the step's signals are inference tensors: write the draws to a copy
        for b, row in enumerate(ctx.rows):
            cols = ctx.candidates[b].nonzero().squeeze(-1)
            if row.generator is None or not len(cols):
                continue
            i, steps = row.block_step, row.steps_per_block
            ts = torch.linspace(1, self.eps, steps + 1)
            u = torch.rand(len(cols), generator=row.generator)
            take = u < (1 - ts[i + 1] / ts[i]) if i < steps - 1 else torch.ones_like(u, dtype=torch.bool)
            taken = cols[take.to(cols.device)]
            pick[b, taken] = True
            if ctx.resample is not None and len(taken):
                drawn = ctx.resample(b, taken)
                if drawn is not None:
                    x0[b, taken] = drawn.to(x0.dtype)
        ctx.signals.x0 = x0
        return pick
