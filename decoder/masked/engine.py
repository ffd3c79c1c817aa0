"""The decoding engine: per-row masked-diffusion state and one batched step at a time.

It owns the rows being decoded and nothing else: no tokenizer, no queue, no Ray. Every row carries its
own step counter, block, transfer schedule, generator and done flag, so rows admitted at different times
progress independently; `step()` runs one forward over the rows in the batch, applies the policies per
row, drops finished rows from the next forward (compaction) and returns them. A scheduler refills the
freed slots with `add()` (decoder/scheduler.py); `generate()` is the plain static loop.

Layout: rows are left-padded to a common width W; row b's answer is its last G_b columns, so the answer
window of the batch is the last Gmax = max G_b columns, with `valid` marking which belong to the answer.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field

import torch

from decoder.families.base import ModelAdapter
from decoder.masked.cached_forward import CachedForward
from decoder.masked.kv_cache import kv_bytes_per_token
from decoder.config import DecodeConfig
from decoder.features import TrajectoryState, relative_positions, trajectory_features
from decoder.padding import left_pad
from decoder.policies.registry import build_policies
from decoder.policies.base import StepContext
from decoder.policies.schedules import progress
from decoder.engine import static_batches
from decoder.masked.projection import Projector, Sampling, StepInputs
from decoder.types import STEP_FIELDS, CommitReason, ExitReason, Request, SequenceResult, SequenceTrace, StepRecord
from decoder.transfer import blocks_of, num_transfer_tokens, row_schedule, validate_schedule


@dataclass
class _BatchView:
    """One step's layout. width W of the padded batch, answer window G; win [B, G] current tokens; col [G];
    meta [B, 6]: answer start, block start, step, budget, k now, active; the rest [B, G] / [B] bool."""
    width: int
    g: int
    win: torch.Tensor
    col: torch.Tensor
    meta: torch.Tensor
    valid: torch.Tensor
    in_block: torch.Tensor
    active: torch.Tensor
    masked: torch.Tensor


@dataclass
class _Decision:
    """What the policies decided: commit [B, G] bool and its CommitReason [B, G] int8; exit_now [B] bool,
    exit_by [B] (index of the exit policy, -1 none); tau, gbar [B] from the first exit policy (NaN without)."""
    commit: torch.Tensor
    reason: torch.Tensor
    exit_now: torch.Tensor
    exit_by: torch.Tensor
    tau: torch.Tensor
    gbar: torch.Tensor


@dataclass
class _Row:
    request: Request
    gen_length: int                    # answer positions: whole blocks
    step_budget: int
    steps_per_block: int
    generator: torch.Generator | None
    admitted_at: float
    answer_tokens: int = 0             # positions a policy may commit; the rest of the last block is EOS
    plans: list = field(default_factory=list)   # per block: tokens the commit policy's schedule commits per step
    step: int = 0
    block: int = 0
    block_step: int = 0
    done: bool = False
    exit_reason: ExitReason | str = ""
    cache: object = None               # RowCache under decode.cache (decoder/masked/kv_cache.py)
    refreshes: int = 0
    forward_tokens: int = 0
    step_tokens_before: int = 0
    step_records: list = field(default_factory=list)
    token_records: list = field(default_factory=list)

    @property
    def length(self) -> int:
        return len(self.request.prompt_ids) + self.gen_length

    @property
    def prompt_length(self) -> int:
        return len(self.request.prompt_ids)

    def k_now(self, block_length: int) -> int:
        """Tokens the commit policy's schedule commits now; past the plan (threshold policies), the whole block."""
        plan = self.plans[min(self.block, len(self.plans) - 1)]
        return plan[self.block_step] if self.block_step < len(plan) else block_length


