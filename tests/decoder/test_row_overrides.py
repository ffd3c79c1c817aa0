"""Per-row settings in the engine (decoder/masked/engine.py Request fields): temperature, step budget and
SchED's tau_low per row, and per-sample seeds. Each row decodes the same alone and in a mixed batch, and a
row without overrides decodes exactly as in a batch where no row has any (embedded model, float64)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from embedded.evaluate import load_heldout
from settings.loader import load_config
from decoder.masked.engine import DecodeEngine
from decoder.types import Request
from decoder.scheduler import SlotScheduler
from stages.preprocess import load_tokenizer
from tests.support import EMBEDDED_MODEL
from tests.support.models import embedded_adapter


@pytest.fixture(scope="module")
def setup():
    adapter = embedded_adapter(torch.float64)
    tok = load_tokenizer(str(EMBEDDED_MODEL))
    prompts = [tok(r["prompt"], add_special_tokens=False)["input_ids"] for r in load_heldout(12)]
    cfg = load_config("configs/default.yaml", ["decode.trace=steps", "decode.block_length=8"]).decode
    return adapter, prompts, cfg


def _key(res) -> tuple:
    return res.output_ids, res.steps_taken, res.step_budget, res.exit_reason, res.commit_step


def _mixed(prompts: list) -> list[Request]:
    """Rows without overrides, and rows with each override (temperature, steps, tau_low)."""
    out = []
    for i, p in enumerate(prompts):
        kind = i % 4
        out.append(Request(f"r{i}", p, temperature=1.5 if kind == 1 else None, steps=8 if kind == 2 else None,
                           tau_low_logit=-50.0 if kind == 3 else None))
    return out


def test_rows_decode_alike_alone_in_a_mixed_batch_and_through_slots(setup) -> None:
    adapter, prompts, cfg = setup
    requests = _mixed(prompts)
    alone = {r.id: _key(DecodeEngine(adapter, cfg).generate([r])[0]) for r in requests}
    batched = {res.id: _key(res) for res in DecodeEngine(adapter, cfg).generate(requests, batch_size=12)}
    slotted = {res.id: _key(res) for res in SlotScheduler(DecodeEngine(adapter, cfg), 5, 1 << 20).run(requests)}
    assert batched == alone and slotted == alone
    plain = {res.id: _key(res) for res in DecodeEngine(adapter, cfg).generate(
        [r for r in requests if r.temperature is None and r.steps is None and r.tau_low_logit is None])}
    assert all(batched[k] == v for k, v in plain.items())   # no overrides: token-identical to a plain batch


def test_each_override_takes_effect(setup) -> None:
    adapter, prompts, cfg = setup
    cfg = dataclasses.replace(cfg, sched=dataclasses.replace(cfg.sched, tau_high_logit=1000.0, tau_low_logit=1000.0))
    base = {res.id: res for res in DecodeEngine(adapter, cfg).generate([Request(f"r{i}", p) for i, p in enumerate(prompts)])}
    mixed = {res.id: res for res in DecodeEngine(adapter, cfg).generate(_mixed(prompts))}
    assert all(mixed[f"r{i}"].step_budget == 8 != base[f"r{i}"].step_budget for i in range(2, 12, 4))
    low = range(3, 12, 4)   # job tau 1000 never exits; a row's tau_low -50 makes tau fall below its margin
    assert all(mixed[f"r{i}"].exit_reason == "sched" != base[f"r{i}"].exit_reason for i in low)
    assert all(base[f"r{i}"].exit_reason != "sched" for i in range(12))
    hot = [i for i in range(1, 12, 4)]
    assert any(mixed[f"r{i}"].output_ids != base[f"r{i}"].output_ids for i in hot)    # sampled, not greedy


def test_samples_differ_are_reproducible_and_the_seed_matters(setup) -> None:
    adapter, prompts, cfg = setup
    cfg = dataclasses.replace(cfg, temperature=2.0)

    def samples(seed: int) -> list[list[int]]:
        c = dataclasses.replace(cfg, seed=seed)
        reqs = [Request(f"p{i}\x00{s}", p, seed_key=f"p{i}" if s == 0 else f"p{i}\x00{s}")
                for i, p in enumerate(prompts[:4]) for s in range(3)]
        return [r.output_ids for r in DecodeEngine(adapter, c).generate(reqs, batch_size=5)]

    first, again, other = samples(0), samples(0), samples(1)
    assert first == again
    assert any(len({tuple(x) for x in first[i:i + 3]}) > 1 for i in range(0, 12, 3))   # a prompt's samples differ
    assert first != other


def test_per_row_top_k_and_top_p(setup) -> None:
    """A row's top_k=1 (or a tiny top_p) at temperature > 0 decodes its greedy output whatever the job's
    filters; in a batch with sampled rows each row keeps its own filters, alone or batched."""
    adapter, prompts, cfg = setup
    hot = dataclasses.replace(cfg, temperature=20.0, policy=["none"])
    greedy = [r.output_ids for r in DecodeEngine(adapter, dataclasses.replace(hot, temperature=0.0)).generate(
        [Request(f"g{i}", p) for i, p in enumerate(prompts)])]
    reqs = [Request(f"r{i}", p, top_k=1 if i % 3 == 0 else None, top_p=1e-6 if i % 3 == 1 else None)
            for i, p in enumerate(prompts)]
    batched = {r.id: r.output_ids for r in DecodeEngine(adapter, hot).generate(reqs, batch_size=12)}
    alone = {r.id: DecodeEngine(adapter, hot).generate([r])[0].output_ids for r in reqs}
    assert batched == alone
    assert all(batched[f"r{i}"] == greedy[i] for i in range(12) if i % 3 != 2)        # filtered to the argmax
    assert any(batched[f"r{i}"] != greedy[i] for i in range(2, 12, 3))                 # the others sample
    for alg in ("maskgit_plus", "origin"):   # Dream's sampler too (origin draws after it picks)
        dream = dataclasses.replace(hot, policy=["dream"], dream=dataclasses.replace(hot.dream, alg=alg))
        g = [r.output_ids for r in DecodeEngine(adapter, dataclasses.replace(dream, temperature=0.0)).generate(
            [Request(f"r{i}", p) for i, p in enumerate(prompts)])]
        out = {r.id: r.output_ids for r in DecodeEngine(adapter, dream).generate(reqs, batch_size=12)}
        assert all(out[f"r{i}"] == g[i] for i in range(0, 12, 3))
