"""SlotScheduler (decoder/scheduler.py) over a DecodeEngine: continuous batching, refill, isolation."""
from __future__ import annotations

from collections import Counter

import pytest
import torch

from decoder.config import DecodeConfig
from decoder.masked.engine import DecodeEngine
from decoder.types import Request, SequenceResult
from decoder.scheduler import SlotScheduler
from decoder.types import RowError
from tests.support.models import peaked, scripted_adapter, tiny_llama_adapter

CFG = DecodeConfig(gen_length=8, block_length=8, steps=8, policy=["sched"])   # one commit per step
TAGS = list(range(4, 64))                                                     # 60 prompts, one tag each


def exits_after(tag: int) -> int:
    """Row `tag` turns confident (and SchED exits it) once this many positions are committed."""
    return tag % 5


def script(tag: int, answer: torch.Tensor) -> torch.Tensor:
    g = len(answer)
    if int((answer != 1).sum()) >= exits_after(tag):   # 1 == MASK
        return peaked([4 + (tag + 2 * j + 7) % 60 for j in range(g)], [30.0 - 0.1 * j for j in range(g)], 20.0)
    return peaked([4 + (tag + j) % 60 for j in range(g)], [6.0 - 0.1 * j for j in range(g)], 0.5)


def prompt(tag: int) -> list[int]:
    return [tag] + [50] * (tag % 4)


def adapter():
    return scripted_adapter(script, {t: len(prompt(t)) for t in TAGS})


def requests(tags=TAGS) -> list[Request]:
    return [Request(f"r{t}", prompt(t)) for t in tags]


def run(sched: SlotScheduler, reqs: list[Request]) -> dict[str, SequenceResult | RowError]:
    out = list(sched.run(reqs))
    ids = Counter(o.id for o in out)
    assert ids == Counter(r.id for r in reqs), "every request comes back exactly once"
    assert not sched.has_work and not sched.engine.rows and not sched.waiting and not sched.isolate
    return {o.id: o for o in out}


def key(res: SequenceResult) -> tuple:
    return res.output_ids, res.commit_step, res.steps_taken, res.exit_reason


@pytest.fixture(scope="module")
def reference() -> dict[str, SequenceResult]:
    """Each request decoded alone."""
    return {r.id: DecodeEngine(adapter(), CFG).generate([r])[0] for r in requests()}


def test_reference_rows_exit_at_different_steps(reference) -> None:
    assert {t: reference[f"r{t}"].steps_taken for t in TAGS} == {t: exits_after(t) + 1 for t in TAGS}
    assert {r.exit_reason for r in reference.values()} == {"sched"}


def test_many_prompts_few_slots_drains_cleanly(reference) -> None:
    sched = SlotScheduler(DecodeEngine(adapter(), CFG), max_batch_size=4, max_batch_tokens=10_000)
    out = run(sched, requests())
    assert all(isinstance(r, SequenceResult) for r in out.values())
    assert {i: key(r) for i, r in out.items()} == {i: key(r) for i, r in reference.items()}
    s = sched.stats()
    assert s["sequences"] == sched.finished == len(TAGS)
    assert s["row_steps"] == s["useful_row_steps"] == sum(r.steps_taken for r in reference.values())


def test_freed_slots_are_refilled_before_the_next_forward() -> None:
    seen: list[tuple[int, int]] = []                      # (rows in the forward, rows still waiting)
    sched = SlotScheduler(DecodeEngine(adapter(), CFG), 4, 10_000,
                          before_step=lambda ids: seen.append((len(ids), len(sched.waiting))))
    run(sched, requests())
    assert len(seen) == sched.engine.stats["forwards"]
    assert all(n == 4 for n, waiting in seen if waiting), seen
    first_drain = next(i for i, (_, waiting) in enumerate(seen) if not waiting)
    assert first_drain > 10
    assert [n for n, _ in seen[first_drain:]] == sorted((n for n, _ in seen[first_drain:]), reverse=True)
    assert sched.stats()["steady_slot_utilisation"] == 1.0
    assert sched.stats()["slot_utilisation"] > 0.9


