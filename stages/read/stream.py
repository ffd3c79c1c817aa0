"""Bounded reads of one open shard: records in chunks, so memory does not grow with the shard's size.

JSONL (plain, or compressed and decompressed on the way) comes as bounded lines (stages/read/text_lines.py) and
is handed on in chunks of at most `chunk_rows` rows or `chunk_bytes` bytes, each line parsed on its own:
invalid UTF-8, malformed JSON or an overlong line is that line's error, never its neighbours'. Parquet is
read by record batches of at most `chunk_rows` rows (one row group in memory at a time). A `.json` array
file is one document and is read whole. JSONL rows end at "\\n" only, so U+2028 and friends inside a
string, which JSON allows raw, never split a row.
"""
from __future__ import annotations

import json
from typing import Any, BinaryIO, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from stages.read.text_lines import UTF8_BOM, Overlong

#: (1-based line or record number, record, parse error or "blank")
Record = tuple[int, Any, str]


def jsonl_chunks(lines: Iterator[bytes | Overlong], chunk_rows: int, chunk_bytes: int) -> Iterator[list[Record]]:
    """Chunks of JSONL records from `lines` (stages/read/text_lines.py `bounded_lines`)."""
    chunk: list[Record] = []
    size = 0
    for number, raw in enumerate(lines, start=1):
        chunk.append(json_line(number, raw))
        size += 0 if isinstance(raw, Overlong) else len(raw)
        if len(chunk) >= chunk_rows or size >= chunk_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def json_line(number: int, raw: bytes | Overlong) -> Record:
    """One JSONL line's record, or why it is not one. A UTF-8 BOM at a line's start is dropped (files
    concatenated from exports carry one per file); bytes that are not UTF-8 make the line an error."""
    if isinstance(raw, Overlong):
        return number, None, (f"line too long: {raw.size} bytes > input.max_line_mb ({raw.limit} bytes); "
                              f"read past, not parsed")
    raw = raw.removeprefix(UTF8_BOM)
    if not raw.strip():
        return number, None, "blank"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return number, None, f"invalid UTF-8 at byte {e.start + 1} of the line ({raw[e.start:e.end]!r})"
    try:
        return number, json.loads(text), ""
    except json.JSONDecodeError as e:
        return number, None, f"malformed JSON: {e.msg} at column {e.colno}"


def json_array(data: bytes) -> Iterator[Record]:
    """Records of a `.json` file holding one array."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        yield 1, None, f"invalid UTF-8 at byte {e.start + 1} of the file ({data[e.start:e.end]!r})"
        return
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


def parquet_batches(f: BinaryIO, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches of at most `chunk_rows` rows, read row group by row group."""
    yield from pq.ParquetFile(f).iter_batches(batch_size=chunk_rows)
