"""Bounded reads of one open shard: records in chunks, so memory does not grow with the shard's size.

JSONL (plain, or compressed and decompressed by fsspec on the way) is read line by line and handed on in
chunks of at most `chunk_rows` rows or `chunk_bytes` bytes; Parquet by record batches of at most
`chunk_rows` rows (one row group in memory at a time). A `.json` array file is one document and is read
whole. JSONL rows end at "\\n" only (binary line iteration), so U+2028 and friends inside a string, which
JSON allows raw, never split a row.
"""
from __future__ import annotations

import json
from typing import Any, BinaryIO, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

#: (1-based line or record number, record, parse error or "blank")
Record = tuple[int, Any, str]


def jsonl_chunks(f: BinaryIO, chunk_rows: int, chunk_bytes: int, first: bytes = b"") -> Iterator[list[Record]]:
    """Chunks of JSONL records; `first` is data already read from `f` (format sniffing)."""
    chunk: list[Record] = []
    size = 0
    lines = _lines(f, first)
    for number, raw in enumerate(lines, start=1):
        chunk.append(_json_line(number, raw))
        size += len(raw)
        if len(chunk) >= chunk_rows or size >= chunk_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _lines(f: BinaryIO, first: bytes) -> Iterator[bytes]:
    if first:
        head = first.split(b"\n")
        for line in head[:-1]:
            yield line + b"\n"
        rest = head[-1] + f.readline()
        if rest:
            yield rest
    yield from f


def _json_line(number: int, raw: bytes) -> Record:
    if not raw.strip():
        return number, None, "blank"
    try:
        return number, json.loads(raw.decode("utf-8", errors="replace")), ""
    except json.JSONDecodeError as e:
        return number, None, f"malformed JSON: {e.msg} at column {e.colno}"


def json_array(data: bytes) -> Iterator[Record]:
    """Records of a `.json` file holding one array."""
    try:
        records = json.loads(data.decode("utf-8", errors="replace"))
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
