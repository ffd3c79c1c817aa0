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

from dataclasses import dataclass, replace
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


def stored_row_trace(row: dict, block_length: int, step, position, argmax, margin, reason) -> RowTrace:
    """A RowTrace from a stored row (its output columns: id, prompt_tokens, output_ids, step_budget, steps_taken,
    exit_reason) and its token trace's columns as arrays; the answer window is whole blocks."""
    n = len(row["output_ids"])
    return RowTrace(row["id"], row["prompt_tokens"], -(-n // block_length) * block_length, n, row["step_budget"],
                    row["steps_taken"], list(row["output_ids"]), str(row["exit_reason"]),
                    np.asarray(step, np.int64), np.asarray(position, np.int64), np.asarray(argmax, np.int64),
                    np.asarray(margin, np.float32), np.asarray(reason, np.int8))


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


@dataclass
class TraceTensors:
    """Rows of one answer window as dense [T, R, G] tensors (built once, replayed under many settings)."""
    rows: list[RowTrace]
    masked: torch.Tensor       # bool: still masked when the step read its logits
    margin: torch.Tensor       # float32
    candidate: torch.Tensor    # long
    commit: torch.Tensor       # bool: the commit policy committed the position at the step
    budget: torch.Tensor       # [R] step budgets
    steps: torch.Tensor        # [R] steps the full-budget run took
    commit_step: torch.Tensor  # [R, G] the step each position was committed at (T where never)
    commit_token: torch.Tensor # [R, G] its candidate then
    layout: list               # [R] what the exit gates read of each row (_Layout)


def trace_tensors(rows: list[RowTrace]) -> TraceTensors:
    """Dense tensors of rows sharing an answer window (`gen_length`); see `replay`."""
    g = rows[0].gen_length
    if any(r.gen_length != g for r in rows):
        raise ValueError("trace_tensors: rows of one answer window only (group them by gen_length)")
    t_max = max(r.steps_taken for r in rows)
    shape = (t_max, len(rows), g)
    masked, commit = torch.zeros(shape, dtype=torch.bool), torch.zeros(shape, dtype=torch.bool)
    margin, cand = torch.zeros(shape, dtype=torch.float32), torch.zeros(shape, dtype=torch.long)
    for i, r in enumerate(rows):
        t, p = torch.from_numpy(r.token_step), torch.from_numpy(r.position)
        masked[t, i, p] = True
        margin[t, i, p] = torch.from_numpy(r.margin)
        cand[t, i, p] = torch.from_numpy(r.candidate)
        commit[t, i, p] = torch.from_numpy((r.reason > 0) & (r.reason != int(CommitReason.EOS_FILL)))
    ever = commit.any(0)
    first = torch.where(ever, commit.int().argmax(0), t_max)
    token = cand.gather(0, first.clamp(max=t_max - 1)[None])[0]
    return TraceTensors(rows, masked, margin, cand, commit, torch.tensor([r.step_budget for r in rows]),
                        torch.tensor([r.steps_taken for r in rows]), first, token,
                        [_Layout(g, r.answer_tokens, r.prompt_length) for r in rows])


def replay_tensors(tt: TraceTensors, cfg: DecodeConfig) -> list[Replayed]:
    """Every row of `tt` under `cfg`'s exit policies, all rows a step at a time (as the engine batches them)."""
    why = replay_check(cfg)
    if why:
        raise ValueError(f"cannot replay {cfg.policy}: {why}")
    policies, rows = exit_policies(cfg), tt.rows
    n, g = len(rows), tt.masked.shape[2]
    stopped_at = torch.full((n,), -1, dtype=torch.long)
    stopped_by = torch.full((n,), -1, dtype=torch.long)   # index into `policies`
    if policies:
        pos = {name: torch.full((n, g, *shape), fill, dtype=dtype)
               for pol in policies for name, (dtype, fill, shape) in getattr(pol, "position_state", {}).items()}
        layout = tt.layout
        for t in range(tt.masked.shape[0]):
            live = (stopped_at < 0) & (tt.steps > t)
            masked = tt.masked[t] & live[:, None]
            signals = SimpleNamespace(margin=tt.margin[t], argmax=tt.candidate[t], x0=tt.candidate[t])
            ctx = StepContext(signals, None, masked, None, None,
                              progress(torch.full((n,), t), tt.budget, cfg.sched.progress_mode), pos=pos, rows=layout)
            exit_now, by = torch.zeros(n, dtype=torch.bool), torch.full((n,), -1, dtype=torch.long)
            for j, pol in enumerate(policies):
                d = pol.should_exit(ctx).exit & ~exit_now
                by = torch.where(d, j, by)
                exit_now |= d
            exit_now &= (masked & ~tt.commit[t]).any(-1)   # an exit with nothing left to fill is not an early exit
            stopped_at = torch.where(exit_now, t, stopped_at)
            stopped_by = torch.where(exit_now, by, stopped_by)
    # a stopped row: positions committed before its exit step keep their candidate then; the step's commits
    # and the exit fill take the step's candidates
    t = stopped_at.clamp(min=0)
    at_exit = tt.candidate[t, torch.arange(n)]
    tokens = torch.where(tt.commit_step < t[:, None], tt.commit_token, at_exit).tolist()
    out = []
    for r, step, j, toks in zip(rows, stopped_at.tolist(), stopped_by.tolist(), tokens):
        if step < 0:
            out.append(Replayed(r.id, list(r.output_ids), r.steps_taken, r.exit_reason))
        else:
            out.append(Replayed(r.id, toks[:r.answer_tokens], step + 1, policies[j].name, step))
    return out


def replay(rows: list[RowTrace], cfg: DecodeConfig) -> list[Replayed]:
    """`rows` under `cfg`'s exit policies, in their order (grouped by answer window internally)."""
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(r.gen_length, []).append(i)
    out: list[Replayed | None] = [None] * len(rows)
    for idx in groups.values():
        for i, res in zip(idx, replay_tensors(trace_tensors([rows[i] for i in idx]), cfg)):
            out[i] = res
    return out


def with_exit(cfg: DecodeConfig, policy: list[str], **sections) -> DecodeConfig:
    """`cfg` with exit policies `policy` appended to its commit policy and sub-config fields replaced,
    e.g. with_exit(cfg, ["sched"], sched={"tau_high_logit": 6.0})."""
    names = [cfg.policy] if isinstance(cfg.policy, str) else list(cfg.policy)
    base = [n for n in names if POLICIES[n].kind != "exit"]
    changes = {k: replace(getattr(cfg, k), **v) for k, v in sections.items()}
    return replace(cfg, policy=[*base, *policy], **changes)
