"""Any positive max_new_tokens: the answer is rounded up to whole blocks inside the engine, the positions past
max_new_tokens are EOS from the start (never committed, invisible to the model, outside SchED's
aggregate), and the output holds at most max_new_tokens tokens. Embedded model, float32, CPU."""
from __future__ import annotations

import pytest
import torch

from settings.loader import load_config
from decoder.masked.engine import DecodeEngine
from decoder.types import Request
from decoder.offline import answer_text
from decoder.types import CommitReason
from stages.preprocess import load_tokenizer
from tests.support import EMBEDDED_MODEL
from tests.support.models import embedded_adapter

PROMPTS = ["copy:abcde=", "rev:hello=", "sort:dcba=", "copy:k="]
LENGTHS = [5, 11, 16, 3]


@pytest.fixture(scope="module")
def model():
    return embedded_adapter(), load_tokenizer(str(EMBEDDED_MODEL))


def ids(tok, prompt):
    return tok(prompt, add_special_tokens=False)["input_ids"]


def cfg(*overrides):
    return load_config(None, ["decode.trace=tokens", *overrides]).decode


def reqs(tok, lengths=LENGTHS):
    return [Request(f"r{i}", ids(tok, p), gen_length=n) for i, (p, n) in enumerate(zip(PROMPTS, lengths))]


@pytest.mark.parametrize("policy", ["none", "sched", "dream", "fastdllm"])
def test_outputs_hold_max_new_tokens_and_the_tail_is_eos_from_the_start(model, policy):
    adapter, tok = model
    eng = DecodeEngine(adapter, cfg(f"decode.policy=[{policy}]"))
    eng.add(reqs(tok))
    eos = adapter.eos_token_ids[0]
    for i, n in enumerate(LENGTHS):                      # before any step: masks, then EOS to the block's end
        row = eng.ids[i, -16:].tolist()
        assert row == [adapter.mask_token_id] * n + [eos] * (16 - n)
        assert eng.attn[i, eng.attn.shape[1] - (16 - n):].sum() == 0   # and the model does not see them
    done = {}
    while eng.rows:
        done.update({r.id: r for r in eng.step()})
    for i, n in enumerate(LENGTHS):
        r = done[f"r{i}"]
        assert len(r.output_ids) == len(r.commit_step) == len(r.commit_reason) == n
        assert adapter.mask_token_id not in r.output_ids
        assert all(s >= 0 for s in r.commit_step)     # every answer token was committed by the decode
        assert all(c != int(CommitReason.NONE) for c in r.commit_reason)
        assert r.step_budget == 16
        assert (r.trace.position < n).all()   # the EOS-fixed positions were never candidates
        text, n_gen = answer_text(tok, r.output_ids, adapter.eos_token_ids)
        first_eos = next((j for j, t in enumerate(r.output_ids) if t in adapter.eos_token_ids), n)
        assert n_gen == first_eos <= n                # generated tokens never count the fixed positions


@pytest.mark.parametrize("policy", ["none", "sched", "dream", "fastdllm"])
def test_a_short_row_decodes_as_a_block_of_its_own_length(model, policy):
    """11 tokens in a 16-position block = an 11-position block: the 5 EOS-fixed positions change nothing
    (not in attention, not in the transfer counts, not in SchED's mean aggregate)."""
    adapter, tok = model
    mean = ["decode.sched.aggregate=mean", "decode.sched.schedule=cosine"]
    short = DecodeEngine(adapter, cfg(f"decode.policy=[{policy}]", *mean)).generate(reqs(tok, [11] * 4))
    exact = DecodeEngine(adapter, cfg(f"decode.policy=[{policy}]", *mean, "decode.gen_length=11",
                                      "decode.block_length=11")).generate(
        [Request(r.id, r.prompt_ids) for r in reqs(tok)])
    for a, b in zip(short, exact):
        assert (a.output_ids, a.steps_taken, a.commit_step, a.exit_reason) == \
               (b.output_ids, b.steps_taken, b.commit_step, b.exit_reason)
        # gbar, tau, ... (the head's matmul shape differs); not forward_tokens: the EOS-fixed tail is computed
        torch.testing.assert_close(torch.as_tensor(a.trace.steps[:, :7]), torch.as_tensor(b.trace.steps[:, :7]),
                                   rtol=1e-5, atol=1e-5, equal_nan=True)


def test_sched_aggregate_is_over_the_real_masked_positions(model):
    """gbar of every step = the mean margin over the positions the token trace shows still masked, all < n."""
    adapter, tok = model
    eng = DecodeEngine(adapter, cfg("decode.policy=[sched]", "decode.sched.aggregate=mean"))
    for r in eng.generate(reqs(tok)):
        t = r.trace
        for row in t.steps:
            step, gbar = int(row[0]), float(row[3])
            at = t.token_step == step
            assert (t.position[at] < len(r.output_ids)).all()
            assert gbar == pytest.approx(float(t.tokens[at, 2].mean()), rel=1e-5)


def test_mixed_lengths_in_one_batch_decode_as_alone(model):
    adapter, tok = model
    for policy in ("none", "dream"):
        c = cfg(f"decode.policy=[{policy}]", "decode.trace=off")
        together = DecodeEngine(adapter, c).generate(reqs(tok), batch_size=4)
        alone = DecodeEngine(adapter, c).generate(reqs(tok), batch_size=1)
        assert [(r.output_ids, r.steps_taken) for r in together] == [(r.output_ids, r.steps_taken) for r in alone]


def test_a_partial_second_block(model):
    """20 tokens in blocks of 16: the second block's schedule spreads its 4 masked positions over its 16
    steps, one per step (LLaDA's even split, remainder first), then the row has nothing left."""
    adapter, tok = model
    eng = DecodeEngine(adapter, cfg("decode.policy=[none]", "decode.gen_length=32", "decode.steps=32",
                                    "decode.stop_at_eos=false"))
    (r,) = eng.generate([Request("x", ids(tok, "copy:abc="), gen_length=20)])
    assert len(r.output_ids) == 20 and r.step_budget == 32
    assert sorted(r.commit_step[16:]) == [16, 17, 18, 19]
    assert (r.steps_taken, r.exit_reason) == (20, "all_committed")
