"""Users' data as it is (stages/read/row_mapping.py, stages/read/stage.py streaming, stages/write/formats.py), no Ray."""
from __future__ import annotations

import gzip
import io
import json

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from settings.schema import ConfigError
from settings.loader import load_config
from stages.write.formats import write_formats
from stages.preprocess import preprocess_batch
from stages.read.stage import ReadOptions, ShardReader, parse_shard, read_shards
from stages.read.row_mapping import RowMapping
from tests.stages.helpers import MODEL, jsonl
from tests.support.files import parquet_bytes, zstd as _zstd

PATH = "/in/docs.jsonl"


def _parse(data: bytes, path: str = PATH, **opts) -> list[dict]:
    return parse_shard({"bytes": data, "path": path}, {path: "docs"}, opts=ReadOptions(**opts))


def test_id_field_template_and_missing_field_error() -> None:
    mapping = RowMapping(id_field="doc_id", prompt_template="Summarize:\n{article}\nTitle: {title}")
    rows = _parse(jsonl({"doc_id": 7, "article": "a b c", "title": "T"}, {"doc_id": "x", "article": "only"},
                        {"article": "no id", "title": "t"}), mapping=mapping)
    assert [r["id"] for r in rows] == ["7", "x", ""]            # int and string ids, kept as strings
    assert rows[0]["prompt"] == "Summarize:\na b c\nTitle: T" and rows[0]["error"] == ""
    assert rows[1]["error"] == "prompt_template: missing field 'title'" and rows[1]["prompt"] is None
    assert "missing id (field 'doc_id')" in rows[2]["error"]


def test_prompt_and_messages_fields() -> None:
    mapping = RowMapping(prompt_field="question", messages_field="chat")
    rows = _parse(jsonl({"id": 1, "question": "copy:ab="}, {"id": 2, "chat": [{"role": "user", "content": "hi"}]},
                        {"id": 3, "prompt": "ignored"}), mapping=mapping)
    assert rows[0]["prompt"] == "copy:ab=" and json.loads(rows[1]["messages"])[0]["content"] == "hi"
    assert rows[2]["error"] == "missing prompt (need 'question' or 'chat')"


def test_pass_through_keeps_unconsumed_fields_with_types_and_renames_clashes() -> None:
    rows = _parse(jsonl({"id": "a", "prompt": "p", "score": 1.5, "n": 3, "tags": ["x"], "output": "theirs"},
                        {"id": "b", "prompt": 5, "score": 2.0, "n": 4, "tags": [], "output": "o"}))
    assert [(r["score"], r["n"], r["tags"], r["input_output"]) for r in rows] == [
        (1.5, 3, ["x"], "theirs"), (2.0, 4, [], "o")]
    assert rows[1]["error"]                                          # an error row keeps its fields too
    keep = _parse(jsonl({"id": "a", "prompt": "p", "score": 1.5, "n": 3}), keep_fields=["n", "prompt"])
    assert {"n", "input_prompt"} <= set(keep[0]) and "score" not in keep[0]


def test_jsonl_column_type_is_fixed_by_the_first_chunk() -> None:
    rows = _parse(jsonl({"id": "a", "prompt": "p", "n": 1}, {"id": "b", "prompt": "p"},
                        {"id": "c", "prompt": "p", "n": "three"}), chunk_rows=1)
    assert [r["n"] for r in rows] == [1, None, None]
    assert rows[2]["error"] == "field 'n': 'three' does not fit the column's type int64" and not rows[1]["error"]


def test_parquet_pass_through_keeps_arrow_types() -> None:
    table = pa.table({"key": pa.array([10, 11], pa.int16()), "text": ["copy:a=", "copy:b="],
                      "when": pa.array([1, 2], pa.timestamp("ms")), "w": pa.array([0.5, None], pa.float32())})
    data = parquet_bytes(table, row_group_size=1)
    reader = ShardReader("/in/t.parquet", "t", ReadOptions(mapping=RowMapping(id_field="key", prompt_field="text"),
                                                           chunk_rows=1))
    blocks = list(reader.tables(io.BytesIO(data)))
    assert len(blocks) == 2                                          # one block per row group
    merged = pa.concat_tables(blocks)
    assert merged.schema.field("when").type == pa.timestamp("ms") and merged.schema.field("w").type == pa.float32()
    assert merged["id"].to_pylist() == ["10", "11"] and merged["line"].to_pylist() == [1, 2]
    assert "key" not in merged.column_names and "text" not in merged.column_names
    assert [b["shard_rows"].to_pylist() for b in blocks] == [[0], [2]]   # the total rides on the last block


def test_samples_expand_each_prompt_and_errors_stay_per_sample_row() -> None:
    rows = _parse(jsonl({"id": "a", "prompt": "p"}, "", {"id": "a", "prompt": "dup"}), samples=3)
    assert [(r["line"], r["sample"]) for r in rows] == [(1, 0), (1, 1), (1, 2), (3, 0), (3, 1), (3, 2)]
    assert {r["shard_rows"] for r in rows} == {6} and {r["shard_blank_lines"] for r in rows} == {1}
    assert [bool(r["error"]) for r in rows] == [False] * 3 + [True] * 3


