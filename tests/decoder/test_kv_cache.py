"""Per-row KV cache (decode.cache = prefix | dual): exact when refreshed every step, exact on a block-causal
reference, cheaper when not, and refused by heads that cannot take it."""
from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from settings.loader import load_config
from decoder.families.base import ModelAdapter
from decoder.masked.engine import DecodeEngine
from decoder.types import Request
from decoder.masked.kv_cache import RowCache, capture, outside, query_batch, stacked
from decoder.scheduler import SlotScheduler
from stages.preprocess import load_tokenizer
from tests.decoder.make_golden import requests
from tests.support import EMBEDDED_MODEL, ROOT
from tests.support.models import tiny_lm
from tests.support.models import embedded_adapter

POLICIES = ["[none]", "[sched]", "[fastdllm,ce]", "[tspd,ce,sched]"]


@pytest.fixture(scope="module")
def embedded():
    adapter = embedded_adapter()
    reqs = requests(load_tokenizer(str(EMBEDDED_MODEL)))[:20]
    # mixed answer lengths: every third row asks for 8 positions (one block of 8)
    reqs = [Request(r.id, r.prompt_ids, 8 if i % 3 == 0 else None) for i, r in enumerate(reqs)]
    return adapter, reqs


def cfg(*overrides):
    return load_config(str(ROOT / "configs/default.yaml"),
                       ["decode.trace=off", "decode.block_length=8", *overrides]).decode


def key(r):
    return r.output_ids, r.steps_taken, r.commit_step, r.exit_reason


@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize("policy", POLICIES)
def test_refresh_every_step_is_exact(embedded, mode, policy):
    """With a refresh at every step the cached engine is the plain engine: same tokens, steps, commits,
    at batch 1, in static batches of 16 and through 6 slots with rows joining and leaving."""
    adapter, reqs = embedded
    base = cfg(f"decode.policy={policy}")
    want = {r.id: key(r) for r in DecodeEngine(adapter, base).generate(reqs, batch_size=16)}
    exact = cfg(f"decode.policy={policy}", f"decode.cache={mode}", "decode.cache_refresh_steps=1")
    for got in (DecodeEngine(adapter, exact).generate(reqs[:6], batch_size=1),
                DecodeEngine(adapter, exact).generate(reqs, batch_size=16),
                list(SlotScheduler(DecodeEngine(adapter, exact), 6, 16384).run(reqs))):
        for r in got:
            assert key(r) == want[r.id], (r.id, mode, policy)
            assert r.refreshes == r.steps_taken


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_block_start_refresh_runs_fewer_tokens(embedded, mode):
    """The Fast-dLLM rule (refresh at each block start): cached steps run only the span, so the forwards
    process fewer tokens; each row refreshes once per block it decodes; trace records both."""
    adapter, reqs = embedded
    c = cfg("decode.policy=[none]", f"decode.cache={mode}", "decode.trace=steps", "decode.stop_at_eos=false")
    eng = DecodeEngine(adapter, c)
    res = eng.generate(reqs, batch_size=16)
    full = DecodeEngine(adapter, cfg("decode.policy=[none]", "decode.stop_at_eos=false")).generate(reqs, batch_size=16)
    assert sum(r.forward_tokens for r in res) < sum(r.forward_tokens for r in full)
    for r in res:
        assert r.refreshes == len(r.output_ids) // 8                 # once per block of 8
        assert r.trace.steps[:, 6].sum() == r.refreshes               # the step trace's refresh column
        assert r.trace.steps[:, 7].sum() == r.forward_tokens
    agree = sum(a.output_ids == b.output_ids for a, b in zip(res, full)) / len(res)
    assert agree >= 0.5, agree   # an approximation, but not noise (the bench reports the exact figure)


