"""ShardDatasink (stages/write/sink.py) and resume helpers (driver/resume.py), called directly without Ray."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from settings.schema import StorageConfig
from stages.decode import DecodeStage
from driver.resume import committed_shards, keep_parts, prepare_output
from stages.storage import filesystem
from stages.write.sink import ERROR_COLUMNS, OUTPUT_COLUMNS, ShardDatasink, read_ipc
from tests.stages.helpers import good_prompts, jsonl, pipeline_table, run_stage, stage_config


def shard_a() -> bytes:
    good = good_prompts(4)
    return jsonl(good[0], "{oops", *good[1:3], {"id": "e", "prompt": " "}, good[3])


@pytest.fixture(scope="module")
def decoded() -> dict[str, pa.Table]:
    """Decode-stage output of two shards: 'a' (6 rows, 2 errors) and 'sub__b' (3 rows)."""
    cfg = stage_config()
    good = good_prompts(7)
    a = pipeline_table(shard_a(), cfg.decode, "/in/a.jsonl", "a")
    b = pipeline_table(jsonl(*good[4:7]), cfg.decode, "/in/sub/b.jsonl", "sub__b")
    out_a, out_b = run_stage(DecodeStage(cfg), a, b)
    return {"a": out_a, "sub__b": out_b}


@pytest.fixture
def sink(tmp_path):
    root = tmp_path / "out"
    return ShardDatasink(str(root), StorageConfig()), filesystem(str(root), StorageConfig())[0], str(root)


def lines(table: pa.Table, *keep: int) -> pa.Table:
    """The rows at 0-based positions `keep` of a shard (their `line` numbers are 1-based)."""
    return table.filter(pc.is_in(table["line"], pa.array([k + 1 for k in keep], table.schema.field("line").type)))


def check_committed(fs, root: str, name: str, src: pa.Table) -> dict:
    outputs, errors = (read_ipc(fs, f"{root}/{d}/{name}.arrow") for d in ("outputs", "errors"))
    ok = src.filter(pc.equal(src["error"], ""))
    assert outputs.column_names == OUTPUT_COLUMNS and errors.column_names == ERROR_COLUMNS
    assert outputs.num_rows + errors.num_rows == src["shard_rows"][0].as_py() == src.num_rows
    assert outputs["id"].to_pylist() == ok["id"].to_pylist() and outputs["line"].to_pylist() == sorted(
        outputs["line"].to_pylist())
    assert outputs["output"].to_pylist() == ok["output"].to_pylist()
    assert outputs["prompt_tokens"].to_pylist() == [len(p) for p in ok["prompt_ids"].to_pylist()]
    assert errors["error"].to_pylist() == src.filter(pc.not_equal(src["error"], ""))["error"].to_pylist()
    steps = read_ipc(fs, f"{root}/traces/{name}.steps.arrow")
    tokens = read_ipc(fs, f"{root}/traces/{name}.tokens.arrow")
    per_id = dict(zip(ok["id"].to_pylist(), ok["steps_taken"].to_pylist()))
    assert {d["values"]: d["counts"] for d in pc.value_counts(steps["id"]).to_pylist()} == per_id
    assert steps.num_rows == sum(per_id.values())
    assert tokens.num_rows == sum(n * 16 for n in per_id.values())
    with fs.open(f"{root}/_done/{name}.json") as f:
        marker = json.load(f)
    assert (marker["name"], marker["rows"], marker["outputs"], marker["errors"]) == \
           (name, src.num_rows, ok.num_rows, src.num_rows - ok.num_rows)
    assert marker["nfe"] == sum(per_id.values()) and marker["step_budget"] == 16 * ok.num_rows
    assert sum(marker["exit_reasons"].values()) == ok.num_rows and len(marker["actors"]) == 1
    return marker


def test_shard_commits_when_its_last_part_lands(sink, decoded) -> None:
    ds, fs, root = sink
    a, b = decoded["a"], decoded["sub__b"]
    assert ds.write([lines(a, 0, 1, 2), lines(b, 0)], None) == []
    assert not fs.exists(f"{root}/_done") and not fs.exists(f"{root}/outputs")
    assert ds.write([lines(a, 3, 4, 5), lines(b, 1, 2)], None) == ["a", "sub__b"]
    for name, src in decoded.items():
        check_committed(fs, root, name, src)
    assert set(committed_shards(fs, root)) == {"a", "sub__b"}
    assert fs.exists(f"{root}/_parts")
    ds.on_write_complete(None)
    assert not fs.exists(f"{root}/_parts") and set(committed_shards(fs, root)) == {"a", "sub__b"}


def test_partial_shard_is_not_committed(sink, decoded) -> None:
    ds, fs, root = sink
    a, b = decoded["a"], decoded["sub__b"]
    assert ds.write([lines(a, 0, 1, 2, 3, 4), b], None) == ["sub__b"]
    assert set(committed_shards(fs, root)) == {"sub__b"} and not fs.exists(f"{root}/outputs/a.arrow")
    ds.on_write_complete(None)                      # the sweep cannot commit it either; the next run redoes it
    assert set(committed_shards(fs, root)) == {"sub__b"} and not fs.exists(f"{root}/_parts")


def test_retried_part_does_not_duplicate_rows(sink, decoded) -> None:
    ds, fs, root = sink
    a = decoded["a"]
    first = lines(a, 0, 1, 2)
    assert ds.write([first], None) == ds.write([first], None) == []
    assert ds.write([lines(a, 3, 4, 5)], None) == ["a"]
    check_committed(fs, root, "a", a)


def test_overlapping_parts_from_a_regrouped_retry(sink, decoded) -> None:
    """A retry whose rows are grouped differently writes parts that overlap the first attempt's."""
    ds, fs, root = sink
    a = decoded["a"]
    ds.write([lines(a, 0, 1, 2, 3)], None)
    assert ds.write([lines(a, 0, 1)], None) == []   # 6 rows written, but lines 4 and 5 are still missing
    assert not committed_shards(fs, root)
    assert ds.write([lines(a, 2, 3, 4, 5)], None) == ["a"]
    check_committed(fs, root, "a", a)               # no duplicated outputs or trace rows


