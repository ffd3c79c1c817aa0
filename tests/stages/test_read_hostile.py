"""Hostile and odd input (issue 13, item 1): every line is a row or that row's error with its reason,
its neighbours untouched; a shard the storage cannot give is a failed shard, not a crash. Without Ray."""
from __future__ import annotations

import bz2
import codecs
import gzip
import io
import json
import lzma

import fsspec
import pyarrow as pa
import pytest

from stages.read.stage import FAILED_LINE, ReadOptions, parse_shard, read_shards
from stages.read.text_lines import Overlong, bounded_lines
from tests.stages.helpers import jsonl, parse
from tests.support.files import parquet_bytes as _parquet, zstd as _zstd

GOOD = [{"id": f"r{i}", "prompt": f"copy:{i}="} for i in range(3)]


def _read(path, opts: ReadOptions | None = None, fs=None) -> list[dict]:
    fs = fs or fsspec.filesystem("file")
    blocks = list(read_shards(pa.table({"path": [str(path)]}), fs, {str(path): "s"}, opts or ReadOptions(chunk_rows=2)))
    return pa.concat_tables(blocks, promote_options="default").to_pylist()


def _summary(rows: list[dict]) -> list[tuple]:
    return [(r["line"], r["id"], r["error"]) for r in rows]


def test_utf8_bom_at_the_start_keeps_the_first_row() -> None:
    rows = parse(codecs.BOM_UTF8 + jsonl(*GOOD))
    assert _summary(rows) == [(1, "r0", ""), (2, "r1", ""), (3, "r2", "")]


def test_bom_and_crlf_from_a_windows_export_and_a_bom_per_concatenated_file(tmp_path) -> None:
    one = codecs.BOM_UTF8 + jsonl(*GOOD[:2]).replace(b"\n", b"\r\n")
    two = codecs.BOM_UTF8 + jsonl(GOOD[2]).replace(b"\n", b"\r\n")
    (tmp_path / "w.jsonl").write_bytes(one + two)                 # `cat a.jsonl b.jsonl` of two exports
    rows = _read(tmp_path / "w.jsonl")
    assert _summary(rows) == [(1, "r0", ""), (2, "r1", ""), (3, "r2", "")]
    assert [r["prompt"] for r in rows] == ["copy:0=", "copy:1=", "copy:2="]   # no stray \r


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_files_with_a_bom_are_transcoded(tmp_path, encoding) -> None:
    text = jsonl(*GOOD, {"id": "ü", "prompt": "naïve ✓"}).decode()
    data = text.encode(encoding) if encoding != "utf-16-be" else codecs.BOM_UTF16_BE + text.encode(encoding)
    (tmp_path / "u.jsonl").write_bytes(data)
    rows = _read(tmp_path / "u.jsonl", ReadOptions(chunk_rows=2))
    assert _summary(rows) == [(1, "r0", ""), (2, "r1", ""), (3, "r2", ""), (4, "ü", "")]
    assert rows[3]["prompt"] == "naïve ✓"


def test_invalid_utf8_makes_only_its_line_an_error() -> None:
    data = jsonl(GOOD[0]) + b'{"id": "bad", "prompt": "caf\xe9 \xff"}\n' + jsonl(*GOOD[1:])
    rows = parse(data)
    assert [(r["line"], r["id"]) for r in rows] == [(1, "r0"), (2, ""), (3, "r1"), (4, "r2")]
    assert [r["error"] for r in rows] == ["", "line 2: invalid UTF-8 at byte 29 of the line (b'\\xe9')", "", ""]
    assert {r["shard_rows"] for r in rows} == {4}


def test_invalid_utf8_in_a_json_array_file_is_one_clear_error() -> None:
    rows = parse(b'[{"id": "a", "prompt": "\xff"}]', path="/in/arr.json", name="arr")
    assert _summary(rows) == [(1, "", "line 1: invalid UTF-8 at byte 25 of the file (b'\\xff')")]
    bom = parse(codecs.BOM_UTF8 + json.dumps(GOOD).encode(), path="/in/arr.json", name="arr")
    assert _summary(bom) == [(1, "r0", ""), (2, "r1", ""), (3, "r2", "")]


def test_an_overlong_line_is_its_error_and_neighbours_keep_their_numbers() -> None:
    big = json.dumps({"id": "big", "prompt": "x" * 5000}).encode()
    data = jsonl(GOOD[0]) + big + b"\n" + jsonl(GOOD[1]) + big          # the last one without a newline
    opts = ReadOptions(chunk_rows=2, max_line_bytes=1000)
    rows = parse_shard({"bytes": data, "path": "/in/s.jsonl"}, {"/in/s.jsonl": "s"}, opts=opts)
    assert [(r["line"], r["id"]) for r in rows] == [(1, "r0"), (2, ""), (3, "r1"), (4, "")]
    why = f"line too long: {len(big)} bytes > input.max_line_mb (1000 bytes); read past, not parsed"
    assert [r["error"] for r in rows] == ["", f"line 2: {why}", "", f"line 4: {why}"]


def test_bounded_lines_never_joins_more_than_the_limit() -> None:
    blocks = [b"ab\ncd", b"efgh", b"ij\n", b"k" * 7, b"\nl"]
    assert list(bounded_lines(iter(blocks), 8)) == [b"ab", b"cdefghij", b"k" * 7, b"l"]
    assert list(bounded_lines(iter(blocks), 6)) == [b"ab", Overlong(8, 6), Overlong(7, 6), b"l"]


@pytest.mark.parametrize("suffix, compress", [("gz", gzip.compress), ("zst", _zstd), ("bz2", bz2.compress),
                                              ("xz", lzma.compress)])
