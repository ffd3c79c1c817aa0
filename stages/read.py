"""Read stage: turn one input shard (JSONL or Parquet bytes) into prompt rows, never failing on a row.

Ray Data's `read_binary_files` reads each shard whole (one row per file, through the configured fsspec
filesystem) and `parse_shard` is flat-mapped over it. Parsing ourselves rather than with
`read_json` is deliberate: Ray's JSON reader fails a whole block on one malformed line and loses line
numbers, while we must report each bad line in errors/ and know every shard's row total to commit the
shard atomically. Duplicate ids are detected here because only this stage sees a whole shard.

`line` is 1-based everywhere (column and messages): the file line for JSONL (blank lines are skipped,
not rows, and counted in `shard_blank_lines`), the record number for Parquet and JSON-array files.
A `.json` file whose first non-blank character is `[` is one JSON array of records; otherwise JSONL.
"""
from __future__ import annotations

import io
import json
from typing import Any, Iterator

import pyarrow.parquet as pq

#: Columns every row carries from here on (decode and write add theirs).
ROW_FIELDS = ("shard", "shard_name", "shard_rows", "shard_blank_lines", "line", "id", "prompt", "messages",
              "max_new_tokens", "error")


def _max_new_tokens(value: Any) -> tuple[int, str]:
    """(max_new_tokens or -1 when absent, problem). Integral floats (16.0, what pandas writes for an int
    column with gaps) are accepted and NaN counts as absent."""
    if value is None or (isinstance(value, float) and value != value):
        return -1, ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return -1, f"max_new_tokens must be a positive integer, got {value!r}"
    return value, ""


def _row(shard: str, name: str, line: int, rec: Any) -> dict:
    """One prompt row; `error` lists every problem found, joined by '; '."""
    row = {"shard": shard, "shard_name": name, "shard_rows": 0, "shard_blank_lines": 0, "line": line, "id": "",
           "prompt": None, "messages": None, "max_new_tokens": -1, "error": ""}
    if not isinstance(rec, dict):
        row["error"] = f"line {line}: a row must be a JSON object, got {type(rec).__name__}"
        return row
    problems = []
    rid = rec.get("id")
    row["id"] = "" if rid is None else str(rid)
    if row["id"] == "":
        problems.append("missing id")
    prompt, messages = rec.get("prompt"), rec.get("messages")
    if prompt is not None and not isinstance(prompt, str):
        problems.append(f"prompt must be a string, got {type(prompt).__name__}")
    elif messages is not None:
        row["messages"] = json.dumps(messages)
    elif prompt is None:
        problems.append("missing prompt (need 'prompt' or 'messages')")
    row["prompt"] = prompt if isinstance(prompt, str) else None
    row["max_new_tokens"], problem = _max_new_tokens(rec.get("max_new_tokens"))
    problems += [problem] if problem else []
    row["error"] = "; ".join(problems)
    return row


def _json_lines(text: str) -> Iterator[tuple[int, Any, str]]:
    # JSONL rows end at "\n" only: str.splitlines() would also split on U+2028, U+2029, U+0085 etc.,
    # which JSON allows raw inside strings (json.dumps(ensure_ascii=False) writes them).
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last row; it does not start an empty one
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            yield number, None, "blank"
            continue
        try:
            yield number, json.loads(raw), ""
        except json.JSONDecodeError as e:
            yield number, None, f"malformed JSON: {e.msg} at column {e.colno}"


def _json_array(text: str) -> Iterator[tuple[int, Any, str]]:
    try:
        records = json.loads(text)
    except json.JSONDecodeError as e:
        yield e.lineno, None, f"malformed JSON array: {e.msg} at line {e.lineno} column {e.colno}"
        return
    if not isinstance(records, list):
        yield 1, None, f"a .json shard must hold an array of records (or JSONL), got {type(records).__name__}"
        return
    for number, rec in enumerate(records, start=1):
        yield number, rec, ""


def _records(data: bytes, fmt: str) -> Iterator[tuple[int, Any, str]]:
    """(1-based line or record number, record, parse error or "blank") per row of a shard."""
    if fmt == "parquet":
        for number, rec in enumerate(pq.read_table(io.BytesIO(data)).to_pylist(), start=1):
            yield number, rec, ""
        return
    text = data.decode("utf-8", errors="replace")
    if fmt == "json" and text.lstrip().startswith("["):
        yield from _json_array(text)
    else:
        yield from _json_lines(text)


def shard_format(path: str, configured: str = "auto") -> str:
    """parquet, json (an array file, or JSONL in a .json file) or jsonl."""
    if configured != "auto":
        return configured
    if path.endswith((".parquet", ".pq")):
        return "parquet"
    return "json" if path.endswith(".json") else "jsonl"


def parse_shard(item: dict, names: dict[str, str], fmt: str = "auto") -> list[dict]:
    """All rows of one shard (`item` = {"bytes", "path"} from read_binary_files), errors included."""
    path = item["path"]
    name = names.get(path) or names.get(path.split("://", 1)[-1], path)
    rows, seen = [], set()
    try:
        records = list(_records(item["bytes"], shard_format(path, fmt)))
    except Exception as e:  # an unreadable Parquet file: one error row for the shard
        records = [(1, None, f"unreadable shard: {type(e).__name__}: {e}")]
    blank = sum(err == "blank" for _, _, err in records)
    records = [r for r in records if r[2] != "blank"]
    if not records:  # an empty file: one error row, or the shard is never committed and the run fails
        records = [(1, None, "empty shard (no rows)")]
    for line, rec, err in records:
        row = _row(path, name, line, rec)
        if err:
            row["error"] = f"line {line}: {err}"
        if row["id"] and row["id"] in seen:
            row["error"] = row["error"] or f"duplicate id {row['id']!r} in shard"
        seen.add(row["id"])
        rows.append(row)
    for row in rows:
        row["shard_rows"], row["shard_blank_lines"] = len(rows), blank
    return rows
