"""Read stage: turn one input shard (JSONL or Parquet bytes) into prompt rows, never failing on a row.

Ray Data's `read_binary_files` reads each shard whole (one row per file, through the configured fsspec
filesystem) and `parse_shard` is flat-mapped over it. Parsing ourselves rather than with
`read_json` is deliberate: Ray's JSON reader fails a whole block on one malformed line and loses line
numbers, while we must report each bad line in errors/ and know every shard's row total to commit the
shard atomically. Duplicate ids are detected here because only this stage sees a whole shard.
"""
from __future__ import annotations

import io
import json
from typing import Any, Iterator

import pyarrow.parquet as pq

#: Columns every row carries from here on (decode and write add theirs).
ROW_FIELDS = ("shard", "shard_name", "shard_rows", "line", "id", "prompt", "messages", "max_new_tokens", "error")


def _row(shard: str, name: str, line: int, rec: Any) -> dict:
    row = {"shard": shard, "shard_name": name, "shard_rows": 0, "line": line, "id": "", "prompt": None,
           "messages": None, "max_new_tokens": -1, "error": ""}
    if not isinstance(rec, dict):
        row["error"] = f"line {line + 1}: a row must be a JSON object, got {type(rec).__name__}"
        return row
    rid = rec.get("id")
    row["id"] = "" if rid is None else str(rid)
    if rid is None or row["id"] == "":
        row["error"] = "missing id"
    prompt, messages = rec.get("prompt"), rec.get("messages")
    if prompt is not None and not isinstance(prompt, str):
        row["error"] = row["error"] or f"prompt must be a string, got {type(prompt).__name__}"
    elif messages is not None:
        row["messages"] = json.dumps(messages)
    row["prompt"] = prompt if isinstance(prompt, str) else None
    mnt = rec.get("max_new_tokens")
    if mnt is not None:
        if isinstance(mnt, bool) or not isinstance(mnt, int) or mnt <= 0:
            row["error"] = row["error"] or f"max_new_tokens must be a positive integer, got {mnt!r}"
        else:
            row["max_new_tokens"] = mnt
    return row


def _records(data: bytes, fmt: str) -> Iterator[tuple[Any, str]]:
    """(record, parse error) per row of a shard."""
    if fmt == "parquet":
        for rec in pq.read_table(io.BytesIO(data)).to_pylist():
            yield rec, ""
        return
    # JSONL rows end at "\n" only: str.splitlines() would also split on U+2028, U+2029, U+0085 etc.,
    # which JSON allows raw inside strings (json.dumps(ensure_ascii=False) writes them).
    lines = data.decode("utf-8", errors="replace").split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last row; it does not start an empty one
    for raw in lines:
        if not raw.strip():
            yield None, "empty line"
            continue
        try:
            yield json.loads(raw), ""
        except json.JSONDecodeError as e:
            yield None, f"malformed JSON: {e.msg} at column {e.colno}"


def shard_format(path: str, configured: str = "auto") -> str:
    if configured != "auto":
        return configured
    return "parquet" if path.endswith((".parquet", ".pq")) else "jsonl"


def parse_shard(item: dict, names: dict[str, str], fmt: str = "auto") -> list[dict]:
    """All rows of one shard (`item` = {"bytes", "path"} from read_binary_files), errors included."""
    path = item["path"]
    name = names.get(path) or names.get(path.split("://", 1)[-1], path)
    rows, seen = [], set()
    try:
        records = list(_records(item["bytes"], shard_format(path, fmt)))
    except Exception as e:  # an unreadable Parquet file: one error row for the shard
        records = [(None, f"unreadable shard: {type(e).__name__}: {e}")]
    if not records:  # an empty file: one error row, or the shard is never committed and the run fails
        records = [(None, "empty shard (no rows)")]
    for line, (rec, err) in enumerate(records):
        row = _row(path, name, line, rec)
        if err:
            row["error"] = f"line {line + 1}: {err}"
        if not row["error"] and row["prompt"] is None and row["messages"] is None:
            row["error"] = "missing prompt (need 'prompt' or 'messages')"
        if row["id"] and row["id"] in seen:
            row["error"] = row["error"] or f"duplicate id {row['id']!r} in shard"
        seen.add(row["id"])
        rows.append(row)
    for row in rows:
        row["shard_rows"] = len(rows)
    return rows