def test_override_fields_are_validated() -> None:
    rows = _parse(jsonl({"id": "a", "prompt": "p", "temperature": 0.7, "steps": 8, "tau_low_logit": 1.0},
                        {"id": "b", "prompt": "p", "temperature": -1, "steps": 2.5, "tau_low_logit": "x"},
                        {"id": "c", "prompt": "p", "temperature": float("nan")}))
    assert (rows[0]["row_temperature"], rows[0]["row_steps"], rows[0]["row_tau_low_logit"]) == (0.7, 8, 1.0)
    assert rows[1]["error"] == ("steps must be a positive integer, got 2.5; temperature must be >= 0.0, got -1; "
                                "tau_low_logit must be a finite number, got 'x'")
    assert rows[2]["row_temperature"] is None and rows[2]["error"] == ""


def test_top_p_top_k_overrides_are_validated() -> None:
    rows = _parse(jsonl({"id": "a", "prompt": "p", "top_p": 0.9, "top_k": 20.0},
                        {"id": "b", "prompt": "p", "top_p": 0.0, "top_k": -2},
                        {"id": "c", "prompt": "p", "top_p": 1.5, "top_k": "5"},
                        {"id": "d", "prompt": "p"}))
    assert (rows[0]["row_top_p"], rows[0]["row_top_k"], rows[0]["error"]) == (0.9, 20, "")
    assert rows[1]["error"] == "top_p must be in (0, 1], got 0.0; top_k must be a non-negative integer, got -2"
    assert rows[2]["error"] == "top_p must be in (0, 1], got 1.5; top_k must be a non-negative integer, got '5'"
    assert (rows[3]["row_top_p"], rows[3]["row_top_k"], rows[3]["error"]) == (None, -1, "")


def test_row_steps_must_fit_the_blocks_and_greedy_samples_are_refused() -> None:
    cfg = load_config(None, [f"model.path={MODEL}", "decode.gen_length=32", "decode.block_length=16",
                             "decode.steps=16", "decode.temperature=0.5", "decode.samples_per_prompt=2"])
    table = pa.Table.from_pylist(_parse(jsonl({"id": "a", "prompt": "copy:a=", "steps": 3},
                                              {"id": "b", "prompt": "copy:a=", "steps": 4},
                                              {"id": "c", "prompt": "copy:a=", "temperature": 0})))
    errors = preprocess_batch(table, MODEL, cfg.decode)["error"].to_pylist()
    assert "steps 3 must be a multiple of the row's 2 block(s)" in errors[0] and errors[1] == ""
    assert "identical samples" in errors[2]


@pytest.mark.parametrize("suffix, opener", [("jsonl.gz", gzip.compress), ("jsonl.zst", _zstd), ("jsonl", lambda b: b)])
def test_streamed_read_keeps_exact_lines_across_chunks(tmp_path, suffix, opener) -> None:
    lines = []
    for i in range(50):
        lines.append("" if i % 7 == 3 else '{"id": "bad' if i % 11 == 5 else json.dumps({"id": i, "prompt": f"p{i}"}))
    path = tmp_path / f"s.{suffix}"
    path.write_bytes(opener(("\n".join(lines) + "\n").encode()))
    blocks = list(read_shards(pa.table({"path": [str(path)]}), fsspec.filesystem("file"), {str(path): "s"},
                              ReadOptions(chunk_rows=4)))
    assert len(blocks) > 5
    rows = pa.concat_tables(blocks).to_pylist()
    expect = [i + 1 for i, x in enumerate(lines) if x]
    assert [r["line"] for r in rows] == expect
    assert [r["line"] for r in rows if r["error"]] == [i + 1 for i, x in enumerate(lines) if x.startswith('{"id": "bad')]
    assert all(r["error"].startswith(f"line {r['line']}: malformed JSON") for r in rows if r["error"])
    assert blocks[-1]["shard_rows"].to_pylist()[0] == len(expect) and blocks[-1]["shard_blank_lines"][0].as_py() == 7


def test_output_formats_hold_the_same_rows(tmp_path) -> None:
    table = pa.table({"id": ["a", "b"], "n": pa.array([1, None], pa.int32()), "ids": [[1, 2], []],
                      "when": pa.array([0, 1000], pa.timestamp("ms"))})
    fs = fsspec.filesystem("file")
    paths = write_formats(fs, str(tmp_path / "out"), table, ["arrow", "jsonl", "parquet"])
    assert [p.rsplit(".", 1)[1] for p in paths] == ["arrow", "jsonl", "parquet"]
    assert pa.ipc.open_file(paths[0]).read_all().equals(table)
    assert pq.read_table(paths[2]).to_pylist() == table.to_pylist() and pq.read_table(paths[2]).schema.field("n").type == pa.int32()
    back = [json.loads(x) for x in open(paths[1])]
    assert back == [{"id": "a", "n": 1, "ids": [1, 2], "when": "1970-01-01 00:00:00"},
                    {"id": "b", "n": None, "ids": [], "when": "1970-01-01 00:00:01"}]


@pytest.mark.parametrize("override, key", [
    (["decode.samples_per_prompt=3"], "decode.samples_per_prompt"),        # greedy: samples would be equal
    (["decode.samples_per_prompt=0", "decode.temperature=1"], "decode.samples_per_prompt"),
    (["output.format=[arrow,csv]"], "output.format"), (["output.format=[]"], "output.format"),
    (["input.prompt_template=Say {}"], "input.prompt_template"), (["input.id_field="], "input.id_field"),
])
def test_config_refuses(override, key) -> None:
    with pytest.raises(ConfigError, match=f"at {key}"):
        load_config(None, override)


def test_config_accepts_samples_with_temperature_and_a_bare_format() -> None:
    cfg = load_config(None, ["decode.samples_per_prompt=3", "decode.temperature=0.8", "output.format=jsonl"])
    assert cfg.decode.samples_per_prompt == 3 and cfg.output.format == ["jsonl"]
