"""DecodeEngine on CPU: scripted-logits fakes for the step logic (schedule, exits, EOS, compaction) and a
tiny random bidirectional Llama for batch invariance."""
from __future__ import annotations

from collections import Counter

import pytest
import torch

from decoder.config import DecodeConfig, SchedConfig
from decoder.masked.engine import DecodeEngine
from decoder.types import CommitReason, Request
from decoder.transfer import num_transfer_tokens
from tests.support.models import EOS, MASK, peaked, scripted_adapter, tiny_llama_adapter

A, B = 40, 41        # prompt tags (first prompt token) of scripted rows


def plain(tag: int, answer: torch.Tensor) -> torch.Tensor:
    """Position j predicts 10 + j; confidence falls with j, so low_confidence commits left to right."""
    g = len(answer)
    return peaked([10 + j for j in range(g)], [6.0 - 0.1 * j for j in range(g)], 1.0)


# ---------------------------------------------------------------- (1) fixed-step baseline


def test_policy_none_commits_per_transfer_schedule() -> None:
    cfg = DecodeConfig(gen_length=8, block_length=4, steps=6, policy=["none"])   # 2 blocks x 3 steps
    adapter = scripted_adapter(plain, {A: 3, B: 5})
    reqs = [Request("a", [A, 50, 51]), Request("b", [B, 52, 53, 54, 55])]
    results = DecodeEngine(adapter, cfg).generate(reqs)
    plan = num_transfer_tokens(4, 3) * 2                                         # [2, 1, 1, 2, 1, 1]
    for res in results:
        assert len(res.output_ids) == 8 and MASK not in res.output_ids
        assert res.output_ids == [10 + j for j in range(8)]
        assert res.steps_taken == res.step_budget == 6 and res.exit_reason == "steps"
        assert Counter(res.commit_step) == {i: k for i, k in enumerate(plan)}
        assert res.commit_step == [0, 0, 1, 2, 3, 3, 4, 5]
        assert set(res.commit_reason) == {int(CommitReason.SCHEDULE)}


# ---------------------------------------------------------------- (2) SchED exit per row


def confident_after_two(tag: int, answer: torch.Tensor) -> torch.Tensor:
    """Row A turns confident (margin 20, new argmax 20 + j) once two positions are committed; B never does."""
    g = len(answer)
    if tag == A and int((answer == MASK).sum()) <= g - 2:
        return peaked([20 + j for j in range(g)], [30.0 - 0.1 * j for j in range(g)], 20.0)
    return peaked([10 + j for j in range(g)], [6.0 - 0.1 * j for j in range(g)], 0.5)


def test_sched_exits_confident_row_only() -> None:
    cfg = DecodeConfig(gen_length=8, block_length=8, steps=8, policy=["sched"])  # cosine 7.5 -> 2.5
    adapter = scripted_adapter(confident_after_two, {A: 2, B: 2})
    res_a, res_b = DecodeEngine(adapter, cfg).generate([Request("a", [A, 50]), Request("b", [B, 50])])
    # A: tau(2/8) = 6.77 <= g-bar 20 at its third step, exits with that step's logits.
    assert res_a.exit_reason == "sched" and res_a.steps_taken == 3 and res_a.step_budget == 8
    assert res_a.output_ids == [10, 11] + [20 + j for j in range(2, 8)]
    assert res_a.commit_step == [0, 1] + [2] * 6
    schedule, fill = int(CommitReason.SCHEDULE), int(CommitReason.EXIT_FILL)
    assert res_a.commit_reason == [schedule] * 3 + [fill] * 5
    # B: g-bar 0.5 never reaches tau >= 2.5.
    assert res_b.exit_reason == "steps" and res_b.steps_taken == 8
    assert res_b.output_ids == [10 + j for j in range(8)]
    assert set(res_b.commit_reason) == {schedule}


# ---------------------------------------------------------------- (3) EOS stop


