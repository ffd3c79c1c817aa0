"""Read stage (stages/read/stage.py) and shard listing/naming (stages/storage.py), without Ray."""
from __future__ import annotations

import json
import posixpath
import uuid

import pyarrow as pa
import pytest

from settings.schema import StorageConfig
from stages.read.stage import ROW_FIELDS, parse_shard, shard_format
from stages.storage import check_shard_name, check_unique_names, filesystem, list_shards, shard_name
from tests.stages.helpers import SHARD_NAME, SHARD_PATH, jsonl, parse
from tests.support.files import parquet_bytes as _parquet


def test_good_rows_keep_fields_and_count_the_shard() -> None:
    rows = parse(jsonl({"id": "a", "prompt": "copy:ab="}, {"id": 7, "prompt": "rev:xy=", "max_new_tokens": 32},
                       {"id": "c", "messages": [{"role": "user", "content": "hi"}]}))
    assert [tuple(r) for r in rows] == [ROW_FIELDS] * 3
    assert [r["error"] for r in rows] == ["", "", ""]
    assert [r["id"] for r in rows] == ["a", "7", "c"]            # ids are strings
    assert [r["line"] for r in rows] == [1, 2, 3]                # 1-based file lines
    assert {r["shard_rows"] for r in rows} == {3} and {r["shard_blank_lines"] for r in rows} == {0}
    assert {(r["shard"], r["shard_name"]) for r in rows} == {(SHARD_PATH, SHARD_NAME)}
    assert rows[0]["prompt"] == "copy:ab=" and rows[0]["messages"] is None and rows[0]["max_new_tokens"] == -1
    assert rows[1]["max_new_tokens"] == 32
    assert rows[2]["prompt"] is None and json.loads(rows[2]["messages"]) == [{"role": "user", "content": "hi"}]


def test_every_bad_row_is_kept_with_its_reason() -> None:
    lines = [
        {"id": "ok", "prompt": "copy:a="},                      # line 1
        '{"id": "broken", "prompt": ',                          # 2 malformed JSON
        "   ",                                                  # 3 blank line: skipped, not a row
        "[1, 2]",                                               # 4 not an object
        {"prompt": "copy:b="},                                  # 5 missing id
        {"id": "", "prompt": "copy:b="},                        # 6 empty id
        {"id": "n", "prompt": 5},                               # 7 non-string prompt
        {"id": "none"},                                         # 8 no prompt, no messages
        {"id": "ok", "prompt": "copy:c="},                      # 9 duplicate id
        {"id": "b", "prompt": "x", "max_new_tokens": True},     # 10
        {"id": "neg", "prompt": "x", "max_new_tokens": -16},    # 11
        {"id": "zero", "prompt": "x", "max_new_tokens": 0},     # 12
        {"id": "flt", "prompt": "x", "max_new_tokens": 16.5},   # 13
        {"id": "str", "prompt": "x", "max_new_tokens": "16"},   # 14
        {"max_new_tokens": 0},                                  # 15 every problem: id, prompt, max_new_tokens
        {"id": "last", "prompt": "copy:z="},                    # 16
    ]
    rows = parse(jsonl(*lines))
    assert len(rows) == len(lines) - 1
    assert [r["line"] for r in rows] == [n for n in range(1, len(lines) + 1) if n != 3]
    assert {r["shard_rows"] for r in rows} == {len(lines) - 1} and {r["shard_blank_lines"] for r in rows} == {1}
    err = {r["line"]: r["error"] for r in rows}
    assert err[1] == "" and err[16] == ""
    assert err[2].startswith("line 2: malformed JSON")
    assert err[4] == "line 4: a row must be a JSON object, got list"
    assert err[5] == err[6] == "missing id"
    assert err[7] == "prompt must be a string, got int"
    assert err[8] == "missing prompt (need 'prompt' or 'messages')"
    assert err[9] == "duplicate id 'ok' in shard"
    for line, bad in zip(range(10, 15), (True, -16, 0, 16.5, "16")):
        assert err[line] == f"max_new_tokens must be a positive integer, got {bad!r}", line
    assert err[15] == ("missing id; missing prompt (need 'prompt' or 'messages'); "
                       "max_new_tokens must be a positive integer, got 0")


def test_blank_lines_anywhere_are_skipped_and_counted() -> None:
    rows = parse(b'\n{"id": "a", "prompt": "p"}\n  \n\n{"id": "b", "prompt": "q"}\n\n\n')
    assert [(r["id"], r["line"], r["error"]) for r in rows] == [("a", 2, ""), ("b", 5, "")]
    assert {(r["shard_rows"], r["shard_blank_lines"]) for r in rows} == {(2, 5)}
    only_blank = parse(b"\n \n")
    assert [(r["line"], r["shard_blank_lines"], r["error"]) for r in only_blank] == [(1, 2, "line 1: empty shard (no rows)")]


