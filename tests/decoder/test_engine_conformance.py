"""One engine interface (decoder/engine.py), one conformance test run over both engines that implement it: the
masked-diffusion engine (a tiny float64 Llama) and the canvas engine (a tiny DiffusionGemma)."""
from __future__ import annotations

import pytest

from decoder.build import load_model, make_engine
from decoder.canvas.engine import CanvasEngine
from decoder.config import DecodeConfig, DGemmaConfig
from decoder.engine import Engine
from decoder.masked.engine import DecodeEngine
from decoder.scheduler import SlotScheduler
from decoder.types import STEP_FIELDS, ExitReason, Request, RowError, SequenceResult
from tests.support.models import tiny_llama_adapter
from tests.support.tiny_dgemma import save_tiny


def masked(tmp_path_factory):
    adapter = tiny_llama_adapter()
    cfg = DecodeConfig(policy=["none", "sched"], gen_length=8, block_length=4, steps=8, trace="tokens",
                       stop_at_eos=False)
    return DecodeEngine, lambda: make_engine(adapter, cfg)


def canvas(tmp_path_factory):
    adapter = load_model(save_tiny(str(tmp_path_factory.mktemp("dgemma"))))
    cfg = DecodeConfig(policy=["dgemma"], gen_length=16, trace="tokens", seed=7,
                       dgemma=DGemmaConfig(max_denoising_steps=4, entropy_bound_nats=6.0))
    return CanvasEngine, lambda: make_engine(adapter, cfg)


@pytest.fixture(scope="module", params=[masked, canvas], ids=["masked", "canvas"])
def kind(request, tmp_path_factory):
    return request.param(tmp_path_factory)


def requests() -> list[Request]:
    """Six rows with prompts of 3..8 tokens and answers of 4..8 (tokens 4..40: no special ids)."""
    return [Request(f"r{i}", list(range(10 + i, 13 + i + i % 6)), gen_length=4 + (i % 3) * 2) for i in range(6)]


def key(r: SequenceResult):
    return r.output_ids, r.steps_taken, r.exit_reason, r.commit_step


def test_the_engine_implements_the_interface(kind) -> None:
    cls, build = kind
    engine = build()
    assert isinstance(engine, cls) and isinstance(engine, Engine)
    assert engine.rows == [] and engine.num_active == 0 and engine.kv_bytes_per_token > 0


def test_static_loop_and_slot_scheduler_give_the_same_rows(kind) -> None:
    _, build = kind
    static = {r.id: r for r in build().generate(requests(), batch_size=6)}
    sched = SlotScheduler(build(), max_batch_size=2, max_batch_tokens=10_000)   # rows join as others leave
    streamed = {r.id: r for r in sched.run(requests())}
    assert set(static) == set(streamed) == {f"r{i}" for i in range(6)}
    for rid, res in static.items():
        assert key(res) == key(streamed[rid]), rid


def test_results_are_well_formed_and_rows_leave(kind) -> None:
    _, build = kind
    engine = build()
    engine.add(requests()[:3])
    assert engine.num_active == 3 and all(r.length > 0 and not r.done for r in engine.rows)
    results = []
    while engine.rows:
        results += engine.step()
    assert sorted(r.id for r in results) == ["r0", "r1", "r2"] and engine.num_active == 0
    for r, req in zip(sorted(results, key=lambda r: r.id), requests()):
        assert len(r.output_ids) == len(r.commit_step) == len(r.commit_reason) <= req.gen_length
        assert 1 <= r.steps_taken <= r.step_budget and isinstance(r.exit_reason, ExitReason)
        assert r.trace.steps.shape == (r.steps_taken, len(STEP_FIELDS))
        assert list(r.trace.step_column("step")) == list(range(r.steps_taken))


def test_a_refused_request_is_a_row_error_and_clear_empties(kind) -> None:
    _, build = kind
    engine = build()
    bad = Request("bad", [10, 11, 12], gen_length=8, steps=0)   # no step budget
    with pytest.raises(ValueError):
        engine.row_config(bad)
    out = list(SlotScheduler(engine, max_batch_size=4, max_batch_tokens=10_000).run([bad, *requests()[:2]]))
    errors = [r for r in out if isinstance(r, RowError)]
    assert [e.id for e in errors] == ["bad"] and len(out) == 3
    engine.add(requests()[:2])
    engine.clear()
    assert engine.rows == [] and engine.num_active == 0
