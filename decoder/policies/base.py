"""What every decode policy sees and returns, and the pieces they share.

A policy is a small per-row decision object of one *kind*: a *commit* policy picks which masked positions
of each row's current block are committed this step (`select`), an *exit* policy decides per row whether to
stop now and fill every remaining mask with its candidate (`should_exit`), a *modifier* (CE) adjusts both
(`modify`, `modify_exit`). All inputs and outputs are batched tensors with per-row values: nothing is pooled
across rows. A commit policy may bring its own per-block transfer counts (`transfer_plan(masked, steps)`,
read back as `ctx.k`) and its sampler (`sampler`: gumbel or dream). `PolicySet` is one row set's policies.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from decoder.signals import SIGNALS, StepSignals


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


@dataclass
class PolicySet:
    commit: object         # the one commit policy (kind "commit")
    exits: list            # exit policies (kind "exit"), in the order named
    modifiers: list        # modifiers (CE)

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