def test_integral_floats_and_nan_for_max_new_tokens() -> None:
    """What pandas writes for an int column with gaps: 16.0 and NaN (JSON NaN, or a Parquet null)."""
    rows = parse(b'{"id": "a", "prompt": "p", "max_new_tokens": 16.0}\n{"id": "b", "prompt": "p", "max_new_tokens": NaN}\n')
    assert [(r["max_new_tokens"], r["error"]) for r in rows] == [(16, ""), (-1, "")]


def test_json_array_file_is_read_as_records() -> None:
    recs = [{"id": f"r{i}", "prompt": f"copy:{i}="} for i in range(10)]
    rows = parse(json.dumps(recs, indent=2).encode(), path="/in/arr.json", name="arr")
    assert [(r["id"], r["line"], r["error"]) for r in rows] == [(f"r{i}", i + 1, "") for i in range(10)]
    jsonl_in_json = parse(jsonl(*recs[:2]), path="/in/lines.json", name="lines")      # JSONL named .json
    assert [r["id"] for r in jsonl_in_json] == ["r0", "r1"] and not any(r["error"] for r in jsonl_in_json)
    broken = parse(b'[{"id": "a", "prompt": "p"},\n {"id": ', path="/in/bad.json", name="bad")
    assert len(broken) == 1 and broken[0]["error"].startswith("line 2: malformed JSON array")
    assert parse(b'[{"id": "a", "prompt": "p"}]', path="/in/x.jsonl")[0]["error"] == \
        "line 1: a row must be a JSON object, got list"                             # .jsonl: one row per line


def test_duplicate_of_a_duplicate_and_first_kept() -> None:
    rows = parse(jsonl({"id": "d", "prompt": "a"}, {"id": "d", "prompt": "b"}, {"id": "d", "prompt": "c"}))
    assert [r["error"] for r in rows] == ["", "duplicate id 'd' in shard", "duplicate id 'd' in shard"]


def test_crlf_and_missing_final_newline() -> None:
    rows = parse(b'{"id": "a", "prompt": "p"}\r\n{"id": "b", "prompt": "q"}')
    assert [(r["id"], r["error"], r["shard_rows"]) for r in rows] == [("a", "", 2), ("b", "", 2)]


def test_unicode_line_separators_inside_a_string_do_not_split_the_row() -> None:
    """JSON allows raw U+2028/U+2029/U+0085 in strings (json.dumps(ensure_ascii=False) writes them);
    JSONL rows are separated by '\\n' only."""
    prompt = "a\u2028b\u2029c\x85d"
    data = (json.dumps({"id": "u", "prompt": prompt}, ensure_ascii=False) + "\n").encode()
    rows = parse(data)
    assert [(r["id"], r["error"], r["prompt"], r["shard_rows"]) for r in rows] == [("u", "", prompt, 1)]


def test_parquet_shard() -> None:
    table = pa.table({"id": ["p0", "p1", "p2", "p0"], "prompt": ["copy:a=", None, "rev:ab=", "x"],
                      "max_new_tokens": [None, 16, 32, None]})
    rows = parse(_parquet(table), path="/in/part.parquet", name="part")
    assert [r["id"] for r in rows] == ["p0", "p1", "p2", "p0"]
    assert [r["line"] for r in rows] == [1, 2, 3, 4] and {r["shard_rows"] for r in rows} == {4}
    assert [r["error"] for r in rows] == ["", "missing prompt (need 'prompt' or 'messages')", "",
                                          "duplicate id 'p0' in shard"]
    assert [r["max_new_tokens"] for r in rows] == [-1, 16, 32, -1]
    assert {r["shard_name"] for r in rows} == {"part"}


def test_unreadable_parquet_is_one_error_row() -> None:
    rows = parse(b"this is not parquet", path="/in/bad.parquet", name="bad")
    assert len(rows) == 1
    assert rows[0]["error"].startswith("line 1: unreadable shard: ")
    assert (rows[0]["shard_rows"], rows[0]["line"], rows[0]["shard_name"]) == (1, 1, "bad")


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_empty_shard_is_one_error_row(kind: str) -> None:
    """A shard with no rows must still yield a row, or the writer never commits it and the run fails."""
    data = b"" if kind == "jsonl" else _parquet(pa.table({"id": pa.array([], pa.string())}))
    rows = parse(data, path=f"/in/empty.{kind}", name="empty")
    assert [(r["line"], r["shard_rows"], r["error"]) for r in rows] == [(1, 1, "line 1: empty shard (no rows)")]


def test_format_detection_and_override() -> None:
    assert shard_format("a/b.parquet") == shard_format("b.pq") == "parquet"
    assert shard_format("b.jsonl") == "jsonl" and shard_format("b.json") == "json"
    assert shard_format("b.jsonl", "parquet") == "parquet"
    data = _parquet(pa.table({"id": ["x"], "prompt": ["copy:a="]}))
    rows = parse_shard({"bytes": data, "path": "/in/blob.bin"}, {}, "parquet")
    assert [(r["id"], r["error"], r["shard_name"]) for r in rows] == [("x", "", "blob.bin")]   # not a path