@pytest.mark.parametrize("family", ["llama", "dream"])
def test_cached_step_equals_block_causal_forward(family):
    """Rows of different prompt lengths, stacked caches of their prompts, a block each: the cached forward
    equals a full forward under a block-causal mask (prompt sees prompt; block sees prompt + block)."""
    model = tiny_lm(dtype=torch.float64, family="llama" if family == "llama" else "qwen2")
    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randint(4, 64, (n,), generator=gen).tolist() for n in (13, 9, 11)]
    block = 4
    rows, spans = [], []
    for s in seqs:  # cache = a causal-free forward over the prompt alone (what a block-causal model computes)
        p = len(s) - block
        cache = DynamicCache()
        with torch.inference_mode():
            model.model(input_ids=torch.tensor([s[:p]]), attention_mask=torch.ones(1, p, dtype=torch.long),
                        position_ids=torch.arange(p)[None], past_key_values=cache, use_cache=True)
        full = [(torch.cat([k, k.new_zeros(k.shape[0], block, k.shape[2])], 1),
                 torch.cat([v, v.new_zeros(v.shape[0], block, v.shape[2])], 1)) for k, v in capture(cache, [0])[0]]
        rows.append(RowCache(full, 0, 0))
        spans.append((p, len(s)))
    q = query_batch(seqs, spans, 0)
    cache, key_mask = stacked(rows, [outside(sp, len(s)) for sp, s in zip(spans, seqs)])
    with torch.inference_mode():
        h = model.model(input_ids=q.ids, attention_mask=torch.cat([key_mask, q.mask], 1), position_ids=q.positions,
                        past_key_values=cache, use_cache=True).last_hidden_state
        for j, s in enumerate(seqs):
            n, p = len(s), len(s) - block
            allow = torch.ones(n, n, dtype=torch.bool)
            allow[:p, p:] = False
            ref = model.model(input_ids=torch.tensor([s]), attention_mask=allow[None, None],
                              position_ids=torch.arange(n)[None]).last_hidden_state[0, p:]
            assert (h[j, -block:] - ref).abs().max() < 1e-5


def test_dream_family_refresh_every_step_is_exact():
    """Shifted logits (Dream): the span starts one position before the block; exact at refresh every step."""
    model = tiny_lm(seed=3, dtype=torch.float64, family="qwen2")
    adapter = ModelAdapter(model, 1, (2,), 0, 128, True, "dream")
    gen = torch.Generator().manual_seed(2)
    reqs = [Request(f"r{i}", torch.randint(4, 64, (n,), generator=gen).tolist()) for i, n in enumerate((5, 9, 7, 12))]
    base = load_config(None, ["decode.gen_length=8", "decode.block_length=4", "decode.steps=8", "decode.policy=[sched]",
                              "decode.trace=off"]).decode
    want = [key(r) for r in DecodeEngine(adapter, base).generate(reqs)]
    for mode in ("prefix", "dual"):
        base.cache, base.cache_refresh_steps = mode, 1
        assert [key(r) for r in DecodeEngine(adapter, base).generate(reqs)] == want, mode
        base.cache_refresh_steps = 0
        assert len(DecodeEngine(adapter, base).generate(reqs)) == len(reqs)


def test_head_that_cannot_split_refuses_the_cache():
    from transformers import BertConfig, BertForMaskedLM
    model = BertForMaskedLM(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, max_position_embeddings=64)).eval()
    adapter = ModelAdapter(model, 1, (2,), 0, 64, False, "native")
    with pytest.raises(ValueError, match="cannot take a cache"):
        DecodeEngine(adapter, cfg("decode.cache=prefix"))


def test_scheduler_respects_max_cache_mb(embedded):
    adapter, reqs = embedded
    per_row = max(len(r.prompt_ids) + 16 for r in reqs) * DecodeEngine(adapter, cfg()).kv_bytes_per_token
    bound_mb = 4.5 * per_row / 2 ** 20               # room for 4 of the widest rows
    eng = DecodeEngine(adapter, cfg("decode.cache=prefix", f"decode.max_cache_mb={bound_mb}"))
    limit = 4
    sched, widest = SlotScheduler(eng, 16, 16384), 0
    sched.submit(reqs)
    while sched.has_work:
        sched.step()
        widest = max(widest, len(eng.rows))
    assert sched.finished == len(reqs) and widest <= max(limit, 1)
