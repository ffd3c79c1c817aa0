"""The lean step decodes exactly as the engine did before it (full logits, every signal everywhere).

Golden decodes of 32 held-out prompts on the embedded model (float32, CPU) for every policy combination,
greedy and sampled (T = 0.7, same seed), at batch 1 and 16, were recorded from the pre-refactor engine
by tests/decoder/make_golden.py (batch 1 is marked slow: the default run checks batch 16). One exit reason was split since: a row that committed every position
before its step budget reads `all_committed` where the old engine said `steps`.
"""
from __future__ import annotations

import json

import pytest

from stages.preprocess import load_tokenizer
from tests.decoder.make_golden import BATCHES, CASES, OUT, TEMPERATURES, decode_case, requests
from tests.support import EMBEDDED_MODEL, ROOT
from tests.support.models import embedded_adapter

GOLDEN = json.loads(OUT.read_text())


@pytest.fixture(scope="module")
def model():
    return embedded_adapter(), requests(load_tokenizer(str(EMBEDDED_MODEL)))


def old_reason(row: dict) -> str:
    return "steps" if row["exit_reason"] == "all_committed" else row["exit_reason"]


@pytest.mark.parametrize("batch", [pytest.param(b, marks=pytest.mark.slow) if b == 1 else b for b in BATCHES])
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_pre_refactor_engine(model, case, temperature, batch):
    adapter, reqs = model
    got = decode_case(adapter, CASES[case], temperature, batch, reqs)
    want = GOLDEN[f"{case}|T={temperature}|B={batch}"]
    assert got.keys() == want.keys()
    for rid, w in want.items():
        g = got[rid]
        assert (g["output_ids"], g["steps_taken"], g["commit_step"]) == (w["output_ids"], w["steps_taken"],
                                                                         w["commit_step"]), rid
        assert old_reason(g) == w["exit_reason"], rid
        if g["exit_reason"] == "all_committed":
            assert g["steps_taken"] < 16, rid


# ----- the parts of the lean step --------------------------------------------------------------------
def _cfg(*overrides: str):
    from settings.loader import load_config
    return load_config(str(ROOT / "configs/default.yaml"), ["decode.trace=off", *overrides]).decode


@pytest.mark.parametrize("overrides", [["decode.policy=[none]"], ["decode.policy=[tspd,ce,sched]"],
                                       ["decode.policy=[fastdllm]", "decode.temperature=0.7"],
                                       ["decode.policy=[sched]", "decode.trace=tokens", "decode.temperature=0.7"]])
def test_tiny_logits_bound_changes_nothing(model, overrides):
    """A bound of a few KiB (one position per chunk) decodes exactly as the default bound."""
    from decoder.masked.engine import DecodeEngine
    adapter, reqs = model
    big = DecodeEngine(adapter, _cfg(*overrides)).generate(reqs, batch_size=16)
    small_engine = DecodeEngine(adapter, _cfg(*overrides, "decode.max_logits_mb=0.0001"))
    small = small_engine.generate(reqs, batch_size=16)
    per_pos = small_engine.projector.stats.peak_temp_bytes
    assert small_engine.projector.stats.chunks == small_engine.projector.stats.positions  # one per chunk
    assert per_pos <= 48 * (4 + 4 + 4 + 24)
    for a, b in zip(big, small):
        assert (a.output_ids, a.steps_taken, a.commit_step, a.exit_reason) == \
               (b.output_ids, b.steps_taken, b.commit_step, b.exit_reason)
        if a.trace is not None:  # same rows; values to float32 rounding (a 1-row matmul is another kernel)
            assert (a.trace.position == b.trace.position).all()
            assert (a.trace.tokens[:, 0] == b.trace.tokens[:, 0]).all()
            assert abs(a.trace.tokens - b.trace.tokens).max() < 1e-4


