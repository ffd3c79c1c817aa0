"""The Python API (dllm.py, stages/processor.py): a user's own Ray Data dataset through the processor, written
with Ray Data's own sink; every input column survives, every row has an output or an error, and the outputs
equal `pipeline.py run` on the same prompts, token for token; `dllm.decode` gives the processor's outputs."""
from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dllm
from tests.support import EMBEDDED_MODEL, EMBEDDED_PROMPTS
from tests.support.cli import pipeline_cmd
from tests.support.files import read_arrow


def _prompts(n: int) -> list[dict]:
    return [json.loads(x) for x in (EMBEDDED_PROMPTS / "shard-000.jsonl").read_text().splitlines()[:n]]


def _user_table(rows: list[dict]) -> pa.Table:
    """A user's table: extra columns of awkward types (a nested struct, a timestamp), one bad row."""
    n = len(rows)
    return pa.table({
        "id": [r["id"] for r in rows] + ["bad"],
        "question": [r["prompt"] for r in rows] + [""],
        "meta": pa.array([{"source": "s", "rank": i} for i in range(n + 1)]),
        "asked_at": pa.array([dt.datetime(2026, 1, 1, 0, 0, i) for i in range(n + 1)], pa.timestamp("us")),
    })


@pytest.fixture(scope="module")
def cli_outputs(tmp_path_factory) -> dict[str, list[int]]:
    """`pipeline.py run` over the same prompts: id -> output token ids."""
    import subprocess
    work = tmp_path_factory.mktemp("cli")
    (work / "in.jsonl").write_text("".join(json.dumps({"id": r["id"], "prompt": r["prompt"]}) + "\n"
                                           for r in _prompts(12)))
    done = subprocess.run(pipeline_cmd(f"input.url={work}/in.jsonl", f"output.url={work}/out",
                                       f"model.path={EMBEDDED_MODEL}", "progress=false", "decode.trace=off"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    t = read_arrow(work / "out" / "outputs" / "in.arrow")
    return dict(zip(t["id"].to_pylist(), t["output_ids"].to_pylist()))


def test_processor_keeps_columns_and_matches_the_cli(ray_cluster, tmp_path, cli_outputs):
    import ray
    table = _user_table(_prompts(12))
    processor = dllm.build_processor(
        {"model": {"path": str(EMBEDDED_MODEL)}, "decode": {"trace": "off"}},
        preprocess=lambda row: {**row, "prompt": row["question"]},
        postprocess=lambda row: {**row, "answer_len": len(row["output"] or "")},
        concurrency=1, batch_size=4)
    processor(ray.data.from_arrow(table)).write_parquet(str(tmp_path / "out"))
    out = pq.read_table(tmp_path / "out").to_pylist()
    assert len(out) == table.num_rows
    by_id = {r["id"]: r for r in out}
    for src in table.to_pylist():                                 # every input column survived, as it was
        got = by_id[src["id"]]
        assert {k: got[k] for k in src} == src
    assert by_id["bad"]["error"] == "empty prompt" and by_id["bad"]["output"] is None
    good = [r for r in out if r["id"] != "bad"]
    assert all(r["error"] == "" and r["output"] is not None and r["answer_len"] == len(r["output"]) for r in good)
    assert {r["id"]: r["output_ids"] for r in good} == cli_outputs   # token for token

    in_process = dllm.decode([{"id": r["id"], "prompt": r["question"]} for r in table.to_pylist()],
                             {"model": {"path": str(EMBEDDED_MODEL)}, "decode": {"trace": "off"}})
    assert [r["id"] for r in in_process] == table["id"].to_pylist()
    assert {r["id"]: (r["output_ids"], r["error"]) for r in in_process} == \
           {r["id"]: (r["output_ids"], r["error"]) for r in out}


def test_processor_can_fail_the_job_on_a_bad_row(ray_cluster):
    import ray
    processor = dllm.build_processor({"model": {"path": str(EMBEDDED_MODEL)}}, continue_on_error=False,
                                     concurrency=1)
    rows = ray.data.from_items([{"prompt": "copy:ab="}, {"prompt": ""}])
    with pytest.raises(Exception, match="empty prompt"):
        processor(rows).take_all()


def test_decode_in_process_gives_per_row_errors_and_stable_ids():
    cfg = {"model": {"path": str(EMBEDDED_MODEL)}}
    first = dllm.decode(["copy:abc=", {"id": "q", "prompt": "rev:abc=", "max_new_tokens": 0}, ""], cfg)
    assert first[0]["output"] == "abc" and first[0]["error"] == "" and first[0]["id"].startswith("h")
    assert "max_new_tokens must be a positive integer" in first[1]["error"] and first[1]["output"] is None
    assert first[2]["error"] == "empty prompt"
    assert dllm.decode(["copy:abc="], cfg)[0]["id"] == first[0]["id"]       # the content id: same every run
    assert dllm.decode([], cfg) == []
