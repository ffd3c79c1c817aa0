"""Exit policies replayed on a full-budget token trace: each row's exit step, output and NFE under another exit
setting, with no model forward.

With the commit policy fixed, a row's state up to its exit is the full-budget run's: the same positions
committed at the same steps with the same tokens. An exit policy's decision at step t reads only that step's
signals over the still-masked span (top-2 margins, argmaxes), the step's progress and its own state (the
gates' patience and previous argmaxes), all of which a `tokens`-level trace holds; on exit the engine fills
the still-masked positions with the step's candidates. So for greedy rows (candidate = argmax) the replayed
exit step, output and NFE are those a real decode with that setting gives: the same policy code
(decoder/policies/exit.py) runs on the same values (tests/decoder/test_replay.py checks it row for row
against real decodes). Sampled rows are refused: their trace holds the sampled candidate, not the argmax
an exit fill may use, and a different exit changes nothing else but could change their random draws' use.
Modifiers (CE) and commit-threshold changes alter which tokens are committed: they need a real decode.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import SimpleNamespace

import numpy as np
import torch

from decoder.config import DecodeConfig
from decoder.policies.base import StepContext
from decoder.policies.registry import POLICIES
from decoder.policies.schedules import progress
from decoder.types import CommitReason, SequenceResult


@dataclass
class RowTrace:
    """What replay reads of one row decoded at the full budget with `decode.trace=tokens` (one entry per
    still-masked answer position of each step)."""
    id: str
    prompt_length: int
    gen_length: int               # answer window (whole blocks)
    answer_tokens: int            # positions that may be committed (the rest of the last block is EOS)
    step_budget: int
    steps_taken: int
    output_ids: list[int]         # the full-budget run's output
    exit_reason: str
    token_step: np.ndarray        # [N] int: the step of each token row
    position: np.ndarray          # [N] int: its answer position
    candidate: np.ndarray         # [N] int: the step's candidate token there (the argmax, for greedy rows)
    margin: np.ndarray            # [N] float32: top-1 minus top-2 logit
    reason: np.ndarray            # [N] int8 CommitReason the step gave the position (0: left masked)


@dataclass
class Replayed:
    id: str
    output_ids: list[int]
    nfe: int                      # forwards the row would take (= its steps)
    exit_reason: str
    exit_step: int | None = None  # the step an exit policy stopped it at (None: it ran as at the full budget)


def row_trace(res: SequenceResult, gen_length: int) -> RowTrace:
    """A RowTrace from a decoded row (in process); `gen_length`: its answer window (whole blocks)."""
    t = res.trace
    if t is None or t.tokens is None:
        raise ValueError(f"row {res.id}: replay needs a tokens-level trace (decode.trace=tokens)")
    return RowTrace(res.id, len(res.prompt_ids), gen_length, len(res.output_ids), res.step_budget, res.steps_taken,
                    list(res.output_ids), str(res.exit_reason), t.token_step.astype(np.int64),
                    t.position.astype(np.int64), t.token_column("argmax").astype(np.int64),
                    t.token_column("margin").astype(np.float32), t.reasons.astype(np.int8))


def replay_check(cfg: DecodeConfig) -> str | None:
    """Why `cfg` cannot be replayed on a trace decoded without an exit policy (None: it can)."""
    names = [cfg.policy] if isinstance(cfg.policy, str) else list(cfg.policy)
    others = [n for n in names if POLICIES[n].kind != "exit"]
    if any(POLICIES[n].kind == "modifier" for n in others):
        return "a modifier (ce) changes which tokens are committed: decode the pilot with it instead"
    if cfg.temperature > 0:
        return "sampled decoding (decode.temperature > 0): the trace holds the sample, not the argmax"
    return None


def exit_policies(cfg: DecodeConfig) -> list:
    names = [cfg.policy] if isinstance(cfg.policy, str) else list(cfg.policy)
    return [POLICIES[n](cfg) for n in names if POLICIES[n].kind == "exit"]


@dataclass
class _Layout:
    """The engine row attributes the exit gates read (decoder/policies/exit.py `_region`)."""
    gen_length: int
    answer_tokens: int
    prompt_length: int
    extra: dict = field(default_factory=dict)


def replay_row(row: RowTrace, cfg: DecodeConfig) -> Replayed:
    """One row under `cfg`'s exit policies (its commit policy must be the one the trace was decoded with)."""
    why = replay_check(cfg)
    if why:
        raise ValueError(f"cannot replay {cfg.policy}: {why}")
    policies = exit_policies(cfg)
    if not policies:
        return Replayed(row.id, list(row.output_ids), row.steps_taken, row.exit_reason)
    g = row.gen_length
    pos = {}
    for pol in policies:
        for name, (dtype, fill, shape) in getattr(pol, "position_state", {}).items():
            pos[name] = torch.full((1, g, *shape), fill, dtype=dtype)
    layout = [_Layout(g, row.answer_tokens, row.prompt_length)]
    budget = torch.tensor([row.step_budget])
    commits = (row.reason > 0) & (row.reason != int(CommitReason.EOS_FILL))
    order = np.argsort(row.token_step, kind="stable")
    bounds = np.searchsorted(row.token_step[order], np.arange(row.steps_taken + 1))
    committed = np.full(g, -1, dtype=np.int64)   # tokens committed before the step
    for t in range(row.steps_taken):
        at = order[bounds[t]:bounds[t + 1]]
        cols = torch.from_numpy(row.position[at])
        masked = torch.zeros(1, g, dtype=torch.bool)
        masked[0, cols] = True
        margin = torch.zeros(1, g, dtype=torch.float32)
        margin[0, cols] = torch.from_numpy(row.margin[at])
        cand = torch.zeros(1, g, dtype=torch.long)
        cand[0, cols] = torch.from_numpy(row.candidate[at])
        signals = SimpleNamespace(margin=margin, argmax=cand, x0=cand)
        ctx = StepContext(signals, None, masked, None, None,
                          progress(torch.tensor([t]), budget, cfg.sched.progress_mode), pos=pos, rows=layout)
        stop, by = False, ""
        for pol in policies:
            if bool(pol.should_exit(ctx).exit[0]) and not stop:
                stop, by = True, pol.name
        commit_now = commits[at]
        if stop and not commit_now.all():      # an exit with nothing left to fill is not an early exit
            out = committed.copy()
            out[row.position[at]] = row.candidate[at]   # commits of the step, then the fill: both candidates
            return Replayed(row.id, [int(x) for x in out[:row.answer_tokens]], t + 1, by, t)
        committed[row.position[at][commit_now]] = row.candidate[at][commit_now]
    return Replayed(row.id, list(row.output_ids), row.steps_taken, row.exit_reason)


def replay(rows: list[RowTrace], cfg: DecodeConfig) -> list[Replayed]:
    return [replay_row(r, cfg) for r in rows]


def with_exit(cfg: DecodeConfig, policy: list[str], **sections) -> DecodeConfig:
    """`cfg` with exit policies `policy` appended to its commit policy and sub-config fields replaced,
    e.g. with_exit(cfg, ["sched"], sched={"tau_high_logit": 6.0})."""
    names = [cfg.policy] if isinstance(cfg.policy, str) else list(cfg.policy)
    base = [n for n in names if POLICIES[n].kind != "exit"]
    changes = {k: replace(getattr(cfg, k), **v) for k, v in sections.items()}
    return replace(cfg, policy=[*base, *policy], **changes)
