"""Exit policies: SchED (progress-aware confidence schedules, with its released gates) and Prophet, both a
per-row test of the aggregated top-2 logit margin over the still-masked span against a threshold tau(p)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from decoder.config import DecodeConfig
from decoder.policies.base import ExitDecision, StepContext
from decoder.policies.schedules import SCHEDULES
from decoder.signals import aggregate


@dataclass
class ExitGates:
    """SchED's released gates. Progress of the region = its committed fraction (region `all`: the row's
    prompt + answer tokens, `tail`: its answer tokens, `custom`: answer positions [start, end)); a step is
    counted when that progress >= min_progress and at most max_change_ratio of the region's masked argmaxes
    changed since the last step; a row exits when progress >= min_progress, gbar >= tau and more than
    patience_steps counted steps in a row (or when its region has no mask left)."""
    min_progress: float = 0.0
    patience_steps: int = 0
    max_change_ratio: float = 1.0
    region: str = "all"
    region_start: int = 0
    region_end: int = -1

    @property
    def off(self) -> bool:
        return (self.min_progress <= 0 and self.patience_steps <= 0 and self.max_change_ratio >= 1.0
                and self.region == "all")


class MarginExitPolicy:
    """Exit a row when its aggregated top-2 logit margin over the still-masked span reaches tau(p)."""
    kind = "exit"
    reads, reads_span = frozenset({"margin"}), True   # the span: the aggregate and the exit fill

    def __init__(self, schedule: str, tau_high: float, tau_low: float, k: float, how: str, quantile: float,
                 name: str, gates: ExitGates | None = None) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; known: {sorted(SCHEDULES)}")
        self.tau_fn, self.tau_high, self.tau_low, self.k = SCHEDULES[schedule], tau_high, tau_low, k
        self.how, self.quantile, self.name = how, quantile, name
        self.gates = gates if gates is not None and not gates.off else None
        if self.gates is not None:
            self.reads = frozenset({"margin", "argmax"})
            self.position_state = {f"{name}_prev_argmax": (torch.long, -1, ()),
                                   f"{name}_patience": (torch.int32, 0, ())}

    def should_exit(self, ctx: StepContext) -> ExitDecision:
        tau_low = self.tau_low
        if ctx.tau_low_logit is not None and self.name == "sched":
            tau_low = torch.where(ctx.tau_low_logit.isnan(), self.tau_low, ctx.tau_low_logit)
        tau = self.tau_fn(ctx.progress.clamp(0.0, 1.0), self.tau_high, tau_low, self.k)
        if self.gates is None:
            gbar = aggregate(ctx.signals.margin, ctx.masked, self.how, self.quantile)
            exit_now = ctx.masked.any(-1) & (gbar >= tau)
            return ExitDecision(exit=exit_now, tau=tau.float(), gbar=gbar.float())
        gt = self.gates
        region, size = self._region(ctx)
        masked = ctx.masked & region
        gbar = aggregate(ctx.signals.margin, masked, self.how, self.quantile)
        left = masked.sum(-1)
        done = (1.0 - left.float() / size.clamp(min=1).float()).double()          # committed fraction
        prev, count = ctx.pos[f"{self.name}_prev_argmax"], ctx.pos[f"{self.name}_patience"]
        changed = ((ctx.signals.argmax != prev) & masked).sum(-1).float() / left.clamp(min=1).float()
        changed = torch.where(left > 0, changed, 1.0).double()
        prev.copy_(torch.where(ctx.masked, ctx.signals.argmax, prev))
        counted = (done >= gt.min_progress) & (changed <= gt.max_change_ratio)
        patience = torch.where(counted, count[:, -1] + 1, 0)
        count.copy_(patience[:, None].expand_as(count).to(count.dtype))
        ready = (done >= gt.min_progress) & (gbar >= tau) & (patience > gt.patience_steps)
        exit_now = ctx.masked.any(-1) & (ready | (left == 0))
        return ExitDecision(exit=exit_now, tau=tau.float(), gbar=gbar.float())

    def _region(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, G] bool region over each row's answer tokens and [B] its size in positions (region `all` also
        counts the prompt, which holds no mask)."""
        g, gt = ctx.masked.shape[1], self.gates
        col = torch.arange(g, device=ctx.masked.device)
        rows = ctx.rows
        start = torch.tensor([g - r.gen_length for r in rows], device=col.device)[:, None]
        n = torch.tensor([r.answer_tokens for r in rows], device=col.device)[:, None]
        lo, hi = torch.zeros_like(n), n
        if gt.region == "custom":   # answer positions [region_start, region_end), clipped to the answer
            hi = n if gt.region_end < 0 else torch.clamp(n, max=gt.region_end)
            lo = torch.clamp(lo + gt.region_start, max=hi)
        region = (col >= start + lo) & (col < start + hi)
        size = (hi - lo).squeeze(-1)
        if gt.region == "all":
            size = size + torch.tensor([r.prompt_length for r in rows], device=col.device)
        return region, size


def sched_policy(cfg: DecodeConfig) -> MarginExitPolicy:
    s = cfg.sched
    gates = ExitGates(s.min_progress, s.patience_steps, s.max_change_ratio, s.region, s.region_start, s.region_end)
    return MarginExitPolicy(s.schedule, s.tau_high_logit, s.tau_low_logit, s.k, s.aggregate, s.quantile, "sched",
                            gates)


def prophet_policy(cfg: DecodeConfig) -> MarginExitPolicy:
    p = cfg.prophet
    return MarginExitPolicy("prophet", p.tau_high_logit, p.tau_low_logit, 0.0, "mean", 0.5, "prophet")
