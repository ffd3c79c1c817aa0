"""DiffusionGemma traces, exits and the memory bound: SchED ends a canvas on the raw logit margin and the canvas
commits its argmax; step/token trace tables carry the canvas columns; outputs do not depend on the chunking."""
from __future__ import annotations

import pytest

from decoder.canvas.engine import CanvasEngine
from decoder.config import DecodeConfig, DGemmaConfig, SchedConfig
from decoder.types import Request
from decoder.build import load_model
from decoder.types import CommitReason
from stages.write.trace_tables import step_table, token_table
from tests.support.tiny_dgemma import CANVAS, save_tiny


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return load_model(save_tiny(str(tmp_path_factory.mktemp("dgemma"))))


def run(adapter, **kw):
    cfg = DecodeConfig(**{"gen_length": 16, "trace": "tokens", "dgemma": DGemmaConfig(max_denoising_steps=4), **kw})
    return CanvasEngine(adapter, cfg).generate([Request("a", [5, 6, 7, 8, 9]), Request("b", [9, 8, 7])])


def test_sched_exit_commits_the_argmax_per_canvas(adapter):
    # tau 0 -> 0: every canvas exits at its first step with the step's argmax (token trace's argmax)
    res = run(adapter, policy=["dgemma", "sched"], sched=SchedConfig(tau_high_logit=0.0, tau_low_logit=0.0))
    for r in res:
        assert r.steps_taken == 2 and r.exit_reason == "sched"
        assert set(r.commit_reason) == {int(CommitReason.EXIT_FILL)} and r.commit_step == [0] * 8 + [1] * 8
        tokens = token_table([r.id], [r.trace]).to_pylist()
        assert [t["argmax"] for t in sorted(tokens, key=lambda t: t["position"])] == r.output_ids
        steps = step_table([r.id], [r.trace], [r.exit_reason]).to_pylist()
        assert [s["canvas"] for s in steps] == [0, 1] and all(s["exit"] and s["tau"] == 0.0 for s in steps)


def test_trace_columns(adapter):
    r = run(adapter, policy=["dgemma"])[0]
    steps = step_table([r.id], [r.trace], [r.exit_reason]).to_pylist()
    assert [s["canvas"] for s in steps] == [0] * 4 + [1] * 4
    assert [s["refresh"] for s in steps] == [True, False, False, False] * 2   # prefill / commit encoder passes
    assert steps[0]["forward_tokens"] == CANVAS + 5 and steps[4]["forward_tokens"] == 2 * CANVAS
    assert all(s["accepted"] >= 1 and s["entropy_mean"] > 0 for s in steps)
    tokens = token_table([r.id], [r.trace]).to_pylist()
    assert len(tokens) == 8 * CANVAS
    for t in tokens:   # settled: from that step on the argmax is the committed token
        later = [u["argmax"] for u in tokens if u["position"] == t["position"] and u["step"] >= t["settled_step"]]
        assert set(later) == {r.output_ids[t["position"]]}
    assert r.encoder_passes == 2 and r.refreshes == 0 and r.steps_taken == 8


def test_outputs_do_not_depend_on_the_memory_bound(adapter):
    a = run(adapter, policy=["dgemma"], trace="off")
    b = run(adapter, policy=["dgemma"], trace="off", max_logits_mb=1e-6)   # one position per chunk
    assert [r.output_ids for r in a] == [r.output_ids for r in b]


def test_refusals(adapter):
    with pytest.raises(ValueError, match="cannot run on a canvas family"):
        CanvasEngine(adapter, DecodeConfig(policy=["fastdllm"]))
    with pytest.raises(ValueError, match="decode.cache"):
        CanvasEngine(adapter, DecodeConfig(policy=["dgemma"], cache="dual"))
    eng = CanvasEngine(adapter, DecodeConfig(policy=["dgemma"]))
    with pytest.raises(ValueError, match="image tokens"):
        eng.row_config(Request("img", [5, 299, 6]))
