"""The canvas engine: block diffusion over per-row encoder caches (DiffusionGemma), one batched step at a time.

Rows at different canvases and steps share one decoder forward. Per scheduler step: one grouped encoder pass
for every row that has tokens to encode (new rows' prompts, canvases committed at the last step); the batch
view (stacked caches) is rebuilt only when a row joined, committed or left; then one decoder forward, the
head and the sampler's reductions in chunks of positions under `decode.max_logits_mb`, and per-row decisions:
the sampler (`dgemma`), exit policies on the canvas, commits. A row whose committed canvas holds an EOS, or
whose last canvas ended, leaves at once, so the slot scheduler (decoder/scheduler.py) refills it; the
engine has the interface that scheduler drives (`add`, `step`, `row_config`, `clear`, `rows`, `stats`).
It knows nothing of tokenizers, queues or Ray.
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import torch

from decoder.canvas.rows import CanvasRow, to_result
from decoder.canvas.signals import CanvasSignals, canvas_signals, chunk_positions
from decoder.config import DecodeConfig
from decoder.policies.dgemma import DGemmaPolicy, resolve_settings
from decoder.types import CommitReason, ExitReason, Request, SequenceResult, StepRecord
from decoder.engine import static_batches
from decoder.families.base import CanvasFamily
from decoder.policies.registry import build_policies
from decoder.policies.base import StepContext
from decoder.policies.schedules import progress
from decoder.signals import StepSignals


class CanvasEngine:
    cached = None   # the masked engine's KV-cache option does not apply: every row always has its encoder cache

    def __init__(self, adapter: CanvasFamily, cfg: DecodeConfig, logits_processors: list | None = None) -> None:
        """`logits_processors`: callables (logits [n, V] float32, canvas positions [n]) -> logits, applied
        before the temperature (as generate()'s `logits_processor`)."""
        if cfg.cache != "none":
            raise ValueError(f"decode.cache={cfg.cache!r} does not apply to {adapter.family}: its encoder cache is "
                             "exact and always on; use decode.cache=none")
        if cfg.top_p < 1.0 or cfg.top_k > 0 or cfg.temperature > 0:
            raise ValueError(f"decode.temperature/top_p/top_k do not apply to {adapter.family}: its sampler has its "
                             "own temperature schedule (decode.dgemma.t_min / t_max)")
        self.adapter, self.cfg = adapter, cfg
        self.policies = build_policies(cfg, family=adapter.family)
        if not isinstance(self.policies.commit, DGemmaPolicy):
            raise ValueError(f"{adapter.family} needs the dgemma commit policy")
        self.sampler = self.policies.commit
        self.sampler.settings = self.settings = resolve_settings(cfg, adapter.sampling)
        self.processors = list(logits_processors or [])
        self.device, self.c = adapter.device, adapter.canvas_length
        self.eos = set(adapter.eos_token_ids)
        self.rows: list[CanvasRow] = []
        self.view = None
        self.pos_spec = {}
        for pol in self.policies.exits:
            self.pos_spec.update(getattr(pol, "position_state", {}))
        self.fresh_pos = {k: torch.full((self.c, *shape), fill, dtype=dt, device=self.device)
                          for k, (dt, fill, shape) in self.pos_spec.items()}
        self.needs_margin = bool(self.policies.exits) or cfg.trace == "tokens"
        self.stats = {"forwards": 0, "row_steps": 0, "useful_row_steps": 0, "tokens": 0, "pad_tokens": 0,
                      "encoder_passes": 0, "encoder_rows": 0, "encoder_tokens": 0, "peak_temporaries_bytes": 0}

    # ----- admission ---------------------------------------------------------------------------
    def row_config(self, request: Request) -> tuple[int, int, int]:
        """(answer tokens, canvases, steps per canvas) of a request; ValueError for what this family refuses."""
        if request.temperature is not None:
            raise ValueError("a per-row temperature does not apply to DiffusionGemma (its schedule is "
                             "decode.dgemma.t_min / t_max)")
        if request.top_p is not None or request.top_k is not None:
            raise ValueError("per-row top_p / top_k do not apply to DiffusionGemma (its sampler has no filters)")
        images = self.adapter.image_token_ids.intersection(request.prompt_ids)
        if images:
            raise ValueError(f"prompt holds image tokens {sorted(images)}: DiffusionGemma decoding here is text only")
        n = request.gen_length or self.cfg.gen_length
        canvases = math.ceil(n / self.c)
        per_canvas = self.settings.max_denoising_steps
        if request.steps is not None:
            if request.steps <= 0 or request.steps % canvases:
                raise ValueError(f"steps {request.steps} must be a positive multiple of the row's {canvases} canvas(es)")
            per_canvas = request.steps // canvases
        if len(request.prompt_ids) + canvases * self.c > self.adapter.context_length:
            raise ValueError(f"prompt ({len(request.prompt_ids)} tokens) + {canvases} canvas(es) of {self.c} exceed "
                             f"the model context ({self.adapter.context_length})")
        return n, canvases, per_canvas

    def temperature(self, request: Request) -> None:
        return None   # no single temperature: the schedule runs from t_max to t_min over each canvas

    def filters(self, request: Request) -> tuple[None, None]:
        return None, None   # no top-p / top-k: generate()'s sampler has none

    def add(self, requests: list[Request]) -> None:
        configs = [self.row_config(r) for r in requests]
        for req, (n, canvases, per_canvas) in zip(requests, configs):
            gen = None
            if self.settings.rng == "per_row":
                gen = torch.Generator(device=self.device).manual_seed(
                    zlib.crc32(f"{self.cfg.seed}:{req.seed_key or req.id}".encode()))
            row = CanvasRow(req, n, canvases, per_canvas, gen, self.adapter.new_cache(), self.c,
                            pending=list(req.prompt_ids))
            row.reset_canvas(self.settings.stability_threshold_steps, self.fresh_pos)
            self.rows.append(row)
        self.view = None if requests else self.view

    def clear(self) -> None:
        self.rows, self.view = [], None

    @property
    def num_active(self) -> int:
        return sum(not r.done for r in self.rows)

    @property
    def kv_bytes_per_token(self) -> int:
        return self.adapter.kv_bytes_per_token()

    # ----- one step ----------------------------------------------------------------------------
    def step(self) -> list[SequenceResult]:
        if not self.rows:
            return []
        self._encode_pending()
        if self.view is None:
            self.view = self.adapter.batch_view([r.cache for r in self.rows])
        rows = self.rows
        for r in rows:
            if r.canvas is None:
                r.canvas = self._noise(r)
        canvas = torch.stack([r.canvas for r in rows])
        soft = torch.stack([r.soft if r.soft is not None else
                            torch.zeros(self.c, self.adapter.hidden_size, dtype=self.adapter.dtype, device=self.device)
                            for r in rows])
        hidden = self.adapter.decoder_hidden(self.view, canvas, soft)
        cstep = torch.tensor([r.canvas_step for r in rows], device=self.device)
        temps = self.sampler.temperatures(cstep)
        sig = canvas_signals(self.adapter, hidden, temps, self._generators(), self.processors, self.needs_margin,
                             chunk_positions(self.adapter.vocab_size, self.cfg.max_logits_mb, self.adapter.dtype))
        self.stats["peak_temporaries_bytes"] = max(self.stats["peak_temporaries_bytes"], sig.temporaries_bytes)
        noise = torch.stack([self._noise(r) for r in rows]) if self.settings.rng == "per_row" else \
            torch.randint(0, self.adapter.vocab_size, (len(rows), self.c), device=self.device)
        history = torch.stack([r.history for r in rows])
        last = torch.tensor([r.canvas_step + 1 >= r.steps_per_canvas for r in rows], device=self.device)
        dec = self.sampler.decide(sig.sample, sig.argmax, sig.entropy, noise, history, last)
        exit_now, exit_by, tau, gbar = self._exits(sig, cstep)
        self._count()
        return self._apply(sig, dec, exit_now, exit_by, tau, gbar)

    def _noise(self, r: CanvasRow) -> torch.Tensor:
        """[C] uniform tokens from the row's generator, or the global RNG (a new canvas in global mode)."""
        return torch.randint(0, self.adapter.vocab_size, (self.c,), device=self.device, generator=r.generator)

    def _generators(self) -> list | None:
        return None if self.settings.rng == "global" else [r.generator for r in self.rows]

    def _encode_pending(self) -> None:
        """One encoder pass for every row with tokens to encode (prompts and committed canvases)."""
        todo = [r for r in self.rows if r.pending]
        if not todo:
            return
        self.adapter.encode([r.cache for r in todo], [r.pending for r in todo])
        s = self.stats
        s["encoder_passes"] += 1
        s["encoder_rows"] += len(todo)
        for r in todo:
            s["encoder_tokens"] += len(r.pending)
            r.forward_tokens += len(r.pending)
            r.encoder_passes += 1
            r.encoded_now, r.pending = len(r.pending), []
        self.view = None

    def _exits(self, sig: CanvasSignals, cstep: torch.Tensor):
        """Exit policies over the whole canvas (every position is undecided until the canvas commits), with
        the raw (softcapped, pre-temperature) logit margin: SchED's thresholds keep their logit units."""
        b = len(self.rows)
        nan = torch.full((b,), float("nan"), device=self.device)
        exit_now, exit_by, tau, gbar = torch.zeros(b, dtype=torch.bool, device=self.device), [-1] * b, nan, nan
        if not self.policies.exits:
            return exit_now, exit_by, tau, gbar
        budget = torch.tensor([r.steps_per_canvas for r in self.rows], device=self.device)
        ones = torch.ones(b, self.c, dtype=torch.bool, device=self.device)
        signals = StepSignals(sig.argmax, sig.confidence, sig.margin, sig.entropy, argmax=sig.argmax)
        pos = {k: torch.stack([r.pos[k] for r in self.rows]) for k in self.pos_spec}
        tau_low = [r.request.tau_low_logit for r in self.rows]
        ctx = StepContext(signals, sig.confidence, ones, ones, torch.zeros(b, dtype=torch.long, device=self.device),
                          progress(cstep, budget, self.cfg.sched.progress_mode), pos=pos,
                          tau_low_logit=None if all(v is None for v in tau_low) else torch.tensor(
                              [float("nan") if v is None else v for v in tau_low], device=self.device),
                          rows=self.rows)
        for j, pol in enumerate(self.policies.exits):
            d = pol.should_exit(ctx)
            exit_by = [j if (e and by < 0) else by for e, by in zip(d.exit.tolist(), exit_by)]
            exit_now = exit_now | d.exit
            tau, gbar = (d.tau, d.gbar) if j == 0 else (tau, gbar)
        for i, r in enumerate(self.rows):
            for k in self.pos_spec:
                r.pos[k] = pos[k][i]
        return exit_now, exit_by, tau, gbar

    def _apply(self, sig, dec, exit_now, exit_by, tau, gbar) -> list[SequenceResult]:
        """Per row, from one device-to-host copy of the step's decisions: traces, commits or the next canvas."""
        host = {k: v.tolist() for k, v in dict(done=dec.done, stopped=dec.stopped, exit=exit_now,
                                                 acc=dec.accepted.sum(-1), ent=dec.entropy_mean, tau=tau,
                                                 gbar=gbar).items()}
        host["argmax"] = sig.argmax.cpu()
        if self.cfg.trace == "tokens":
            host["tokens"] = torch.stack([sig.argmax.float(), sig.confidence, sig.margin, sig.entropy], -1).cpu()
            host["accepted"] = dec.accepted.cpu()
        finished = []
        for i, r in enumerate(self.rows):
            ends = host["done"][i] or host["exit"][i]
            by_exit = host["exit"][i] and not host["stopped"][i]
            am = host["argmax"][i]
            r.settled = torch.where(am != r.last_argmax, r.step, r.settled) if r.last_argmax is not None \
                else torch.full_like(am, r.step)
            r.last_argmax = am
            reason = CommitReason.EXIT_FILL if by_exit else CommitReason.CANVAS
            self._record(r, i, host, ends, by_exit, int(reason))
            r.forward_tokens, r.encoded_now = r.forward_tokens + self.c, 0
            r.step += 1
            if ends:
                finished += self._commit(r, i, host, by_exit, exit_by[i], int(reason))
            else:
                r.canvas, r.soft, r.history = dec.next_canvas[i], sig.soft[i], dec.history[i]
                r.canvas_step += 1
        if finished:
            self.rows = [r for r in self.rows if not r.done]
            self.view = None
        return finished

    def _commit(self, r: CanvasRow, i: int, host, by_exit: bool, by: int, reason: int) -> list[SequenceResult]:
        """The canvas ends: its argmax is committed; the row leaves on an EOS or its last canvas."""
        tokens = host["argmax"][i].tolist()
        r.output += tokens
        r.commit_step += [r.step - 1] * self.c
        r.commit_reason += [reason] * self.c
        r.canvas_settled.append(r.settled.numpy().copy())
        how = (ExitReason(self.policies.exits[by].name) if by_exit
               else ExitReason.DGEMMA if host["stopped"][i] else ExitReason.STEPS)
        eos = bool(self.eos.intersection(tokens))
        if eos or r.canvas_index + 1 >= r.canvases:
            r.done = True
            r.exit_reason = ExitReason.EOS if eos else how
            return [to_result(r, self.eos, self.adapter.pad_token_id)]
        r.canvas_index += 1
        r.pending = tokens
        r.reset_canvas(self.settings.stability_threshold_steps, self.fresh_pos)
        return []

    def _record(self, r: CanvasRow, i: int, host: dict, ends: bool, by_exit: bool, reason: int) -> None:
        if self.cfg.trace == "off":
            return
        p = r.canvas_step / r.steps_per_canvas
        step_row = np.array(StepRecord(step=r.step, progress=p, tau=host["tau"][i], gbar=host["gbar"][i],
                                       n_committed=self.c if ends else 0, exit=float(by_exit),
                                       refresh=float(r.encoded_now > 0), forward_tokens=self.c + r.encoded_now),
                            dtype=np.float32)
        r.step_records.append((step_row, {"canvas": r.canvas_index, "accepted": host["acc"][i],
                                          "entropy_mean": host["ent"][i]}))
        if self.cfg.trace == "tokens":
            reasons = np.full(self.c, reason if ends else 0, dtype=np.int8)
            r.token_records.append((r.step, r.canvas_index, host["tokens"][i].numpy(), reasons,
                                    host["accepted"][i].numpy()))

    def _count(self) -> None:
        s, b = self.stats, len(self.rows)
        s["forwards"] += 1
        s["row_steps"] += b
        s["useful_row_steps"] += sum(not r.done for r in self.rows)
        s["tokens"] += b * self.c

    # ----- static loop -------------------------------------------------------------------------
    def generate(self, requests: list[Request], batch_size: int | None = None) -> list[SequenceResult]:
        """Decode in static batches of `batch_size` (finished rows leave, no refill); input order kept."""
        return static_batches(self, requests, batch_size or self.cfg.max_batch_size)
