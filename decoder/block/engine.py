"""The block engine: block diffusion over an exact per-row KV cache (LLaDA2.x, SDAR/TraDo, Fast-dLLM v2).

Rows at different blocks, block steps and cache lengths share one forward per step. A step first writes what
rows have to the cache (blocks finished at the last step in one grouped forward, new rows' whole prompt blocks
in another), starts their next blocks, then runs one denoise forward of every row's current block against its cache
(decoder/block/kv.py), and per row: the family's sampler (decoder/block/sampling.py), the commit rule (policy
`block`), exit policies over the block's masked positions with progress measured within the block (an exit
fills the block's remaining masks and moves on to the next block), the stop rule. A row leaves as soon as it
has its answer or an EOS ends it, so the slot scheduler (decoder/scheduler.py) refills its slot; the engine has
the interface that scheduler drives and knows nothing of tokenizers, queues or Ray.

`decode.block.recompute` runs every forward over the row's whole sequence instead of the cache (the released
LLaDA2 loop's way): the cache's exactness is tested against it.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch

from decoder.block.kv import BatchKV, block_causal_mask
from decoder.block.rows import BlockRow, to_result
from decoder.block.sampling import quota_schedule, sample
from decoder.config import DecodeConfig
from decoder.engine import static_batches
from decoder.families.block_base import BlockAdapter, BlockLoop
from decoder.policies.base import StepContext
from decoder.policies.block import BlockCommitPolicy
from decoder.policies.registry import build_policies
from decoder.policies.schedules import progress
from decoder.signals import StepSignals
from decoder.types import CommitReason, ExitReason, Request, SequenceResult, StepRecord


def resolve_loop(family: BlockLoop, cfg: DecodeConfig, block_length: int) -> BlockLoop:
    """The family's loop with the job's decode.block overrides (a family's default sub-block longer than the
    block, as on a tiny test model, is the whole block)."""
    b, out = cfg.block, dict(vars(family))
    if out["sub_block_length"] and out["sub_block_length"] > block_length:
        out["sub_block_length"] = block_length
    for key in ("threshold_prob", "steps_per_block", "sub_block_length", "stop", "editing_threshold_prob",
                "max_post_steps"):
        if getattr(b, key) is not None:
            out[key] = getattr(b, key)
    return BlockLoop(**out)


class BlockEngine:
    cached = None        # the masked engine's approximate caches do not apply ...
    exact_cache = True   # ... this one is exact and always on; decode.max_cache_mb bounds it

    def __init__(self, adapter: BlockAdapter, cfg: DecodeConfig, keep_finished_in_batch: bool = False) -> None:
        """`keep_finished_in_batch` reproduces lockstep static batching (benchmarks only): a finished row stays in
        every forward, decoding nothing, until each row of its batch is done."""
        if cfg.cache != "none":
            raise ValueError(f"decode.cache={cfg.cache!r} does not apply to {adapter.family}: its block cache is exact "
                             "and always on; use decode.cache=none (decode.block.recompute=true turns it off)")
        self.adapter, self.cfg, self.keep_finished = adapter, cfg, keep_finished_in_batch
        self.bs = cfg.block.block_length or adapter.block_length
        self.loop = resolve_loop(adapter.loop, cfg, self.bs)
        sub = self.loop.sub_block_length
        if sub is not None and (sub <= 0 or self.bs % sub):
            raise ValueError(f"decode.block.sub_block_length {sub} must divide the block length {self.bs}")
        self.policies = build_policies(cfg, family=adapter.family)
        if not isinstance(self.policies.commit, BlockCommitPolicy):
            raise ValueError(f"{adapter.family} needs the block commit policy")
        self.policies.commit.threshold_prob = self.loop.threshold_prob
        self.policies.commit.over_block = self.loop.quota_over_block
        self.editing = self.loop.editing_threshold_prob is not None
        self.recompute = cfg.block.recompute
        self.device, self.mask_id = adapter.device, adapter.mask_token_id
        self.eos = torch.tensor(sorted(adapter.eos_token_ids), device=self.device)
        self.kv = BatchKV(*adapter.kv_layout, adapter.dtype, self.device)
        self.rows: list[BlockRow] = []
        self.pos_spec = {}
        for pol in self.policies.exits:
            self.pos_spec.update(getattr(pol, "position_state", {}))
        self.needs_margin = bool(self.policies.exits) or cfg.trace == "tokens"
        self.stats = {"forwards": 0, "row_steps": 0, "useful_row_steps": 0, "tokens": 0, "pad_tokens": 0,
                      "encoder_passes": 0, "encoder_rows": 0, "encoder_tokens": 0}

    # ----- admission ---------------------------------------------------------------------------
    def row_config(self, request: Request) -> tuple[int, int]:
        """(answer tokens, steps per block) of a request; ValueError for what the engine refuses."""
        n = request.gen_length or self.cfg.gen_length
        p, bs = len(request.prompt_ids), self.bs
        if n <= 0:
            raise ValueError(f"max_new_tokens {n} must be positive")
        if not p:
            raise ValueError("empty prompt")
        blocks = -(-(p + n) // bs) - p // bs
        per_block = self.cfg.block.steps_per_block or self.loop.steps_per_block or bs
        if request.steps is not None:
            if request.steps <= 0 or request.steps % blocks:
                raise ValueError(f"steps {request.steps} must be a positive multiple of the row's {blocks} block(s)")
            per_block = request.steps // blocks
        if (p // bs + blocks) * bs > self.adapter.context_length:
            raise ValueError(f"prompt ({p} tokens) + {n} answer tokens in blocks of {bs} exceed the model context "
                             f"({self.adapter.context_length})")
        return n, per_block

    def temperature(self, request: Request) -> float:
        return self.cfg.temperature if request.temperature is None else request.temperature

    def filters(self, request: Request) -> tuple[float, int]:
        cfg = self.cfg
        return (cfg.top_p if request.top_p is None else request.top_p,
                cfg.top_k if request.top_k is None else request.top_k)

    def add(self, requests: list[Request]) -> None:
        configs = [self.row_config(r) for r in requests]
        for req, (n, per_block) in zip(requests, configs):
            gen = None
            if self.temperature(req) > 0:
                gen = torch.Generator(device=self.device).manual_seed(
                    zlib.crc32(f"{self.cfg.seed}:{req.seed_key or req.id}".encode()))
            row = BlockRow(req, n, self.bs, per_block, gen)
            row.sequence = list(req.prompt_ids[:row.first_block * self.bs])
            row.pending = [] if self.recompute else list(row.sequence)
            self.rows.append(row)
        self.kv.add_rows(len(requests))

    def clear(self) -> None:
        self.rows = []
        self.kv.keep([])

    @property
    def num_active(self) -> int:
        return sum(not r.done for r in self.rows)

    @property
    def kv_bytes_per_token(self) -> int:
        return self.kv.bytes_per_token()

    # ----- forwards ----------------------------------------------------------------------------
    def _forward(self, idx: list[int], new: list[list[int]], store: bool) -> torch.Tensor:
        """[b, Q, H] hidden states of each row's `new` tokens (left-padded to the longest, Q) at the positions
        after what it has cached; with `store`, their keys and values are appended to its cache. Recomputing,
        each row's whole finished sequence runs before its new tokens, with nothing cached."""
        rows = [self.rows[i] for i in idx]
        queries = [r.sequence + t for r, t in zip(rows, new)] if self.recompute else new
        width = max(len(q) for q in queries)
        ids = torch.full((len(rows), width), self.adapter.pad_token_id, dtype=torch.long)
        for b, q in enumerate(queries):
            ids[b, width - len(q):] = torch.tensor(q, dtype=torch.long)
        counts = torch.tensor([len(q) for q in queries])
        start = torch.tensor([0 if self.recompute else int(self.kv.lengths[i]) for i in idx])
        j = torch.arange(width)
        q_real = j[None, :] >= (width - counts)[:, None]
        q_pos = (start[:, None] + j[None, :] - (width - counts)[:, None]).clamp(min=0)
        view = self.kv.view(None if len(idx) == len(self.rows) else idx)   # all rows: slices, no copy
        cached = torch.zeros(len(rows), dtype=torch.long) if self.recompute else self.kv.lengths[idx].cpu()
        cache_width = view.keys[0].shape[2]
        mask = block_causal_mask(cached.to(self.device), cache_width, q_pos.to(self.device), q_real.to(self.device),
                                 self.bs, self.adapter.dtype)
        hidden = self.adapter.hidden(ids.to(self.device), q_pos.to(self.device), mask, view)
        if store and not self.recompute:
            self.kv.write(view, idx, [len(t) for t in new])
        s = self.stats
        s["tokens"] += len(rows) * (width + cache_width)
        s["pad_tokens"] += int((width - counts).sum()) + int((cache_width - cached).sum())
        return hidden

    def _prepare(self) -> None:
        """Write pending tokens to the caches, learn autoregressive block starts, and start the next block of
        every row that has none. Finished blocks (one block each) and new rows' prompts (their whole blocks) go
        in separate grouped forwards, so a block's commit is not padded to a prompt's length."""
        todo = [i for i, r in enumerate(self.rows) if r.block is None and (r.pending or self._needs_start(r))]
        blocks = [i for i in todo if self.rows[i].block_index >= 0]
        for group in (blocks, [i for i in todo if i not in blocks]):
            if group:
                self._store(group)
        for r in self.rows:
            if r.block is None:
                self._start_block(r)

    def _store(self, todo: list[int]) -> None:
        """One grouped forward writing rows' pending tokens to their caches."""
        if todo:
            new = [self.rows[i].pending for i in todo]
            hidden = self._forward(todo, new, store=True)
            s = self.stats
            s["encoder_passes"] += 1
            s["encoder_rows"] += len(todo)
            for b, i in enumerate(todo):
                r = self.rows[i]
                n = len(r.pending) if not self.recompute else len(r.sequence)
                s["encoder_tokens"] += n
                r.forward_tokens, r.stored_now, r.encoder_passes = r.forward_tokens + n, n, r.encoder_passes + 1
                if self._needs_start(r):
                    r.start_token = int(self.adapter.head(hidden[b, -1]).argmax())
                r.pending = []

    def _needs_start(self, r: BlockRow) -> bool:
        """Whether the row's next block starts with an autoregressive token it does not know yet: the family
        starts blocks so, and the block holds no prompt tail."""
        nxt = r.block_index + 1 if r.block_index >= 0 else r.first_block
        return self.loop.ar_block_start and r.start_token is None and nxt * self.bs >= r.prompt_length

    def _start_block(self, r: BlockRow) -> None:
        r.block_index = r.block_index + 1 if r.block_index >= 0 else r.first_block
        head = list(r.request.prompt_ids[r.block_index * self.bs:])
        if not head and r.start_token is not None:
            head = [r.start_token]
        block = torch.full((self.bs,), self.mask_id, dtype=torch.long, device=self.device)
        block[:len(head)] = torch.tensor(head, dtype=torch.long, device=self.device)
        r.block, r.fixed = block, torch.arange(self.bs, device=self.device) < len(head)
        r.cstep = torch.full((self.bs,), -1, dtype=torch.long, device=self.device)
        r.creason = torch.zeros(self.bs, dtype=torch.int8, device=self.device)
        if r.start_token is not None and head == [r.start_token]:
            r.cstep[0], r.creason[0] = r.step, int(CommitReason.AUTOREGRESSIVE)
        r.start_token, r.block_step, r.post_steps = None, 0, 0
        r.pos = {k: torch.full((self.bs, *shape), fill, dtype=dt, device=self.device)
                 for k, (dt, fill, shape) in self.pos_spec.items()}

    # ----- one step: signals -> decide -> apply -> record --------------------------------------
    def step(self) -> list[SequenceResult]:
        finished = self._close_settled() if self.editing else []
        if not self.rows:
            return finished
        self._prepare()
        rows = self.rows
        tokens = torch.stack([r.block for r in rows])
        hidden = self._forward(list(range(len(rows))), [r.block.tolist() for r in rows], store=False)[:, -self.bs:]
        if self.loop.shift_logits:   # position i reads the output at i - 1; the block's first its own
            hidden = torch.cat([hidden[:, :1], hidden[:, :-1]], dim=1)
        masked = tokens == self.mask_id
        sub_block = self._sub_block(masked)
        candidates = masked & sub_block
        sig = self._signals(hidden, sub_block)
        ctx = self._context(sig, masked, candidates)
        commit = self.policies.commit.select(ctx)
        exit_now, exit_by, tau, gbar = self._exits(ctx)
        self._count()
        return finished + self._apply(tokens, masked, sig, commit, exit_now, exit_by, tau, gbar)

    def _close_settled(self) -> list[SequenceResult]:
        """Editing (LLaDA2.1): a block with no mask left takes up to max_post_steps more steps that only edit;
        past them it ends before its next forward."""
        finished = []
        for r in self.rows:
            if not r.done and r.block is not None and not bool((r.block == self.mask_id).any()):
                r.post_steps += 1
                if r.post_steps > self.loop.max_post_steps:
                    finished += self._finish_block(r, -1)
        if finished:
            self._drop_finished()
        return finished

    def _drop_finished(self) -> None:
        if self.keep_finished and not all(r.done for r in self.rows):
            return
        keep = [i for i, r in enumerate(self.rows) if not r.done]
        self.rows = [self.rows[i] for i in keep]
        self.kv.keep(keep)

    def _sub_block(self, masked: torch.Tensor) -> torch.Tensor:
        """[B, L] bool: the positions of each row's first sub-block that still holds a mask (all positions
        when the family has no sub-blocks)."""
        sub = self.loop.sub_block_length
        if not sub:
            return torch.ones_like(masked)
        slot = torch.arange(self.bs, device=masked.device)
        first = torch.where(masked, slot, self.bs).min(-1).values // sub
        return (slot[None, :] // sub) == first[:, None]

    def _signals(self, hidden: torch.Tensor, sub_block: torch.Tensor) -> StepSignals:
        """Per row: the block's float32 logits, the sampler's draw over the family's span (the whole block, or
        the current sub-block: the positions the released loop draws for, in its order), and the raw argmax,
        margin and entropy the exit policies and traces read."""
        b, bs = sub_block.shape
        x0 = torch.zeros(b, bs, dtype=torch.long, device=self.device)
        conf = torch.full((b, bs), float("-inf"), device=self.device)
        margin, entropy = torch.zeros(b, bs, device=self.device), torch.zeros(b, bs, device=self.device)
        argmax = torch.zeros(b, bs, dtype=torch.long, device=self.device)
        for i, r in enumerate(self.rows):
            logits = self.adapter.head(hidden[i])
            argmax[i] = x0[i] = logits.argmax(-1)   # positions the sampler does not draw for keep the argmax
            span = sub_block[i]
            top_p, top_k = self.filters(r.request)
            xs, ps = sample(logits[span], self.temperature(r.request), top_k, top_p, r.generator, self.loop.sampler)
            x0[i, span], conf[i, span] = xs, ps
            if self.needs_margin:
                top2 = logits.topk(2, dim=-1).values
                margin[i] = top2[:, 0] - top2[:, 1]
                entropy[i] = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)
        return StepSignals(x0, conf, margin, entropy, argmax=argmax)

    def _context(self, sig: StepSignals, masked: torch.Tensor, candidates: torch.Tensor) -> StepContext:
        rows = self.rows
        quota = torch.tensor([self._quota(r) for r in rows], device=self.device)
        step = torch.tensor([r.block_step for r in rows], device=self.device)
        budget = torch.tensor([r.steps_per_block for r in rows], device=self.device)
        tau_low = [r.request.tau_low_logit for r in rows]
        pos = {k: torch.stack([r.pos[k] for r in rows]) for k in self.pos_spec}
        return StepContext(sig, sig.confidence, masked, candidates, quota,
                           progress(step, budget, self.cfg.sched.progress_mode), pos=pos,
                           tau_low_logit=None if all(v is None for v in tau_low) else torch.tensor(
                               [float("nan") if v is None else v for v in tau_low], device=self.device),
                           rows=rows)

    def _quota(self, r: BlockRow) -> int:
        """Tokens the row's step commits at least: the quota schedule's entry (1 without one)."""
        if not (self.cfg.block.steps_per_block or self.loop.steps_per_block or r.request.steps):
            return 1
        plan = quota_schedule(self.bs, r.steps_per_block)
        return plan[min(r.block_step, len(plan) - 1)]

    def _exits(self, ctx: StepContext):
        """Exit policies over the block's still-masked positions (per row; nothing pooled across rows)."""
        b = len(self.rows)
        nan = torch.full((b,), float("nan"), device=self.device)
        exit_now, exit_by, tau, gbar = torch.zeros(b, dtype=torch.bool, device=self.device), [-1] * b, nan, nan
        for j, pol in enumerate(self.policies.exits):
            d = pol.should_exit(ctx)
            exit_by = [j if (e and by < 0) else by for e, by in zip(d.exit.tolist(), exit_by)]
            exit_now = exit_now | d.exit
            tau, gbar = (d.tau, d.gbar) if j == 0 else (tau, gbar)
        for i, r in enumerate(self.rows):
            for k in self.pos_spec:
                r.pos[k] = ctx.pos[k][i]
        return exit_now, exit_by, tau, gbar

    def _apply(self, tokens, masked, sig, commit, exit_now, exit_by, tau, gbar) -> list[SequenceResult]:
        fill = masked & ~commit & exit_now[:, None]
        fill_tokens = sig.argmax if self.cfg.exit_fill == "argmax" else sig.x0
        new = torch.where(commit, sig.x0, torch.where(fill, fill_tokens, tokens))
        above = sig.confidence > self.loop.threshold_prob   # committed by the threshold, else by the quota
        reason = torch.where(commit, torch.where(above, int(CommitReason.THRESHOLD), int(CommitReason.SCHEDULE)), 0)
        reason = torch.where(fill, int(CommitReason.EXIT_FILL), reason).to(torch.int8)
        edit = self._edits(tokens, masked, sig) if self.editing else torch.zeros_like(masked)
        new = torch.where(edit, sig.x0, new)
        reason = torch.where(edit, int(CommitReason.EDIT), reason).to(torch.int8)
        host = {"exit": exit_now.tolist(), "tau": tau.tolist(), "gbar": gbar.tolist(),
                "n": (reason > 0).sum(-1).tolist(), "settled": (~masked.any(-1) & ~edit.any(-1)).tolist()}
        finished = []
        for i, r in enumerate(self.rows):
            if r.done:   # kept in the batch (lockstep static batching): it decodes nothing
                continue
            r.block = new[i]
            r.cstep = torch.where(reason[i] > 0, r.step, r.cstep)
            r.creason = torch.where(reason[i] > 0, reason[i], r.creason)
            self._record(r, i, masked[i], sig, reason[i], host)
            r.step, r.block_step = r.step + 1, r.block_step + 1
            r.forward_tokens, r.stored_now = r.forward_tokens + self.bs, 0
            by = exit_by[i] if host["exit"][i] and bool(fill[i].any()) else -1
            whole = not bool((r.block == self.mask_id).any())
            if self.editing and by < 0:   # a block ends when a step that began with no mask edited nothing
                whole = whole and host["settled"][i]
            if self._stops_now(r) or whole:
                finished += self._finish_block(r, by)
        if finished:
            self._drop_finished()
        return finished

    def _edits(self, tokens: torch.Tensor, masked: torch.Tensor, sig: StepSignals) -> torch.Tensor:
        """[B, L] LLaDA2.1's token-to-token edits: decided answer positions (not the prompt tail) whose candidate
        differs from their token with a probability above decode.block.editing_threshold_prob."""
        slot = torch.arange(self.bs, device=self.device)
        answer = slot[None, :] + torch.tensor([r.block_offset for r in self.rows], device=self.device)[:, None] >= 0
        return ~masked & answer & (sig.confidence > self.loop.editing_threshold_prob) & (sig.x0 != tokens)

    def _stops_now(self, r: BlockRow) -> bool:
        """Eager stop rule: an EOS among the block's answer positions with no mask before it (earlier blocks
        are whole); the masks after it become EOS."""
        if self.loop.stop != "eager" or not self.cfg.stop_at_eos:
            return False
        answer = torch.arange(self.bs, device=self.device) + r.block_offset >= 0
        is_eos = torch.isin(r.block, self.eos) & answer
        if not bool(is_eos.any()):
            return False
        first = int(is_eos.int().argmax())
        if bool((r.block[:first] == self.mask_id).any()):
            return False
        after = (torch.arange(self.bs, device=self.device) > first) & (r.block == self.mask_id)
        r.block = torch.where(after, r.block[first], r.block)
        r.creason = torch.where(after, int(CommitReason.EOS_FILL), r.creason).to(torch.int8)
        r.cstep = torch.where(after, r.step - 1, r.cstep)
        return True

    def _finish_block(self, r: BlockRow, exit_by: int) -> list[SequenceResult]:
        """The block is whole: its answer positions join the output; the row ends on an EOS or a full answer,
        else the block is written to the cache before the next step."""
        block = r.block.tolist()
        r.sequence += block
        start = max(0, -r.block_offset)
        room = r.n_tokens - len(r.output)
        answer = block[start:start + room]
        r.output += answer
        r.commit_step += r.cstep[start:start + room].tolist()
        r.commit_reason += r.creason[start:start + room].tolist()
        how = ExitReason(self.policies.exits[exit_by].name) if exit_by >= 0 else ExitReason.ALL_COMMITTED
        eos_at = next((k for k, t in enumerate(r.output) if t in set(self.adapter.eos_token_ids)), None)
        stop = self.cfg.stop_at_eos and eos_at is not None
        r.block_reasons.append(str(ExitReason.EOS if stop else how))
        if stop or len(r.output) >= r.n_tokens:
            if stop:
                del r.output[eos_at + 1:], r.commit_step[eos_at + 1:], r.commit_reason[eos_at + 1:]
            r.done, r.exit_reason = True, ExitReason.EOS if stop else how
            return [to_result(r)]
        r.block = None
        r.pending = [] if self.recompute else block
        return []

    # ----- records -----------------------------------------------------------------------------
    def _record(self, r: BlockRow, i: int, masked: torch.Tensor, sig: StepSignals, reason: torch.Tensor,
                host: dict) -> None:
        if self.cfg.trace == "off":
            return
        step_row = np.array(StepRecord(step=r.step, progress=r.block_step / r.steps_per_block, tau=host["tau"][i],
                                       gbar=host["gbar"][i], n_committed=host["n"][i], exit=float(host["exit"][i]),
                                       refresh=float(r.stored_now > 0), forward_tokens=self.bs + r.stored_now),
                            dtype=np.float32)
        r.step_records.append((step_row, r.block_index - r.first_block))
        if self.cfg.trace == "tokens":
            cols = masked.nonzero().squeeze(-1)
            tok = torch.stack([sig.x0[i, cols].float(), sig.confidence[i, cols], sig.margin[i, cols],
                               sig.entropy[i, cols]], -1)
            r.token_records.append((np.full(len(cols), r.step), (cols + r.block_offset).cpu().numpy(),
                                    tok.cpu().numpy(), reason[cols].cpu().numpy()))

    def _count(self) -> None:
        s, b = self.stats, len(self.rows)
        s["forwards"] += 1
        s["row_steps"] += b
        s["useful_row_steps"] += sum(not r.done for r in self.rows)

    # ----- static loop -------------------------------------------------------------------------
    def generate(self, requests: list[Request], batch_size: int | None = None) -> list[SequenceResult]:
        """Decode in static batches of `batch_size` (finished rows leave, no refill); input order kept."""
        return static_batches(self, requests, batch_size or self.cfg.max_batch_size)