def eos_at_3(tag: int, answer: torch.Tensor) -> torch.Tensor:
    """EOS at answer position 3 is the most confident; 0..2 next; 4..7 least."""
    g = len(answer)
    tokens = [EOS if j == 3 else 10 + j for j in range(g)]
    top = [20.0 if j == 3 else (10.0 - j if j < 3 else 2.0 - 0.1 * j) for j in range(g)]
    return peaked(tokens, top, 1.0)


def test_eos_stops_row_and_fills_with_eos() -> None:
    cfg = DecodeConfig(gen_length=8, block_length=8, steps=8, policy=["none"])
    res = DecodeEngine(scripted_adapter(eos_at_3, {A: 2}), cfg).generate([Request("a", [A, 50])])[0]
    # step 0 commits the EOS, steps 1-3 the positions before it, then the row stops.
    assert res.exit_reason == "eos" and res.steps_taken == 4 < res.step_budget
    assert res.output_ids == [10, 11, 12, EOS, EOS, EOS, EOS, EOS]
    assert res.commit_step == [1, 2, 3, 0, 3, 3, 3, 3]
    assert res.commit_reason[4:] == [int(CommitReason.EOS_FILL)] * 4
    assert res.commit_reason[:4] == [int(CommitReason.SCHEDULE)] * 4


def test_eos_ignored_without_stop_at_eos() -> None:
    cfg = DecodeConfig(gen_length=8, block_length=8, steps=8, policy=["none"], stop_at_eos=False)
    res = DecodeEngine(scripted_adapter(eos_at_3, {A: 2}), cfg).generate([Request("a", [A, 50])])[0]
    assert res.exit_reason == "steps" and res.steps_taken == 8
    assert res.output_ids == [10, 11, 12, EOS, 14, 15, 16, 17]
    assert int(CommitReason.EOS_FILL) not in res.commit_reason


# ---------------------------------------------------------------- (4) batch invariance, tiny Llama


PROMPTS = {"short": [5, 6], "target": [7, 8, 9, 10, 11], "long": [12, 13, 14, 15, 16, 17, 18, 19, 20]}


@pytest.fixture(scope="module")
def llama():
    # float64 so that a different batch shape (padding, row count) cannot flip an argmax through rounding:
    # the comparison below is exact.
    return tiny_llama_adapter(seed=0, dtype=torch.float64)


@pytest.mark.parametrize("policy", ["none", "sched", "fastdllm"])
def test_greedy_alone_equals_padded_batch(llama, policy: str) -> None:
    cfg = DecodeConfig(gen_length=16, block_length=8, steps=8, policy=[policy])
    alone = DecodeEngine(llama, cfg).generate([Request("target", PROMPTS["target"])])[0]
    batch = DecodeEngine(llama, cfg).generate([Request(k, v) for k, v in PROMPTS.items()])
    got = batch[1]
    assert got.id == "target"
    assert (got.output_ids, got.commit_step, got.steps_taken, got.exit_reason) == \
           (alone.output_ids, alone.commit_step, alone.steps_taken, alone.exit_reason)


def test_greedy_invariance_with_mixed_gen_lengths(llama) -> None:
    cfg = DecodeConfig(gen_length=16, block_length=8, steps=8, policy=["sched"])
    reqs = [Request("short", PROMPTS["short"], gen_length=8), Request("target", PROMPTS["target"]),
            Request("long", PROMPTS["long"], gen_length=24)]
    batch = DecodeEngine(llama, cfg).generate(reqs)
    for req, got in zip(reqs, batch):
        alone = DecodeEngine(llama, cfg).generate([req])[0]
        assert len(got.output_ids) == (req.gen_length or 16)
        assert got.step_budget == 4 * len(got.output_ids) // 8
        assert (got.output_ids, got.commit_step, got.steps_taken) == \
               (alone.output_ids, alone.commit_step, alone.steps_taken), req.id


# ---------------------------------------------------------------- (5) compaction


