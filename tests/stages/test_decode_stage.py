"""DecodeStage (stages/decode.py) without Ray: the async actor callable on pipeline-shaped batches."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from stages.decode import DECODE_FIELDS, DecodeStage
from tests.stages.helpers import SHARD_PATH, good_prompts, jsonl, pipeline_table, run_stage, stage_config

BAD = ['{"id": "broken"', {"id": "empty", "prompt": ""}, {"id": "long", "prompt": "a" * 60},
       {"id": "odd", "prompt": "copy:ab=", "max_new_tokens": 8.5}]
OVERRIDE = {"id": "wide", "prompt": "rev:abc=", "max_new_tokens": 32}


def shard_bytes() -> bytes:
    good = good_prompts(12)
    return jsonl(*good[:5], BAD[0], BAD[1], *good[5:8], OVERRIDE, BAD[2], *good[8:], BAD[3])


@pytest.fixture(scope="module")
def cfg():
    return stage_config("decode.allow_longer=true")       # the "wide" row asks for 32 > gen_length 16


@pytest.fixture(scope="module")
def table(cfg) -> pa.Table:
    return pipeline_table(shard_bytes(), cfg.decode)


@pytest.fixture(scope="module")
def decoded(cfg, table):
    """(stage, forwards' ids, [part A, part B], [out A, out B]) for two concurrent calls on one actor."""
    stage = DecodeStage(cfg)
    forwards: list[list[str]] = []
    stage.scheduler.before_step = lambda ids: forwards.append(list(ids))
    parts = [table.slice(0, 9), table.slice(9)]
    return stage, forwards, parts, run_stage(stage, *parts)


def test_input_has_good_and_bad_rows(table) -> None:
    errors = table["error"].to_pylist()
    assert table.num_rows == 17 and sum(bool(e) for e in errors) == 4
    assert sum(len(p) for p in table["prompt_ids"].to_pylist()) > 0


def test_each_call_returns_its_rows_in_input_order(decoded) -> None:
    _, _, parts, outs = decoded
    for part, out in zip(parts, outs):
        assert out.num_rows == part.num_rows
        assert out.column_names == part.column_names + DECODE_FIELDS.names
        for f in DECODE_FIELDS:
            assert out.schema.field(f.name).type == f.type
        assert out.drop_columns(DECODE_FIELDS.names).equals(part)     # rows, order, errors untouched
        assert out["line"].to_pylist() == part["line"].to_pylist()


def test_rows_with_errors_pass_through_and_others_decode(decoded) -> None:
    _, _, _, outs = decoded
    rows = [r for out in outs for r in out.to_pylist()]
    bad, good = [r for r in rows if r["error"]], [r for r in rows if not r["error"]]
    assert [r["id"] for r in bad] == ["", "empty", "long", "odd"]
    for r in bad:
        assert all(r[f] is None for f in DECODE_FIELDS.names if not f.startswith("actor")), r["id"]
        assert r["actor"]
    assert len(good) == 13
    for r in good:
        budget = 32 if r["id"] == "wide" else 16
        assert isinstance(r["output"], str) and len(r["output_ids"]) == len(r["commit_step"]) == budget
        assert r["step_budget"] == budget and 1 <= r["steps_taken"] <= budget and r["nfe"] == r["steps_taken"]
        assert r["exit_reason"] in ("sched", "eos", "steps") and 0 <= r["generated_tokens"] <= budget
        assert 0 <= r["queue_s"] <= r["latency_s"] and r["slot_s"] >= 0
        steps = pa.ipc.open_stream(r["trace_steps"]).read_all()
        assert steps.num_rows == r["steps_taken"] and set(steps["id"].to_pylist()) == {r["id"]}
        assert steps["step"].to_pylist() == list(range(r["steps_taken"]))
        tokens = pa.ipc.open_stream(r["trace_tokens"]).read_all()
        assert tokens.num_rows == r["steps_taken"] * budget
        assert json.loads(r["actor_stats"])["row_steps"] > 0


def test_concurrent_calls_share_the_slots(decoded) -> None:
    stage, forwards, parts, _ = decoded
    ids_a = {f"{SHARD_PATH}\x00{i}\x000" for i in parts[0]["id"].to_pylist()}
    assert any(set(f) & ids_a and set(f) - ids_a for f in forwards)        # one forward, rows of both calls
    assert stage.stats()["sequences"] == 13 and not stage.scheduler.has_work


def test_concurrent_equals_one_call(cfg, table, decoded) -> None:
    _, _, _, outs = decoded
    alone = run_stage(DecodeStage(cfg), table)[0]
    cols = ["id", "error", "output", "output_ids", "steps_taken", "exit_reason", "commit_step"]
    together = pa.concat_tables(outs)
    assert together.select(cols).equals(alone.select(cols))
    for kind in ("trace_steps", "trace_tokens"):   # the same trace rows (blob bytes may differ by batch layout)
        assert [traces(b) for b in together[kind].to_pylist()] == [traces(b) for b in alone[kind].to_pylist()]


def traces(blob: bytes | None) -> list[dict] | None:
    return pa.ipc.open_stream(blob).read_all().to_pylist() if blob else None


def test_injected_failure_is_a_row_error(decoded, table) -> None:
    stage = DecodeStage(stage_config("testing.fail_on_id=s0-006"))
    out = pa.concat_tables(run_stage(stage, table.slice(0, 9), table.slice(9)))
    ref = pa.concat_tables(decoded[3])
    for got, want in zip(out.to_pylist(), ref.to_pylist()):
        if got["id"] == "s0-006":
            assert got["error"] == "decode failed: RuntimeError: injected failure for id s0-006"
            assert got["output"] is None and got["trace_steps"] is None
        else:
            assert (got["error"], got["output"], got["output_ids"], got["steps_taken"]) == \
                   (want["error"], want["output"], want["output_ids"], want["steps_taken"]), got["id"]


def test_on_error_fail_raises(table) -> None:
    stage = DecodeStage(stage_config("testing.fail_on_id=s0-002", "actors.on_error=fail"))
    with pytest.raises(RuntimeError, match="row s0-002 in .*injected failure for id s0-002"):
        run_stage(stage, table)


def test_all_error_batch_needs_no_decoding(cfg, table) -> None:
    stage = DecodeStage(cfg)
    bad = table.filter(pc.not_equal(table["error"], ""))
    out = run_stage(stage, bad)[0]
    assert out["error"].to_pylist() == bad["error"].to_pylist() and out["output"].null_count == bad.num_rows
    assert stage.engine.stats["forwards"] == 0