class DecodeEngine:
    def __init__(self, adapter: ModelAdapter, cfg: DecodeConfig, keep_finished_in_batch: bool = False) -> None:
        """`keep_finished_in_batch` reproduces static batching without compaction (benchmarks only):
        finished rows stay in the forward until every row of the batch is done."""
        self.adapter, self.cfg = adapter, cfg
        self.policies = build_policies(cfg, family=adapter.family)
        self.keep_finished = keep_finished_in_batch
        validate_schedule(cfg.gen_length, cfg.block_length, cfg.steps)
        self.device = adapter.device
        self.eos_ids = torch.tensor(sorted(adapter.eos_token_ids), device=self.device)
        self.rows: list[_Row] = []
        self.ids = torch.empty(0, 0, dtype=torch.long, device=self.device)
        self.attn = torch.empty_like(self.ids)
        # per answer-position state, right-aligned like the answer window: name -> (dtype, fill, trailing shape)
        self.pos_spec = {"cstep": (torch.int32, -1, ()), "creason": (torch.int8, 0, ())}
        if self.policies.needs_features:
            self.pos_spec.update({"f_margin": (torch.float32, float("nan"), ()), "f_ema": (torch.float32, 0.0, ()),
                                  "f_argmax": (torch.long, -1, ()), "f_stable": (torch.float32, 0.0, ())})
        for pol in self.policies.all():
            self.pos_spec.update(getattr(pol, "position_state", {}))
        self.pos = {k: torch.full((0, 0, *shape), fill, dtype=dt, device=self.device)
                    for k, (dt, fill, shape) in self.pos_spec.items()}
        self.stats = {"forwards": 0, "row_steps": 0, "useful_row_steps": 0, "tokens": 0, "pad_tokens": 0}
        self.needs, self.span = self.policies.signal_needs(cfg.remasking, cfg.trace)
        self.fill_argmax = cfg.exit_fill == "argmax" and bool(self.policies.exits)
        if self.fill_argmax:
            self.needs = self.needs | {"argmax"}
        self.projector = Projector(adapter, cfg.max_logits_mb, Sampling(
            cfg.top_p, cfg.top_k, getattr(self.policies.commit, "sampler", "gumbel"),
            getattr(self.policies.commit, "defer_sampling", False)))
        self.cached = (CachedForward(adapter, cfg.cache, cfg.block_length, cfg.cache_refresh_steps)
                       if cfg.cache != "none" else None)
        if self.cached and self.span:  # dual: span positions past the block keep their last refresh's signals
            self.pos_spec.update({"st_x0": (torch.long, -1, ()), "st_confidence": (torch.float32, 0.0, ()),
                                  "st_margin": (torch.float32, 0.0, ()), "st_entropy": (torch.float32, 0.0, ())})
            self.pos = {k: torch.full((0, 0, *shape), fill, dtype=dt, device=self.device)
                        for k, (dt, fill, shape) in self.pos_spec.items()}
        self._refreshed: list[bool] = []

    # ----- admission -------------------------------------------------------------------------
    def row_config(self, request: Request) -> tuple[int, int, int, int]:
        """(answer positions in whole blocks, step budget, steps per block, answer tokens) for a request;
        raises ValueError on bad overrides."""
        cfg = self.cfg
        n, budget = row_schedule(cfg.gen_length, cfg.block_length, cfg.steps, request.gen_length)
        g = blocks_of(n, cfg.block_length) * cfg.block_length
        if request.steps is not None:
            if request.steps <= 0 or request.steps % (g // cfg.block_length):
                raise ValueError(f"steps {request.steps} must be a positive multiple of the row's "
                                 f"{g // cfg.block_length} block(s)")
            budget = request.steps
        if len(request.prompt_ids) + g > self.adapter.context_length:
            raise ValueError(f"prompt ({len(request.prompt_ids)} tokens) + {g} answer positions exceed the "
                             f"model context ({self.adapter.context_length})")
        return g, budget, budget * cfg.block_length // g, n

    def _plans(self, g: int, n: int, per_block: int) -> list[list[int]]:
        """Per block, the commit policy's transfer counts over its masked (not EOS-fixed) positions."""
        bl, plan = self.cfg.block_length, getattr(self.policies.commit, "transfer_plan", num_transfer_tokens)
        return [plan(min(bl, n - b * bl), per_block) for b in range(g // bl)]

    def temperature(self, request: Request) -> float:
        return self.cfg.temperature if request.temperature is None else request.temperature

    def add(self, requests: list[Request]) -> None:
        """Admit rows (all validated first, so a bad one admits none); one re-pad for the lot."""
        configs = [self.row_config(req) for req in requests]
        first_new = len(self.rows)
        for req, (g, budget, per_block, n) in zip(requests, configs):
            gen = None
            if self.temperature(req) > 0 or self.cfg.remasking == "random" or self.policies.commit_draws:
                gen = torch.Generator(device="cpu").manual_seed(
                    zlib.crc32(f"{self.cfg.seed}:{req.seed_key or req.id}".encode()))
            self.rows.append(_Row(req, g, budget, per_block, gen, time.time(), n, self._plans(g, n, per_block)))
        if requests:
            self._rebuild(first_new)

    def _rebuild(self, new_from: int) -> None:
        """Re-pad the batch after rows were added; rows < new_from keep their tokens and commit records."""
        mask_id, rows = self.adapter.mask_token_id, self.rows
        eos = self.adapter.eos_token_ids[0]  # positions past a row's answer tokens are EOS from the start
        seqs = [self.ids[i, self.ids.shape[1] - r.length:].tolist() if i < new_from
                else [*r.request.prompt_ids, *[mask_id] * r.answer_tokens, *[eos] * (r.gen_length - r.answer_tokens)]
                for i, r in enumerate(rows)]
        ids, attn = left_pad(seqs, self.adapter.pad_token_id)
        for i, r in enumerate(rows):  # EOS-fixed positions are invisible: the row decodes as at its own length
            if r.gen_length > r.answer_tokens:
                attn[i, attn.shape[1] - (r.gen_length - r.answer_tokens):] = 0
        g = max(r.gen_length for r in rows)
        for name, (dtype, fill, shape) in self.pos_spec.items():
            fresh = torch.full((len(rows), g, *shape), fill, dtype=dtype, device=self.device)
            if new_from:
                old_g = min(g, self.pos[name].shape[1])
                fresh[:new_from, g - old_g:] = self.pos[name][:new_from, self.pos[name].shape[1] - old_g:]
            self.pos[name] = fresh
        self.ids, self.attn = ids.to(self.device), attn.to(self.device)

    def _keep_rows(self, keep: list[int]) -> None:
        """Compaction: drop finished rows from the batch and trim padding no remaining row needs."""
        self.rows = [self.rows[i] for i in keep]
        width = max((r.length for r in self.rows), default=0)
        g = max((r.gen_length for r in self.rows), default=0)
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.ids = self.ids.index_select(0, idx)[:, self.ids.shape[1] - width:].contiguous()
        self.attn = self.attn.index_select(0, idx)[:, self.attn.shape[1] - width:].contiguous()
        for name, t in self.pos.items():
            self.pos[name] = t.index_select(0, idx)[:, t.shape[1] - g:].contiguous()

    def clear(self) -> None:
        """Drop every row (after a failed step: their state may be half-updated)."""
        self._keep_rows([])

    @property
    def kv_bytes_per_token(self) -> int:
        return kv_bytes_per_token(self.adapter.model)

    @property
    def num_active(self) -> int:
        return sum(not r.done for r in self.rows)

    @property
    def batch_tokens(self) -> int:
        return self.ids.numel()

    # ----- one step: signals -> decide -> apply -> record --------------------------------------
    def step(self) -> list[SequenceResult]:
        """One forward over the batch; returns the rows that finished at this step."""
        if not self.rows:
            return []
        for r in self.rows:
            r.step_tokens_before = r.forward_tokens
        view = self._view()
        ctx = self._signals(view)
        dec = self._decide(ctx, view)
        tokens, reason, eos_stop = self._apply(ctx, view, dec)
        self._count(self.rows, view.width)
        if self.cfg.trace != "off":
            self._record(view, ctx, dec, reason)
        still = (tokens == self.adapter.mask_token_id) & view.valid
        return self._advance(torch.stack([still.any(-1), (still & view.in_block).any(-1), dec.exit_by,
                                          eos_stop]).tolist())

    def _view(self) -> "_BatchView":
        """Where each row stands: its answer span, current block and still-masked positions, [B, G]."""
        rows, bl, mask_id = self.rows, self.cfg.block_length, self.adapter.mask_token_id
        width, g = self.ids.shape[1], max(r.gen_length for r in rows)
        win, col = self.ids[:, width - g:], torch.arange(g, device=self.device)
        meta = torch.tensor([[g - r.gen_length, g - r.gen_length + r.block * bl, r.step, r.step_budget,
                              r.k_now(bl), not r.done] for r in rows], device=self.device)
        valid = col >= meta[:, :1]
        in_block = (col >= meta[:, 1:2]) & (col < meta[:, 1:2] + bl)
        active = meta[:, 5].bool()
        masked = (win == mask_id) & valid & active[:, None]
        return _BatchView(width, g, win, col, meta, valid, in_block, active, masked)

    def _signals(self, view: "_BatchView") -> StepContext:
        """The forward and the signals the policies read, at the positions they read them (the current
        block's still-masked positions, or the whole still-masked span when an exit policy, the trajectory
        features or the token trace need it); then the policies' context."""
        cfg, rows = self.cfg, self.rows
        where = view.masked if self.span else view.masked & view.in_block
        gens = [r.generator if not r.done else None for r in rows]
        hidden = computed = None
        if self.cached:
            hidden, computed, self._refreshed = self.cached.hidden(rows, self.ids, self.attn, view.g)
        sig = self.projector.signals(StepInputs(self.ids, self.attn, where if computed is None else where & computed,
                                                view.win, [r.gen_length for r in rows], gens,
                                                [self.temperature(r.request) for r in rows], hidden,
                                                self._row_filters()),
                                     self.needs, cfg.temperature)
        if computed is not None and self.span:
            sig = self._stale_signals(sig, where, computed, view.g)
        ctx = StepContext(sig, self._score(sig, gens, [r.gen_length for r in rows]), view.masked, view.in_block,
                          view.meta[:, 4], progress(view.meta[:, 2], view.meta[:, 3], cfg.sched.progress_mode),
                          pos={k: v[:, v.shape[1] - view.g:] for k, v in self.pos.items()},
                          tau_low_logit=self._row_tau_low(), rows=rows)
        if self.projector.sampling.deferred:
            ctx.resample = self._resample
        if self.policies.needs_features:
            ctx.features = self._features(ctx, view.g, view.meta)
        return ctx

    def filters(self, request: Request) -> tuple[float, int]:
        """(top_p, top_k) a request samples with: its overrides, else the job's."""
        cfg = self.cfg
        return (cfg.top_p if request.top_p is None else request.top_p,
                cfg.top_k if request.top_k is None else request.top_k)

    def _row_filters(self) -> list[tuple[float, int]] | None:
        """Per-row (top_p, top_k), or None when no row overrides the job's."""
        if all(r.request.top_p is None and r.request.top_k is None for r in self.rows):
            return None
        return [self.filters(r.request) for r in self.rows]

    def _resample(self, b: int, cols: torch.Tensor) -> torch.Tensor | None:
        """Deferred sampling of row b's picked answer-window columns; None for a greedy row."""
        row = self.rows[b]
        temperature = self.temperature(row.request)
        if temperature <= 0 or row.generator is None:
            return None
        return self.projector.resample(b, cols, temperature, row.generator, *self.filters(row.request))

    def _stale_signals(self, sig, where, computed, g: int):
        """Dual cache: span positions outside this step's query keep the signals of their row's last refresh;
        fresh ones are stored for later steps."""
        store = {k: v[:, v.shape[1] - g:] for k, v in self.pos.items() if k.startswith("st_")}
        fresh, stale = where & computed, where & ~computed
        for name in ("x0", "confidence", "margin", "entropy"):
            value, saved = getattr(sig, name), store[f"st_{name}"]
            saved[fresh] = value[fresh].to(saved.dtype)
            setattr(sig, name, torch.where(stale, saved.to(value.dtype), value))
        return sig

    def _row_tau_low(self) -> torch.Tensor | None:
        """[B] per-row tau_low overrides (NaN: the policy's own), or None when no row has one."""
        values = [r.request.tau_low_logit for r in self.rows]
        if all(v is None for v in values):
            return None
        return torch.tensor([float("nan") if v is None else v for v in values], device=self.device)

    def _score(self, sig, gens, lengths) -> torch.Tensor:
        how = self.cfg.remasking
        if how == "low_confidence":
            return sig.confidence
        if how == "margin":
            return sig.margin
        if how == "entropy":
            return -sig.entropy
        g_max = sig.x0.shape[1]
        return torch.stack([torch.zeros(g_max) if gen is None else
                            torch.cat([torch.zeros(g_max - n), torch.rand(n, generator=gen)])
                            for gen, n in zip(gens, lengths)]).to(sig.x0.device)

    def _decide(self, ctx: StepContext, view: "_BatchView") -> "_Decision":
        """Commit picks (commit policy, then modifiers) and per-row exits (exit policies, then modifiers)."""
        commit = self.policies.commit.select(ctx)
        reason = torch.where(commit, int(self.policies.commit.reason), 0).to(torch.int8)
        for mod in self.policies.modifiers:
            commit, extra = mod.modify(ctx, commit)
            reason = torch.where(commit, reason, 0).to(torch.int8)
            reason = torch.where(extra, int(mod.reason), reason).to(torch.int8)
            commit = commit | extra
        exit_now, exit_by = torch.zeros_like(view.active), torch.full_like(view.meta[:, 0], -1)
        tau = gbar = torch.full((len(self.rows),), float("nan"), device=self.device)
        for j, pol in enumerate(self.policies.exits):
            d = pol.should_exit(ctx)
            exit_by = torch.where(d.exit & ~exit_now, j, exit_by)
            exit_now = exit_now | d.exit
            tau, gbar = (d.tau, d.gbar) if j == 0 else (tau, gbar)
        for mod in self.policies.modifiers:
            exit_now = mod.modify_exit(ctx, exit_now)
        early = (view.masked & ~commit).any(-1)  # an exit with nothing left to fill is not an early exit
        exit_now = exit_now & early
        return _Decision(commit, reason, exit_now, torch.where(exit_now, exit_by, -1), tau, gbar)

    def _apply(self, ctx: StepContext, view: "_BatchView", dec: "_Decision"):
        """Write commits and exit fills (and EOS fills) into the batch; returns (window tokens, reason per
        position, rows stopped by EOS)."""
        fill = view.masked & ~dec.commit & dec.exit_now[:, None]
        reason = torch.where(fill, int(CommitReason.EXIT_FILL), dec.reason).to(torch.int8)
        tokens = torch.where(dec.commit, ctx.signals.x0, view.win)
        tokens = torch.where(fill, ctx.signals.argmax if self.fill_argmax else ctx.signals.x0, tokens)
        eos_stop = torch.zeros_like(view.active)
        if self.cfg.stop_at_eos:
            tokens, reason, eos_stop = self._stop_at_eos(tokens, reason, view.valid, view.active, view.col)
        self.ids[:, view.width - view.g:] = tokens
        cstep, creason = self.pos["cstep"], self.pos["creason"]
        cstep[:, -view.g:] = torch.where(reason > 0, view.meta[:, 2:3].to(cstep.dtype), cstep[:, -view.g:])
        creason[:, -view.g:] = torch.where(reason > 0, reason, creason[:, -view.g:])
        return tokens, reason, eos_stop

    def _features(self, ctx: StepContext, g: int, meta: torch.Tensor) -> torch.Tensor:
        """Trajectory features [B, G, F] from this step's signals; advances the running state in place."""
        p = ctx.pos
        state = TrajectoryState(p["f_margin"], p["f_ema"], p["f_argmax"], p["f_stable"])
        lengths = torch.tensor([r.gen_length for r in self.rows], device=self.device)
        rel_answer, rel_block = relative_positions(lengths, g, self.cfg.block_length, self.device)
        prog = (meta[:, 2].float() / meta[:, 3].float()).clamp(max=1.0)[:, None]
        feats, new = trajectory_features(ctx.signals.confidence, ctx.signals.entropy, ctx.signals.margin,
                                         ctx.signals.x0, state, rel_answer, rel_block, prog,
                                         self.cfg.tspd.ema_decay)
        for name, value in zip(("f_margin", "f_ema", "f_argmax", "f_stable"), (new.prev_margin, new.margin_ema,
                                                                              new.prev_argmax, new.stable_steps)):
            p[name].copy_(value)
        return feats

    def _stop_at_eos(self, tokens, reason, valid, active, col):
        """Rows whose committed EOS has everything before it decoded stop; later masks become EOS."""
        mask_id = self.adapter.mask_token_id
        decoded = (tokens != mask_id) & valid
        is_eos = decoded & torch.isin(tokens, self.eos_ids)
        has_eos = is_eos.any(-1)
        first = torch.where(has_eos, is_eos.int().argmax(-1), tokens.shape[1])
        undecided_before = (~decoded & valid & (col < first[:, None])).any(-1)
        stop = has_eos & ~undecided_before & active
        after = ~decoded & valid & stop[:, None] & (col > first[:, None])
        eos_tok = tokens.gather(1, first.clamp(max=tokens.shape[1] - 1)[:, None])
        tokens = torch.where(after, eos_tok, tokens)
        reason = torch.where(after, int(CommitReason.EOS_FILL), reason).to(torch.int8)
        return tokens, reason, stop & after.any(-1)

    def _count(self, rows: list[_Row], width: int) -> None:
        if not self.cached:
            for r in rows:
                if not r.done:
                    r.forward_tokens += r.length
        s = self.stats
        s["forwards"] += 1
        s["row_steps"] += len(rows)
        s["useful_row_steps"] += sum(not r.done for r in rows)
        s["tokens"] += len(rows) * width
        s["pad_tokens"] += sum(width - r.length for r in rows)

    def _record(self, view: "_BatchView", ctx: StepContext, dec: "_Decision", reason: torch.Tensor) -> None:
        """Step rows, and at `tokens` level the still-masked positions of the step (what the step read)."""
        rows, sig = self.rows, ctx.signals
        n_commit = (reason > 0).sum(-1).float()
        refresh = torch.tensor([float(f) for f in self._refreshed] if self.cached else [1.0] * len(rows))
        tokens_run = torch.tensor([float(r.forward_tokens - r.step_tokens_before) for r in rows])
        record = StepRecord(step=view.meta[:, 2].float(), progress=ctx.progress.float(), tau=dec.tau, gbar=dec.gbar,
                            n_committed=n_commit, exit=dec.exit_now.float(), refresh=refresh.to(dec.tau.device),
                            forward_tokens=tokens_run.to(dec.tau.device))
        steps = torch.stack(list(record), -1)
        tokens = torch.stack([sig.x0.float(), sig.confidence, sig.margin, sig.entropy], -1) \
            if self.cfg.trace == "tokens" else None   # TOKEN_FIELDS order
        for i, r in enumerate(rows):
            if r.done:
                continue
            r.step_records.append(steps[i])
            if tokens is not None:
                cols = view.masked[i].nonzero().squeeze(-1)
                r.token_records.append((cols - (view.g - r.gen_length), tokens[i, cols], reason[i, cols]))

    # ----- bookkeeping after a step -----------------------------------------------------------
    def _advance(self, host: list[list]) -> list[SequenceResult]:
        remaining, block_left, exit_by, eos_stop = host
        finished = []
        for i, r in enumerate(self.rows):
            if r.done:
                continue
            r.step += 1
            r.block_step += 1
            if not remaining[i]:
                r.done = True
                r.exit_reason = (ExitReason(self.policies.exits[int(exit_by[i])].name) if exit_by[i] >= 0
                                 else ExitReason.EOS if eos_stop[i] else ExitReason.STEPS if r.step >= r.step_budget
                                 else ExitReason.ALL_COMMITTED)
                finished.append(self._result(i, r))
            elif not block_left[i]:
                r.block, r.block_step = r.block + 1, 0
        if finished and (not self.keep_finished or all(r.done for r in self.rows)):
            self._keep_rows([i for i, r in enumerate(self.rows) if not r.done])
        return finished

    def _result(self, i: int, r: _Row) -> SequenceResult:
        g, n = r.gen_length, r.answer_tokens
        trace = None
        if r.step_records:
            steps = torch.stack(r.step_records).cpu().numpy()
            token_step = positions = tokens = reasons = None
            if r.token_records:
                counts = torch.tensor([len(p) for p, _, _ in r.token_records])
                token_step = torch.repeat_interleave(torch.arange(len(counts)), counts).numpy().astype("int32")
                positions = torch.cat([p for p, _, _ in r.token_records]).cpu().numpy().astype("int32")
                tokens = torch.cat([t for _, t, _ in r.token_records]).cpu().numpy()
                reasons = torch.cat([c for _, _, c in r.token_records]).cpu().numpy()
                token_step = steps[token_step, STEP_FIELDS.index("step")].astype("int32")
            trace = SequenceTrace(steps, tokens, reasons, token_step, positions)
            r.step_records, r.token_records = [], []
        return SequenceResult(
            id=r.request.id, prompt_ids=list(r.request.prompt_ids), output_ids=self.ids[i, -g:][:n].tolist(),
            steps_taken=r.step, step_budget=r.step_budget, exit_reason=r.exit_reason,
            commit_step=self.pos["cstep"][i, -g:][:n].tolist(),
            commit_reason=self.pos["creason"][i, -g:][:n].tolist(),
            trace=trace, submitted_at=r.request.submitted_at, admitted_at=r.admitted_at, finished_at=time.time(),
            refreshes=r.refreshes if self.cached else r.step, forward_tokens=r.forward_tokens)

    # ----- static loop ------------------------------------------------------------------------
    def generate(self, requests: list[Request], batch_size: int | None = None) -> list[SequenceResult]:
        """Decode `requests` in static batches of `batch_size` (compaction, no refill); input order kept."""
        return static_batches(self, requests, batch_size or self.cfg.max_batch_size)