def test_compaction_shrinks_batch_when_a_row_finishes() -> None:
    cfg = DecodeConfig(gen_length=8, block_length=8, steps=8, policy=["sched"])
    adapter = scripted_adapter(confident_after_two, {A: 2, B: 4})
    eng = DecodeEngine(adapter, cfg)
    eng.add([Request("a", [A, 50]), Request("b", [B, 50, 51, 52])])
    assert eng.ids.shape == (2, 12)
    finished = [eng.step() for _ in range(3)]
    assert [len(f) for f in finished] == [0, 0, 1] and finished[2][0].id == "a"
    assert eng.ids.shape == (1, 12) and eng.num_active == 1
    while eng.rows:
        eng.step()
    assert [s[0] for s in adapter.model.batch_shapes] == [2, 2, 2, 1, 1, 1, 1, 1]
    assert eng.stats["forwards"] == 8 and eng.stats["row_steps"] == 11 and eng.stats["useful_row_steps"] == 11


def test_compaction_trims_padding_of_a_finished_long_row() -> None:
    cfg = DecodeConfig(gen_length=8, block_length=8, steps=8, policy=["sched"])
    adapter = scripted_adapter(confident_after_two, {A: 6, B: 2})
    eng = DecodeEngine(adapter, cfg)
    eng.add([Request("a", [A, 50, 51, 52, 53, 54]), Request("b", [B, 50])])
    for _ in range(3):
        eng.step()
    assert eng.ids.shape == (1, 10)        # the remaining row needs only 2 + 8 columns
    assert eng.attn.all()


def test_keep_finished_in_batch_keeps_the_row() -> None:
    cfg = DecodeConfig(gen_length=8, block_length=8, steps=8, policy=["sched"])
    adapter = scripted_adapter(confident_after_two, {A: 2, B: 2})
    eng = DecodeEngine(adapter, cfg, keep_finished_in_batch=True)
    results = eng.generate([Request("a", [A, 50]), Request("b", [B, 50])])
    assert [s[0] for s in adapter.model.batch_shapes] == [2] * 8
    assert eng.stats["row_steps"] == 16 and eng.stats["useful_row_steps"] == 11
    assert [r.steps_taken for r in results] == [3, 8]
    compact = DecodeEngine(scripted_adapter(confident_after_two, {A: 2, B: 2}), cfg).generate(
        [Request("a", [A, 50]), Request("b", [B, 50])])
    assert [(r.output_ids, r.commit_step) for r in results] == [(r.output_ids, r.commit_step) for r in compact]


# ---------------------------------------------------------------- (6) admission errors


def test_add_rejects_bad_gen_length() -> None:
    eng = DecodeEngine(scripted_adapter(plain, {A: 2}), DecodeConfig(gen_length=8, block_length=4, steps=4))
    for bad in (0, -4):
        with pytest.raises(ValueError, match="must be positive"):
            eng.add([Request("x", [A, 50], gen_length=bad)])
    assert eng.rows == []


def test_add_rejects_over_long_prompt_and_admits_none() -> None:
    eng = DecodeEngine(scripted_adapter(plain, {A: 2}, context_length=16),
                       DecodeConfig(gen_length=8, block_length=8, steps=8))
    with pytest.raises(ValueError, match="exceed the model context"):
        eng.add([Request("ok", [A, 50]), Request("long", [A] + [50] * 9)])
    assert eng.rows == [] and eng.ids.numel() == 0
    eng.add([Request("fits", [A] + [50] * 7)])     # 8 + 8 == 16 is allowed
    assert len(eng.rows) == 1


# ---------------------------------------------------------------- (7) sampling