def test_empty_input_shard_commits_as_empty(sink) -> None:
    """An empty input file (e.g. an empty Parquet part) must be committed, or the run reports it missing; it
    is a skipped shard (`empty` in its marker), not an error row."""
    ds, fs, root = sink
    cfg = stage_config()
    out = run_stage(DecodeStage(cfg), pipeline_table(b"", cfg.decode, "/in/empty.jsonl", "empty"))[0]
    assert ds.write([out], None) == ["empty"]
    marker = committed_shards(fs, root)["empty"]
    assert (marker["rows"], marker["outputs"], marker["errors"], marker["nfe"], marker["empty"]) == (0, 0, 0, 0, True)
    assert read_ipc(fs, f"{root}/errors/empty.arrow").num_rows == 0


def test_empty_blocks_write_nothing(sink) -> None:
    ds, fs, root = sink
    assert ds.write([], None) == []
    ds.on_write_complete(None)                      # nothing to sweep
    assert not fs.exists(root) or not fs.ls(root)


def test_prepare_output(sink, decoded) -> None:
    ds, fs, root = sink
    ds.write([decoded["sub__b"], lines(decoded["a"], 0, 1)], None)
    with fs.open(f"{root}/_manifest.json", "w") as f:
        f.write("{}")
    prepare_output(fs, root, overwrite=False)       # resume: keep committed shards and parts (keep_parts sorts them)
    assert set(committed_shards(fs, root)) == {"sub__b"} and fs.exists(f"{root}/_parts/a")
    assert fs.exists(f"{root}/outputs/sub__b.arrow") and fs.exists(f"{root}/_manifest.json")
    prepare_output(fs, root, overwrite=True)
    assert committed_shards(fs, root) == {} and fs.ls(root) == []
    prepare_output(fs, f"{root}/fresh", overwrite=True)
    assert fs.isdir(f"{root}/fresh")


def test_a_failed_shard_is_recorded_not_committed(sink, decoded, tmp_path) -> None:
    """The read stage's failure row (line 0) for a shard it could not open: `_failed/<name>.json`, no marker,
    nothing in outputs/ or errors/; the other shard in the same block commits; the next run clears the record."""
    import fsspec
    from stages.preprocess import preprocess_batch
    from stages.read.stage import ReadOptions, read_shards
    from driver.resume import failed_shards
    from tests.stages.helpers import MODEL
    cfg = stage_config()
    gone = str(tmp_path / "gone.jsonl")
    failure = pa.concat_tables(read_shards(pa.table({"path": [gone]}), fsspec.filesystem("file"), {gone: "c"},
                                           ReadOptions()))
    failure = run_stage(DecodeStage(cfg), preprocess_batch(failure, MODEL, cfg.decode))[0]
    ds, fs, root = sink
    block = pa.concat_tables([decoded["a"], failure], promote_options="permissive")   # helpers parse: int64 sample
    assert ds.write([block], None) == ["a"]
    assert sorted(committed_shards(fs, root)) == ["a"]
    why = failed_shards(fs, root)
    assert list(why) == ["c"] and why["c"].startswith("shard failed: FileNotFoundError: ")
    assert not fs.exists(f"{root}/outputs/c.arrow") and not fs.exists(f"{root}/errors/c.arrow")
    ds.on_write_complete(None)
    prepare_output(fs, root, overwrite=False)
    assert failed_shards(fs, root) == {} and sorted(committed_shards(fs, root)) == ["a"]