@pytest.mark.parametrize("bucket", [False, True])
def test_poisoned_row_is_isolated_and_batch_mates_complete(reference, bucket: bool) -> None:
    calls: list[list[str]] = []

    def hook(ids: list[str]) -> None:
        calls.append(list(ids))
        if "r17" in ids:
            raise RuntimeError("poisoned r17")

    sched = SlotScheduler(DecodeEngine(adapter(), CFG), 4, 10_000, bucket=bucket, before_step=hook)
    out = run(sched, requests())
    assert out["r17"] == RowError("r17", "decode failed: RuntimeError: poisoned r17")
    good = {i: key(r) for i, r in out.items() if i != "r17"}
    assert all(isinstance(out[i], SequenceResult) for i in good)
    assert good == {i: key(r) for i, r in reference.items() if i != "r17"}
    mates = {i for ids in calls if "r17" in ids and len(ids) > 1 for i in ids} - {"r17"}
    assert mates and [ids for ids in calls if len(ids) == 1 and ids[0] in mates]   # decoded alone afterwards
    assert sched.finished == len(TAGS) - 1


def test_max_batch_tokens_limits_admission(reference) -> None:
    length = {f"r{t}": len(prompt(t)) + CFG.gen_length for t in TAGS}         # 9 .. 12 tokens
    seen: list[list[str]] = []
    sched = SlotScheduler(DecodeEngine(adapter(), CFG), 8, 30, before_step=lambda ids: seen.append(list(ids)))
    out = run(sched, requests())
    assert all(len(ids) * max(length[i] for i in ids) <= 30 for ids in seen)
    assert max(len(ids) for ids in seen) >= 2
    assert {i: key(r) for i, r in out.items()} == {i: key(r) for i, r in reference.items()}


def test_a_row_over_the_token_budget_still_runs_alone() -> None:
    seen: list[int] = []
    sched = SlotScheduler(DecodeEngine(adapter(), CFG), 8, 5, before_step=lambda ids: seen.append(len(ids)))
    out = run(sched, requests(TAGS[:6]))
    assert set(seen) == {1} and all(isinstance(r, SequenceResult) for r in out.values())


def test_rows_the_engine_refuses_become_errors_without_blocking_others(reference) -> None:
    bad = [Request("odd", prompt(4), gen_length=0), Request("huge", [5] + [50] * 60)]
    sched = SlotScheduler(DecodeEngine(adapter(), CFG), 4, 10_000)
    out = run(sched, requests(TAGS[:5]) + bad + requests(TAGS[5:10]))
    assert isinstance(out["odd"], RowError) and "must be positive" in out["odd"].reason
    assert isinstance(out["huge"], RowError) and "exceed the model context" in out["huge"].reason
    assert {i: key(out[i]) for i in out if i not in ("odd", "huge")} == \
           {f"r{t}": key(reference[f"r{t}"]) for t in TAGS[:10]}


def test_bucket_returns_everything_and_groups_lengths() -> None:
    cfg = DecodeConfig(gen_length=8, block_length=8, steps=8, policy=["none"])   # every row takes 8 steps
    lengths = {t: 1 if t % 2 else 20 for t in range(4, 12)}                     # alternating short/long
    reqs = [Request(f"b{t}", [t] + [50] * (n - 1)) for t, n in lengths.items()]
    results = {}
    for bucket in (False, True):
        sched = SlotScheduler(DecodeEngine(scripted_adapter(script, lengths), cfg), 2, 10_000, bucket=bucket)
        results[bucket] = (run(sched, reqs), sched.stats()["padding_fraction"])
    (fifo, fifo_pad), (bucketed, bucket_pad) = results[False], results[True]
    assert {i: key(r) for i, r in fifo.items()} == {i: key(r) for i, r in bucketed.items()}
    assert fifo_pad > 0.3 and bucket_pad == 0.0


@pytest.fixture(scope="module")
def llama():
    return tiny_llama_adapter(seed=0, dtype=torch.float64)


@pytest.mark.parametrize("policy", ["none", "sched"])
@pytest.mark.parametrize("bucket", [False, True])
def test_continuous_batching_equals_static_generate(llama, policy: str, bucket: bool) -> None:
    cfg = DecodeConfig(gen_length=16, block_length=8, steps=8, policy=[policy])
    gen = torch.Generator().manual_seed(1)
    reqs = [Request(f"q{i}", torch.randint(4, 64, (int(torch.randint(2, 10, (1,), generator=gen)),),
                                           generator=gen).tolist(), gen_length=[8, 16, 24][i % 3])
            for i in range(18)]
    static = DecodeEngine(llama, cfg).generate(reqs, batch_size=5)
    sched = SlotScheduler(DecodeEngine(llama, cfg), 4, 10_000, bucket=bucket)
    out = run(sched, reqs)
    assert {r.id: key(r) for r in static} == {i: key(r) for i, r in out.items()}
    assert len({r.steps_taken for r in static}) > 1 or policy == "none"
