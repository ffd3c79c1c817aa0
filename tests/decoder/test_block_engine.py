"""The block engine on tiny random checkpoints of the block-diffusion families (SDAR and Fast-dLLM v2 layouts
built here; LLaDA2's, the reference's own, from tests/decoder/parity/block, decoded in blocks of 4): the exact
cache decodes as recomputing everything, rows decode the same alone, in a static batch and through the slot
scheduler with rows joining, each family's stop rule, and exit policies inside a block."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from decoder.build import load_model, make_engine
from decoder.config import DecodeConfig
from decoder.scheduler import SlotScheduler
from decoder.types import CommitReason, ExitReason, Request
from stages.write.trace_tables import step_table, token_table
from tests.support.tiny_block import save_fast_dllm_v2, save_sdar

SAVERS = {"sdar": save_sdar, "fast_dllm_v2": save_fast_dllm_v2}
LLADA2 = Path(__file__).parent / "parity" / "block" / "tiny_llada2"
PROMPTS = {"a": [5, 6, 7], "b": [8, 9, 10, 11], "c": [12, 13, 14, 15, 16, 17], "d": [3, 4, 5, 6, 7, 8, 9, 10, 11],
           "e": [20, 21]}   # lengths 3, 4, 6, 8+1, 2 (block 4: unaligned and aligned)


@pytest.fixture(scope="module", params=[*sorted(SAVERS), "llada2"])
def adapter(request, tmp_path_factory):
    torch.set_num_threads(1)
    if request.param == "llada2":
        return dataclasses.replace(load_model(str(LLADA2)), block_length=4)
    path = SAVERS[request.param](str(tmp_path_factory.mktemp(request.param)), seed=3)
    return load_model(path)


def _requests(**overrides) -> list[Request]:
    return [Request(k, list(v), **overrides) for k, v in PROMPTS.items()]


def _cfg(**kw) -> DecodeConfig:
    cfg = DecodeConfig(gen_length=kw.pop("gen_length", 11), policy=kw.pop("policy", []), trace=kw.pop("trace", "tokens"),
                       stop_at_eos=kw.pop("stop_at_eos", False), **{k: v for k, v in kw.items() if k != "block"})
    for k, v in kw.get("block", {}).items():
        setattr(cfg.block, k, v)
    return cfg


def _decode(adapter, cfg, requests=None, batch=8):
    return {r.id: r for r in make_engine(adapter, cfg).generate(requests or _requests(), batch)}


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_the_exact_cache_decodes_as_recomputing_everything(adapter, temperature):
    cached = _decode(adapter, _cfg(temperature=temperature))
    recomputed = _decode(adapter, _cfg(temperature=temperature, block={"recompute": True}))
    for rid, r in cached.items():
        assert r.output_ids == recomputed[rid].output_ids, rid
        assert r.commit_step == recomputed[rid].commit_step and r.steps_taken == recomputed[rid].steps_taken
        assert len(r.output_ids) == 11 and adapter.mask_token_id not in r.output_ids
    # the cache wrote row d's two whole prompt blocks in one pass, then each finished block but the last
    blocks = -(-(9 + 11) // adapter.block_length) - 9 // adapter.block_length
    assert cached["d"].encoder_passes == 1 + blocks - 1


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_alone_static_batch_and_slot_scheduler_agree(adapter, temperature):
    cfg = _cfg(temperature=temperature, top_k=20 if temperature else 0)
    alone = {r.id: _decode(adapter, cfg, [r], 1)[r.id] for r in _requests()}
    static = _decode(adapter, cfg, batch=5)
    engine = make_engine(adapter, cfg)
    rows = {r.id: r for r in SlotScheduler(engine, 2, 10_000).run(_requests())}   # rows join as others leave
    for rid, r in alone.items():
        for other in (static[rid], rows[rid]):
            assert other.output_ids == r.output_ids, rid
            assert other.commit_step == r.commit_step and other.commit_reason == r.commit_reason, rid
            assert np.array_equal(other.trace.steps, r.trace.steps, equal_nan=True), rid


def test_rows_of_different_lengths_join_a_running_batch(adapter):
    """A row admitted while others are mid-block has its own blocks, positions and cache length."""
    cfg = _cfg()
    alone = {r.id: _decode(adapter, cfg, [r], 1)[r.id].output_ids for r in _requests()}
    engine, done = make_engine(adapter, cfg), {}
    reqs = _requests()
    engine.add(reqs[:2])
    for _ in range(3):
        done.update({r.id: r.output_ids for r in engine.step()})
    engine.add(reqs[2:])
    while engine.rows:
        done.update({r.id: r.output_ids for r in engine.step()})
    assert done == alone


def test_stop_rule_ends_the_row_at_its_eos(adapter):
    free = _decode(adapter, _cfg())
    out = free["c"].output_ids
    eos = out[5]                  # a token the row decodes mid-answer, made its EOS
    first = out.index(eos)
    stopping = dataclasses.replace(adapter, eos_token_ids=(eos,))
    r = _decode(stopping, _cfg(stop_at_eos=True), [Request("c", PROMPTS["c"])])["c"]
    assert r.exit_reason == ExitReason.EOS
    assert r.output_ids == out[:first + 1]
    if adapter.loop.stop == "block":   # the rest of the EOS's block was decoded, not the blocks after it
        assert r.steps_taken <= free["c"].steps_taken
    else:                              # eager: it ends at the step that committed the EOS
        assert r.steps_taken == max(s for s in r.commit_step if s >= 0) + 1


def test_an_exit_policy_closes_a_block_early_and_decoding_goes_on(adapter):
    """SchED over the block's masked positions, progress within the block: a low threshold exits each block at
    its first step; the block's masks are filled, its cache written, and the next block decoded."""
    full = _decode(adapter, _cfg())
    cfg = _cfg(policy=["sched"], exit_fill="argmax")
    cfg.sched.tau_high_logit = cfg.sched.tau_low_logit = -1.0
    early = _decode(adapter, cfg)
    r, f = early["d"], full["d"]
    assert r.exit_reason == ExitReason.SCHED and len(r.output_ids) == len(f.output_ids)
    assert r.steps_taken == r.encoder_passes == -(-(9 + 11) // adapter.block_length) - 9 // adapter.block_length
    assert r.steps_taken < f.steps_taken
    assert CommitReason.EXIT_FILL in r.commit_reason
    steps = step_table([r.id], [r.trace], [r.exit_reason]).to_pylist()
    assert [s["block"] for s in steps] == list(range(len(steps))) and all(s["exit"] for s in steps)
    tokens = token_table([r.id], [r.trace])
    assert tokens.num_rows == sum(1 for s in r.commit_step if s >= 0) - r.commit_reason.count(CommitReason.AUTOREGRESSIVE)


def test_refused_settings_and_rows(adapter):
    with pytest.raises(ValueError, match="block cache is exact"):
        make_engine(adapter, _cfg(cache="prefix"))
    engine = make_engine(adapter, _cfg())
    with pytest.raises(ValueError, match="multiple of the row"):
        engine.row_config(Request("x", [1, 2, 3], steps=7))
    with pytest.raises(ValueError, match="exceed the model context"):
        engine.row_config(Request("x", [1] * 510, gen_length=8))
    from decoder.policies.registry import build_policies
    with pytest.raises(ValueError, match="cannot run on a block-diffusion family"):
        build_policies(_cfg(policy=["fastdllm"]), family=adapter.family)


def test_token_editing_is_batch_invariant_and_exact_under_the_cache(adapter):
    """LLaDA2.1's editing (post-steps that replace decided tokens) keeps a row's output independent of its batch
    and of the cache; edits are recorded as such."""
    if adapter.family != "llada2":
        pytest.skip("token editing is LLaDA2.1's loop")
    block = {"editing_threshold_prob": 0.5, "max_post_steps": 3, "threshold_prob": 0.7}
    cfg = _cfg(temperature=0.8, block=block)
    alone = {r.id: _decode(adapter, cfg, [r], 1)[r.id] for r in _requests()}
    rows = {r.id: r for r in SlotScheduler(make_engine(adapter, cfg), 2, 10_000).run(_requests())}
    recomputed = _decode(adapter, _cfg(temperature=0.8, block={**block, "recompute": True}))
    for rid, r in alone.items():
        assert rows[rid].output_ids == r.output_ids == recomputed[rid].output_ids, rid
        assert rows[rid].commit_reason == r.commit_reason
    assert any(CommitReason.EDIT in r.commit_reason for r in alone.values())


def test_max_cache_mb_bounds_the_rows_admitted(adapter):
    """decode.max_cache_mb bounds the slots' caches: with room for about two rows' K/V, no forward holds more."""
    engine = make_engine(adapter, _cfg())
    per_row = (len(PROMPTS["d"]) + 11) * engine.kv_bytes_per_token
    engine.cfg.max_cache_mb = 2.5 * per_row / 2 ** 20
    seen = []
    sched = SlotScheduler(engine, 8, 10_000, before_step=lambda ids: seen.append(len(ids)))
    out = {r.id: r.output_ids for r in sched.run(_requests())}
    assert max(seen) == 2 and out == {k: v.output_ids for k, v in _decode(adapter, _cfg()).items()}


def test_lockstep_static_batches_keep_finished_rows_and_decode_the_same(adapter):
    """`keep_finished_in_batch` (the benchmarks' lockstep static batching): finished rows stay in every forward
    until the batch is done, and every row decodes what it decodes alone."""
    reqs = [Request(k, v, gen_length=n) for (k, v), n in zip(PROMPTS.items(), (3, 11, 7, 11, 5))]
    engine = make_engine(adapter, _cfg(), keep_finished_in_batch=True)
    sizes, done = [], {}
    engine.add(reqs)
    while engine.rows:
        sizes.append(len(engine.rows))
        done.update({r.id: r.output_ids for r in engine.step()})
    assert set(sizes) == {5} and engine.stats["useful_row_steps"] < engine.stats["row_steps"]
    assert done == {r.id: r.output_ids for r in make_engine(adapter, _cfg()).generate(reqs, 5)}
