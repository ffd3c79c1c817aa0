"""Decode policies: small per-row decision objects selected by name in config.

Two kinds, composed by `build_policies`: one *commit* policy picks which masked positions of each row's
current block are committed this step (`select`), and any number of *exit* policies decide per row
whether to stop now and fill every remaining mask with its argmax (`should_exit`); *modifiers* (CE)
adjust both (`modify`, `modify_exit`). All inputs and outputs are batched tensors with per-row values:
nothing is pooled across rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from stages.decode.config import DecodeConfig
from stages.decode.schedules import SCHEDULES
from stages.decode.signals import SIGNALS, StepSignals, aggregate
from stages.decode.trace_schema import CommitReason


@dataclass
class StepContext:
    """What a policy sees at one step. All tensors [B, G] unless noted; G is the answer window."""
    signals: StepSignals
    score: torch.Tensor        # remasking score, higher commits first
    masked: torch.Tensor       # bool: still-masked answer positions (whole span)
    in_block: torch.Tensor     # bool: positions of each row's current block
    k: torch.Tensor            # [B] long: tokens the uniform schedule commits now
    progress: torch.Tensor     # [B] float: p of this step
    features: torch.Tensor | None = None   # [B, G, F] trajectory features (when a policy needs them)
    pos: dict | None = None    # per-position state views [B, G, ...] (policies update theirs in place)
    tau_low_logit: torch.Tensor | None = None   # [B] per-row SchED tau_low overrides (NaN: none), or None

    @property
    def candidates(self) -> torch.Tensor:
        return self.masked & self.in_block


@dataclass
class ExitDecision:
    """[B] tensors: exit flag, threshold tau(p) and aggregated margin g-bar (logit units)."""
    exit: torch.Tensor
    tau: torch.Tensor
    gbar: torch.Tensor


def topk_mask(score: torch.Tensor, candidates: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per row, the `k[b]` highest-scoring candidates (stable: ties go to the leftmost)."""
    s = torch.where(candidates, score.float(), -torch.inf)
    order = torch.argsort(s, dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(s.shape[-1], device=s.device).expand_as(order))
    return candidates & (rank < k.unsqueeze(-1))


class SchedulePolicy:
    """LLaDA's baseline: commit the top-k by remasking score, k from the uniform transfer schedule."""
    kind, reason = "commit", CommitReason.SCHEDULE
    reads, reads_span = frozenset(), False   # signals it reads (beyond x0 and the score), and where

    def __init__(self, cfg: DecodeConfig) -> None:
        pass

    def select(self, ctx: StepContext) -> torch.Tensor:
        return topk_mask(ctx.score, ctx.candidates, ctx.k)


class FastDllmPolicy:
    """Fast-dLLM: commit every candidate whose confidence >= threshold_prob, at least one per step."""
    kind, reason = "commit", CommitReason.THRESHOLD
    reads, reads_span = frozenset({"confidence"}), False

    def __init__(self, cfg: DecodeConfig) -> None:
        self.threshold_prob = cfg.fastdllm.threshold_prob

    def select(self, ctx: StepContext) -> torch.Tensor:
        confident = ctx.candidates & (ctx.signals.confidence >= self.threshold_prob)
        best = topk_mask(ctx.score, ctx.candidates, torch.ones_like(ctx.k))
        return confident | best


class MarginExitPolicy:
    """Exit a row when its aggregated top-2 logit margin over the still-masked span reaches tau(p)."""
    kind = "exit"
    reads, reads_span = frozenset({"margin"}), True   # the span: the aggregate and the exit fill

    def __init__(self, schedule: str, tau_high: float, tau_low: float, k: float, how: str, quantile: float,
                 name: str) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; known: {sorted(SCHEDULES)}")
        self.tau_fn, self.tau_high, self.tau_low, self.k = SCHEDULES[schedule], tau_high, tau_low, k
        self.how, self.quantile, self.name = how, quantile, name

    def should_exit(self, ctx: StepContext) -> ExitDecision:
        gbar = aggregate(ctx.signals.margin, ctx.masked, self.how, self.quantile)
        tau_low = self.tau_low
        if ctx.tau_low_logit is not None and self.name == "sched":
            tau_low = torch.where(ctx.tau_low_logit.isnan(), self.tau_low, ctx.tau_low_logit)
        tau = self.tau_fn(ctx.progress.clamp(0.0, 1.0), self.tau_high, tau_low, self.k)
        exit_now = ctx.masked.any(-1) & (gbar >= tau)
        return ExitDecision(exit=exit_now, tau=tau.float(), gbar=gbar.float())


def sched_policy(cfg: DecodeConfig) -> MarginExitPolicy:
    s = cfg.sched
    return MarginExitPolicy(s.schedule, s.tau_high_logit, s.tau_low_logit, s.k, s.aggregate, s.quantile, "sched")


def prophet_policy(cfg: DecodeConfig) -> MarginExitPolicy:
    p = cfg.prophet
    return MarginExitPolicy("prophet", p.tau_high_logit, p.tau_low_logit, 0.0, "mean", 0.5, "prophet")


def tspd_policy(cfg: DecodeConfig):
    from stages.decode.tspd import TspdPolicy
    return TspdPolicy(cfg)


def ce_modifier(cfg: DecodeConfig):
    from stages.decode.ce import ConfidenceExtrapolation
    return ConfidenceExtrapolation(cfg)


#: name -> factory(cfg); "none" is the fixed-step baseline (schedule commits, no exit policy).
POLICIES = {
    "none": SchedulePolicy,
    "fastdllm": FastDllmPolicy,
    "sched": sched_policy,
    "prophet": prophet_policy,
    "tspd": tspd_policy,
    "ce": ce_modifier,
}


@dataclass
class PolicySet:
    commit: SchedulePolicy | FastDllmPolicy
    exits: list[MarginExitPolicy]
    modifiers: list

    def all(self) -> list:
        return [self.commit, *self.exits, *self.modifiers]

    @property
    def needs_features(self) -> bool:
        return any(getattr(p, "needs_features", False) for p in self.all())

    def signal_needs(self, remasking: str, trace: str) -> tuple[frozenset, bool]:
        """(signals to compute, whether over the whole still-masked span rather than the current block):
        the union of what the policies, the remasking score, the trajectory features and the trace read."""
        needs = {"x0"} | {"low_confidence": {"confidence"}, "margin": {"margin"},
                          "entropy": {"entropy"}}.get(remasking, set())
        span = False
        for p in self.all():  # a policy that declares nothing is assumed to read everything, everywhere
            needs |= getattr(p, "reads", frozenset(SIGNALS))
            span |= getattr(p, "reads_span", True)
        if self.needs_features or trace == "tokens":
            needs |= {"confidence", "entropy", "margin"}
            span = True
        return frozenset(needs), span


def build_policies(cfg: DecodeConfig) -> PolicySet:
    """Resolve `cfg.policy` names: at most one commit policy (default: the schedule), any exit policies and
    modifiers (CE), e.g. [tspd, ce, sched]."""
    names = [cfg.policy] if isinstance(cfg.policy, str) else list(cfg.policy)
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ValueError(f"unknown decode.policy {unknown}; known: {sorted(POLICIES)}")
    built = [POLICIES[n](cfg) for n in names]
    commits = [p for p in built if p.kind == "commit"]
    if len(commits) > 1:
        raise ValueError(f"decode.policy {names} names more than one commit policy")
    return PolicySet(commit=commits[0] if commits else SchedulePolicy(cfg),
                     exits=[p for p in built if p.kind == "exit"],
                     modifiers=[p for p in built if p.kind == "modifier"])