def test_fixed_steps_without_trace_reads_only_block_confidence(model):
    """[none] + trace off: only x0 and confidence, only at the current block's still-masked positions."""
    from decoder.masked.engine import DecodeEngine
    adapter, reqs = model
    eng = DecodeEngine(adapter, _cfg("decode.policy=[none]", "decode.gen_length=16", "decode.block_length=8"))
    assert eng.needs == frozenset({"x0", "confidence"}) and not eng.span
    results = eng.generate(reqs[:8], batch_size=8)
    # a position is read at every step of its block up to its commit: block b covers steps 8b..8b+7
    expected = sum(c - 8 * (p // 8) + 1 for r in results for p, c in enumerate(r.commit_step))
    assert eng.projector.stats.positions == expected < 8 * 16 * 16
    for name in ("sched", "tspd", "fastdllm"):
        other = DecodeEngine(adapter, _cfg(f"decode.policy=[{name}]"))
        assert other.span == (name != "fastdllm"), name


def test_out_of_memory_halves_the_slots_and_loses_no_row(model):
    """An OOM raised once by the forward of a batch of 8: the slot limit goes 8 -> 4, the 8 rows restart,
    and every row is decoded exactly once, as it would be without the fault."""
    import torch
    from decoder.masked.engine import DecodeEngine
    from decoder.scheduler import SlotScheduler
    from decoder.types import RowError
    adapter, reqs = model
    cfg = _cfg("decode.policy=[sched]")
    want = {r.id: r.output_ids for r in DecodeEngine(adapter, cfg).generate(reqs, batch_size=1)}
    engine = DecodeEngine(adapter, cfg)
    real, fired = engine.projector.adapter.answer_hidden, []

    def flaky(ids, attn, keep):
        if ids.shape[0] == 8 and not fired:
            fired.append(True)
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(ids, attn, keep)

    engine.projector.adapter = type(adapter)(**{**adapter.__dict__})
    engine.projector.adapter.answer_hidden = flaky
    sched = SlotScheduler(engine, 8, cfg.max_batch_tokens)
    out = list(sched.run(reqs))
    assert fired and not any(isinstance(o, RowError) for o in out)
    assert sorted(o.id for o in out) == sorted(want)              # each row exactly once
    assert {o.id: o.output_ids for o in out} == want
    stats = sched.stats()
    assert stats["oom_events"] == 1 and stats["slot_limit"] == 4
    assert engine.stats["forwards"] > 0 and max(len(engine.rows), 0) == 0


def test_out_of_memory_alone_is_a_row_error(model):
    import torch
    from decoder.masked.engine import DecodeEngine
    from decoder.scheduler import SlotScheduler
    from decoder.types import RowError
    adapter, reqs = model
    engine = DecodeEngine(adapter, _cfg())
    engine.projector.adapter = type(adapter)(**{**adapter.__dict__})

    def always(ids, attn, keep):
        raise torch.OutOfMemoryError("out of memory (injected)")

    engine.projector.adapter.answer_hidden = always
    out = list(SlotScheduler(engine, 4, 16384).run(reqs[:4]))
    assert sorted(o.id for o in out) == sorted(r.id for r in reqs[:4])
    assert all(isinstance(o, RowError) and "out of memory" in o.reason for o in out)


def test_all_committed_is_not_a_step_budget_exit(model):
    from decoder.masked.engine import DecodeEngine
    adapter, reqs = model
    res = DecodeEngine(adapter, _cfg("decode.policy=[fastdllm]", "decode.stop_at_eos=false")).generate(reqs)
    assert {r.exit_reason for r in res} == {"all_committed"}
    assert all(r.steps_taken < r.step_budget for r in res)
    full = DecodeEngine(adapter, _cfg("decode.policy=[none]", "decode.stop_at_eos=false")).generate(reqs)
    assert {(r.exit_reason, r.steps_taken) for r in full} == {("steps", 16)}


def test_decoder_library_imports_nothing_from_the_pipeline():
    import ast
    paths = list((ROOT / "decoder").rglob("*.py"))
    assert paths
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in (
                    "stages", "driver", "report", "settings", "training", "embedded"):
                assert node.module.startswith("decoder"), f"{path.name} imports {node.module}"