def test_compressed_shards_by_extension_bom_and_bad_bytes_included(tmp_path, suffix, compress) -> None:
    data = codecs.BOM_UTF8 + jsonl(GOOD[0]) + b'{"id": "x", "prompt": "\xc3"}\n' + jsonl(*GOOD[1:])
    (tmp_path / f"c.jsonl.{suffix}").write_bytes(compress(data))
    rows = _read(tmp_path / f"c.jsonl.{suffix}")
    assert [(r["line"], r["id"], r["error"][:22]) for r in rows] == [
        (1, "r0", ""), (2, "", "line 2: invalid UTF-8 "), (3, "r1", ""), (4, "r2", "")]


def test_a_truncated_gzip_keeps_the_rows_before_and_reports_the_rest(tmp_path) -> None:
    """Bad bytes are the content's problem: the rows read stay, one error row says why the rest is missing."""
    data = gzip.compress(jsonl(*[{"id": f"r{i}", "prompt": f"copy:{i * 7919 % 100003}="} for i in range(20000)]))
    (tmp_path / "t.jsonl.gz").write_bytes(data[: len(data) // 2])
    rows = _read(tmp_path / "t.jsonl.gz", ReadOptions(chunk_rows=16))
    good, last = rows[:-1], rows[-1]
    assert good and all(r["error"] == "" for r in good) and [r["line"] for r in good] == list(range(1, len(good) + 1))
    assert last["line"] == len(good) + 1 and last["error"].startswith(f"line {last['line']}: unreadable shard: ")
    assert last["line"] != FAILED_LINE


# ---------------------------------------------------------------- Parquet columns
def _pq_rows(table: pa.Table) -> list[tuple]:
    return _summary(parse(_parquet(table), path="/in/p.parquet", name="p"))


def test_parquet_without_the_prompt_column_says_which_columns_it_has() -> None:
    rows = _pq_rows(pa.table({"id": ["a", "b"], "text": ["x", "y"]}))
    why = "missing prompt (need 'prompt' or 'messages') (the file has no column 'prompt', 'messages'; its columns: id, text)"
    assert rows == [(1, "a", why), (2, "b", why)]
    no_id = _pq_rows(pa.table({"prompt": ["x"]}))
    assert no_id == [(1, "", "missing id (the file has no column 'id'; its columns: prompt)")]


def test_parquet_prompt_of_the_wrong_type_or_null_is_each_rows_error() -> None:
    assert _pq_rows(pa.table({"id": ["a", "b"], "prompt": [1, None]})) == [
        (1, "a", "prompt must be a string, got int"), (2, "b", "missing prompt (need 'prompt' or 'messages')")]
    assert _pq_rows(pa.table({"id": ["a"], "prompt": [["x", "y"]]})) == [(1, "a", "prompt must be a string, got list")]
    assert _pq_rows(pa.table({"id": [1.5], "prompt": [{"k": 1}]})) == [(1, "1.5", "prompt must be a string, got dict")]


def test_parquet_binary_dictionary_and_large_string_prompts_are_text() -> None:
    table = pa.table({"id": pa.array([b"a", b"b", b"\xff"], pa.binary()),
                      "prompt": pa.array([b"copy:a=", b"\xfe", b"x"], pa.binary()),
                      "big": pa.array(["u", "v", "w"], pa.large_string())})
    assert _pq_rows(table) == [(1, "a", ""), (2, "b", "prompt is binary, not UTF-8 text (invalid byte at 1)"),
                               (3, "", "id is binary, not UTF-8 text (invalid byte at 1)")]
    coded = pa.table({"id": ["a", "b"], "prompt": pa.array(["copy:a=", "rev:b="]).dictionary_encode()})
    assert _pq_rows(coded) == [(1, "a", ""), (2, "b", "")]
    assert [r["prompt"] for r in parse(_parquet(coded), path="/in/p.parquet")] == ["copy:a=", "rev:b="]


# ---------------------------------------------------------------- shards the storage cannot give
def test_a_shard_that_vanished_after_listing_is_one_failure_row(tmp_path) -> None:
    rows = _read(tmp_path / "gone.jsonl")
    assert [(r["line"], r["shard_name"], r["shard_rows"]) for r in rows] == [(FAILED_LINE, "s", 0)]
    assert rows[0]["error"].startswith("shard failed: FileNotFoundError: ")


class _Flaky:
    """A file whose storage fails after `good` bytes (a connection lost mid-read)."""

    def __init__(self, data: bytes, good: int) -> None:
        self.buf, self.good = io.BytesIO(data), good

    def read(self, n=-1):
        if self.buf.tell() >= self.good:
            raise ConnectionResetError("connection reset by peer")
        return self.buf.read(min(n if n >= 0 else 1 << 30, self.good - self.buf.tell()))

    def close(self):
        pass


class _FlakyFs:
    def __init__(self, data: bytes, good: int) -> None:
        self.data, self.good = data, good

    def open(self, path, mode="rb"):
        return _Flaky(self.data, self.good)


@pytest.mark.parametrize("suffix", ["jsonl", "jsonl.gz"])
def test_storage_failing_mid_read_fails_the_shard_not_its_rows(suffix) -> None:
    data = jsonl(*[{"id": f"r{i}", "prompt": "p" * 100} for i in range(5000)])
    data = gzip.compress(data) if suffix.endswith("gz") else data
    rows = _read(f"/in/x.{suffix}", ReadOptions(chunk_rows=256), fs=_FlakyFs(data, len(data) // 2))
    assert rows[-1]["line"] == FAILED_LINE
    assert rows[-1]["error"] == "shard failed: ConnectionResetError: connection reset by peer"
    assert all(r["error"] == "" and r["shard_rows"] == 0 for r in rows[:-1])   # never a complete shard
