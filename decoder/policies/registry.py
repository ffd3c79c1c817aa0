"""Decode policies: small per-row decision objects selected by name in config.

Two kinds, composed by `build_policies`: one *commit* policy picks which masked positions of each row's
current block are committed this step (`select`), and any number of *exit* policies decide per row
whether to stop now and fill every remaining mask with its candidate (`should_exit`; the engine
fills with the sampled candidate, or the argmax under decode.exit_fill=argmax); *modifiers* (CE)
adjust both (`modify`, `modify_exit`). All inputs and outputs are batched tensors with per-row values:
nothing is pooled across rows. A commit policy may bring its own per-block transfer counts
(`transfer_plan(masked, steps)`, read back as `ctx.k`) and its sampler (`sampler`: gumbel or dream).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from decoder.config import DecodeConfig
from decoder.policies.schedules import SCHEDULES
from decoder.signals import SIGNALS, StepSignals, aggregate
from decoder.trace_schema import CommitReason


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
    rows: list | None = None   # the engine's rows: generator, block_step, steps_per_block, prompt_length,
                               # answer_tokens, gen_length (for policies that draw or need the row's layout)
    resample: object = None    # (row, cols [n]) -> x0 [n]: deferred sampling of picked positions (dream origin)

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


def dream_policy(cfg: DecodeConfig):
    from decoder.policies.dream import DreamPolicy
    return DreamPolicy(cfg)


def tspd_policy(cfg: DecodeConfig):
    from decoder.policies.tspd import TspdPolicy
    return TspdPolicy(cfg)


def dgemma_policy(cfg: DecodeConfig):
    from decoder.policies.dgemma import DGemmaPolicy
    return DGemmaPolicy(cfg)


def ce_modifier(cfg: DecodeConfig):
    from decoder.policies.ce import ConfidenceExtrapolation
    return ConfidenceExtrapolation(cfg)


#: name -> factory(cfg); "none" is the fixed-step baseline (schedule commits, no exit policy).
POLICIES = {
    "none": SchedulePolicy,
    "dream": dream_policy,
    "fastdllm": FastDllmPolicy,
    "sched": sched_policy,
    "prophet": prophet_policy,
    "tspd": tspd_policy,
    "ce": ce_modifier,
    "dgemma": dgemma_policy,
}


@dataclass
class PolicySet:
    commit: SchedulePolicy | FastDllmPolicy
    exits: list[MarginExitPolicy]
    modifiers: list

    def all(self) -> list:
        return [self.commit, *self.exits, *self.modifiers]

    @property
    def commit_draws(self) -> bool:
        """Whether the commit policy draws from the row's generator even when greedy (Dream's origin, alg_temp)."""
        return bool(getattr(self.commit, "draws", False))

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


#: The commit policy a model family gets when decode.policy names none (Dream checkpoints: Dream's own loop).
FAMILY_COMMIT = {"dream": "dream", "diffusion_gemma": "dgemma"}
#: Policies a canvas family (DiffusionGemma: no mask token, canvases resampled every step) can run.
CANVAS_POLICIES = frozenset({"dgemma", "sched", "prophet"})


def build_policies(cfg: DecodeConfig, family: str | None = None) -> PolicySet:
    """Resolve `cfg.policy` names: at most one commit policy (default: the family's, FAMILY_COMMIT, else the
    schedule), any exit policies and modifiers (CE), e.g. [tspd, ce, sched]."""
    names = [cfg.policy] if isinstance(cfg.policy, str) else list(cfg.policy)
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ValueError(f"unknown decode.policy {unknown}; known: {sorted(POLICIES)}")
    built = [POLICIES[n](cfg) for n in names]
    commits = [p for p in built if p.kind == "commit"]
    if len(commits) > 1:
        raise ValueError(f"decode.policy {names} names more than one commit policy")
    canvas = family == "diffusion_gemma"
    if canvas and set(names) - CANVAS_POLICIES:
        raise ValueError(f"decode.policy {sorted(set(names) - CANVAS_POLICIES)} cannot run on a canvas family "
                         f"({family}: no mask token, every position is resampled each step); "
                         f"use {sorted(CANVAS_POLICIES)}")
    if not canvas and "dgemma" in names:
        raise ValueError("decode.policy dgemma is DiffusionGemma's sampler: it needs model.family diffusion_gemma")
    default = POLICIES[FAMILY_COMMIT.get(family or "", "none")]
    return PolicySet(commit=commits[0] if commits else default(cfg),
                     exits=[p for p in built if p.kind == "exit"],
                     modifiers=[p for p in built if p.kind == "modifier"])