def test_shard_names_cannot_write_outside_the_output_root(sink, decoded, tmp_path) -> None:
    """Hostile input file names become safe names (stages/storage.py); a name that is not one safe path
    component is refused by the writer before anything is written."""
    from stages.storage import shard_name
    ds, fs, root = sink
    for path in ("/in/...jsonl", "/in/../../escape.jsonl", "/in/a\\..\\..\\b.jsonl"):
        name = shard_name(path, "/in")
        block = decoded["sub__b"].set_column(decoded["sub__b"].schema.get_field_index("shard_name"), "shard_name",
                                             pa.array([name] * decoded["sub__b"].num_rows))
        assert ds.write([block], None) == [name]
    for bad in ("..", "../../escaped", str(tmp_path / "abs")):
        block = decoded["sub__b"].set_column(decoded["sub__b"].schema.get_field_index("shard_name"), "shard_name",
                                             pa.array([bad] * decoded["sub__b"].num_rows))
        with pytest.raises(ValueError, match="unsafe shard name"):
            ds.write([block], None)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written and all(w.startswith("out/") for w in written), written
    assert sorted(committed_shards(fs, root)) == ["..__escape", "_..", "a__..__..__b"]


def test_interrupted_parts_are_kept_and_only_the_rows_they_lack_are_decoded(tmp_path, decoded) -> None:
    """An interrupted run left a part of shard 'a' (lines 1-3) and of 'sub__b': the rerun keeps the part
    whose fingerprint matches, reads only lines 4-6 of 'a', and the commit merges old and new parts into
    what one uninterrupted run writes."""
    import io

    from stages.preprocess import preprocess_batch
    from stages.read.stage import ReadOptions, ShardReader
    from tests.stages.helpers import MODEL

    fp = {"config": {"decode.steps": 16}, "input": {"size": 1, "etag": "x", "mtime": 1}}
    other = {"config": {"decode.steps": 8}, "input": fp["input"]}
    root = str(tmp_path / "out")
    fs = filesystem(root, StorageConfig())[0]
    interrupted = ShardDatasink(root, StorageConfig(), fingerprints={"a": fp, "sub__b": fp})
    assert interrupted.write([lines(decoded["a"], 0, 1, 2), lines(decoded["sub__b"], 0)], None) == []
    fs.pipe(f"{root}/_parts/a/000000004-1-abc-0.rows.arrow.tmp-1234", b"half a file")
    fs.makedirs(f"{root}/_parts/gone", exist_ok=True)                # a shard no longer in the input

    kept = keep_parts(fs, root, {"a": fp, "sub__b": other}, {"a", "sub__b"})
    assert set(kept) == {"a"} and len(kept["a"]) == 3                # sub__b: decoded with other settings
    assert [(line, 0) in kept["a"] for line in range(1, 7)] == [True] * 3 + [False] * 3
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{root}/_parts")) == ["a"]
    assert not fs.glob(f"{root}/_parts/a/*.tmp-*")

    cfg = stage_config()
    reader = ShardReader("/in/a.jsonl", "a", ReadOptions(), kept["a"])
    blocks = list(reader.tables(io.BytesIO(shard_a())))
    rest = pa.concat_tables(blocks)
    assert rest["line"].to_pylist() == [4, 5, 6] and rest["shard_rows"].to_pylist()[-1] == 6
    decoded_rest = run_stage(DecodeStage(cfg), preprocess_batch(rest, MODEL, cfg.decode))[0]
    rerun = ShardDatasink(root, StorageConfig(), fingerprints={"a": fp})
    assert rerun.write([decoded_rest], None) == ["a"]
    check_committed(fs, root, "a", decoded["a"])


def test_a_shard_whose_kept_parts_are_complete_commits_before_decoding(tmp_path, decoded) -> None:
    fp = {"config": {}, "input": {"size": 1}}
    root = str(tmp_path / "out")
    fs = filesystem(root, StorageConfig())[0]
    ShardDatasink(root, StorageConfig(), fingerprints={"a": fp})._write_part(fs, root, "a", decoded["a"])
    assert not committed_shards(fs, root)                            # interrupted between its part and the commit
    kept = keep_parts(fs, root, {"a": fp}, {"a"})
    assert ShardDatasink(root, StorageConfig(), fingerprints={"a": fp}).commit_ready(sorted(kept)) == ["a"]
    check_committed(fs, root, "a", decoded["a"])
    assert keep_parts(fs, root, {"a": fp}, set()) == {} and not fs.ls(f"{root}/_parts")   # committed: dropped