def test_name_lookup_falls_back_to_the_path_without_scheme() -> None:
    rows = parse_shard({"bytes": jsonl({"id": "a", "prompt": "p"}), "path": "s3://bkt/in/a.jsonl"},
                       {"bkt/in/a.jsonl": "a"})
    assert rows[0]["shard_name"] == "a" and rows[0]["shard"] == "s3://bkt/in/a.jsonl"


# ---------------------------------------------------------------- storage: naming and listing


def test_shard_name() -> None:
    assert shard_name("/data/in/a.jsonl", "/data/in") == "a"
    assert shard_name("/data/in/sub/dir/b.parquet", "/data/in/") == "sub__dir__b"
    assert shard_name("bkt/in/c.jsonl.gz", "bkt/in") == "c"
    assert shard_name("bkt/in/d.pq", "bkt") == "in__d"
    assert shard_name("/elsewhere/e.json", "/data/in") == "e"        # not under root: basename
    assert shard_name("f.jsonl", "") == "f"
    assert shard_name("/data/in/g.txt", "/data/in") == "g.txt"


def listed(url: str) -> tuple[list[str], str]:
    return list_shards(*filesystem(url, StorageConfig()))


@pytest.fixture
def mem_root():
    fs, _ = filesystem("memory://", StorageConfig())
    root = f"/t-{uuid.uuid4().hex[:8]}"
    for rel in ("a.jsonl", "b.jsonl", "c.parquet", "notes.txt", "sub/d.jsonl", "sub/e.pq"):
        fs.pipe(f"{root}/{rel}", b"{}\n")
    yield root
    fs.rm(root, recursive=True)


def test_list_shards_glob_directory_and_file(mem_root: str) -> None:
    files, root = listed(f"memory:/{mem_root}/*.jsonl")
    assert files == [f"{mem_root}/a.jsonl", f"{mem_root}/b.jsonl"] and root == mem_root
    files, root = listed(f"memory:/{mem_root}/su*/*")
    assert files == [f"{mem_root}/sub/d.jsonl", f"{mem_root}/sub/e.pq"] and root == mem_root
    assert [shard_name(f, root) for f in files] == ["sub__d", "sub__e"]
    files, root = listed(f"memory:/{mem_root}")                         # a directory: shard extensions only
    assert files == sorted(f"{mem_root}/{r}" for r in ("a.jsonl", "b.jsonl", "c.parquet", "sub/d.jsonl", "sub/e.pq"))
    assert [shard_name(f, root) for f in files] == ["a", "b", "c", "sub__d", "sub__e"]
    files, root = listed(f"memory:/{mem_root}/sub/d.jsonl")
    assert files == [f"{mem_root}/sub/d.jsonl"] and root == f"{mem_root}/sub"
    assert shard_name(files[0], root) == "d"


def test_list_shards_nothing_found(mem_root: str) -> None:
    with pytest.raises(FileNotFoundError, match="no input shards at"):
        listed(f"memory:/{mem_root}/missing.jsonl")
    with pytest.raises(FileNotFoundError, match="no input shards match"):
        listed(f"memory:/{mem_root}/*.csv")
    filesystem("memory://", StorageConfig())[0].pipe(f"{mem_root}/only-text/readme.txt", b"x")
    with pytest.raises(FileNotFoundError, match="no input shards match"):
        listed(f"memory:/{mem_root}/only-text")


@pytest.mark.parametrize("path, root", [
    ("/data/in/...jsonl", "/data/in"), ("/data/in/..jsonl", "/data/in"), ("/data/in/.jsonl", "/data/in"),
    ("/data/in/../../etc/x.jsonl", "/data/in"), ("/data/in/a/../../../b.jsonl", "/data/in"),
    ("/etc/passwd.jsonl", ""), ("/etc/passwd.jsonl", "/data/in"), ("bkt/in/a\\..\\..\\b.jsonl", "bkt/in"),
    ("bkt/in/..", "bkt/in"), ("s3://bkt/in/./../c.parquet", "s3://bkt/in"),
])
def test_shard_names_are_one_safe_path_component(path: str, root: str) -> None:
    name = shard_name(path, root)
    assert check_shard_name(name) == name
    out = posixpath.normpath(posixpath.join("/out/outputs", f"{name}.arrow"))
    assert posixpath.dirname(out) == "/out/outputs"
    parts = posixpath.normpath(posixpath.join("/out/_parts", name))
    assert posixpath.dirname(parts) == "/out/_parts"


@pytest.mark.parametrize("bad", ["..", ".", "", "../x", "/abs", "a/b", "a\\b", "x\0y"])
def test_unsafe_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="unsafe shard name"):
        check_shard_name(bad)


def test_two_shards_with_one_output_name_are_refused() -> None:
    names = {p: shard_name(p, "/in") for p in ("/in/a/b.jsonl", "/in/a__b.jsonl")}
    with pytest.raises(ValueError, match=r"would both be written as 'a__b'"):
        check_unique_names(names)