def test_temperature_same_seed_alone_equals_batch(llama) -> None:
    cfg = DecodeConfig(gen_length=16, block_length=8, steps=8, temperature=1.0, seed=7, policy=["none"])
    alone = DecodeEngine(llama, cfg).generate([Request("target", PROMPTS["target"])])[0]
    again = DecodeEngine(llama, cfg).generate([Request("target", PROMPTS["target"])])[0]
    batch = DecodeEngine(llama, cfg).generate([Request(k, v) for k, v in PROMPTS.items()])[1]
    assert alone.output_ids == again.output_ids == batch.output_ids
    assert alone.commit_step == batch.commit_step
    greedy = DecodeEngine(llama, DecodeConfig(gen_length=16, block_length=8, steps=8, policy=["none"]))
    other_seed = DecodeEngine(llama, DecodeConfig(gen_length=16, block_length=8, steps=8, temperature=1.0,
                                                  seed=8, policy=["none"]))
    req = [Request("target", PROMPTS["target"])]
    # the noise matters: another seed, or no noise, decodes something else
    assert alone.output_ids != other_seed.generate(req)[0].output_ids
    assert alone.output_ids != greedy.generate(req)[0].output_ids


@pytest.mark.parametrize("sampling", [{"temperature": 1.0}, {"remasking": "random"}],
                         ids=["gumbel", "random_remasking"])
def test_sampling_invariance_with_mixed_gen_lengths(llama, sampling: dict) -> None:
    """A row's noise must not depend on the batch's answer window (max gen_length of the batch).

    Fails today: signals.gumbel_argmax and DecodeEngine._score draw [Gmax, ...] noise per row, so the
    numbers that land on a row's G_r positions change with the other rows' gen_length."""
    cfg = DecodeConfig(gen_length=8, block_length=8, steps=8, policy=["none"], stop_at_eos=False, **sampling)
    short = Request("short", PROMPTS["short"], gen_length=8)
    alone = DecodeEngine(llama, cfg).generate([short])[0]
    batch = DecodeEngine(llama, cfg).generate([short, Request("long", PROMPTS["long"], gen_length=16)])[0]
    assert (batch.output_ids, batch.commit_step) == (alone.output_ids, alone.commit_step)


# ---------------------------------------------------------------- robustness


def predicts_mask_at_0(tag: int, answer: torch.Tensor) -> torch.Tensor:
    g = len(answer)
    return peaked([MASK] + [10 + j for j in range(1, g)], [5.0] * g, 1.0)


def test_row_finishes_even_if_model_predicts_mask_token() -> None:
    """A model whose argmax is the mask token must not keep a row alive past its budget.

    Fails today: the engine commits x0 == mask_id, the position stays masked, and the row never finishes."""
    eng = DecodeEngine(scripted_adapter(predicts_mask_at_0, {A: 2}),
                       DecodeConfig(gen_length=4, block_length=4, steps=4, policy=["none"]))
    eng.add([Request("m", [A, 50])])
    finished = []
    for _ in range(3 * 4):
        finished += eng.step()
        if finished:
            break
    assert finished, "row still decoding after 3x its step budget"
    assert finished[0].steps_taken <= 4 and MASK not in finished[0].output_ids


def test_exit_on_last_step_is_not_an_early_exit() -> None:
    """A row whose margin first clears tau at its final step has nothing left to fill: it ran its budget.

    Fails today: exit_reason is "sched" (and the step trace says exit) although steps_taken == budget and no
    position is EXIT_FILL, so counting early exits by exit_reason over-counts."""
    def confident(tag: int, answer: torch.Tensor) -> torch.Tensor:
        g = len(answer)
        return peaked([10 + j for j in range(g)], [30.0 - 0.1 * j for j in range(g)], 10.0)

    # linear 50 -> 2.5: tau(6/8) = 14.4 > 10, tau(7/8) = 8.4 <= 10, so the margin clears tau at the last step only
    cfg = DecodeConfig(gen_length=8, block_length=8, steps=8, policy=["sched"],
                       sched=SchedConfig(schedule="linear", tau_high_logit=50.0))
    res = DecodeEngine(scripted_adapter(confident, {A: 2}), cfg).generate([Request("a", [A, 50])])[0]
    assert res.steps_taken == res.step_budget == 8
    assert int(CommitReason.EXIT_FILL) not in res.commit_reason
    assert res.exit_reason == "steps"
