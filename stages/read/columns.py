"""The fields of a shard's first records, read on the driver the way the read stage will read them.

`shard_columns` opens one shard through the read stage's own functions (stages/read/source.py, text_lines.py,
stream.py) and returns the field names its first records carry: a Parquet file's columns from its footer,
the keys of the first `max_records` JSON objects of a JSONL file or a JSON array (the array decoded record by
record from its head, never whole). It reads at most `max_bytes` of text, so it takes milliseconds whatever the
shard's size. None when the shard shows no record (empty, only blank or bad lines, unreadable): the read stage
reports those itself.
"""
from __future__ import annotations

import json
from itertools import chain
from typing import Iterator

import pyarrow.parquet as pq

from stages.read.source import open_shard
from stages.read.stream import json_line
from stages.read.text_lines import Overlong, bounded_lines, text_blocks

HEAD_RECORDS = 256
HEAD_BYTES = 4 << 20


def shard_columns(fs, path: str, kind: str, max_records: int = HEAD_RECORDS,
                  max_bytes: int = HEAD_BYTES) -> list[str] | None:
    """Field names of the first records of shard `path` (`kind`: parquet, json or jsonl, as
    stages/read/stage.py `shard_format` says), in first-seen order; None when it shows none."""
    try:
        with open_shard(fs, path, compressed=kind != "parquet") as f:
            if kind == "parquet":
                meta = pq.ParquetFile(f)
                return list(meta.schema_arrow.names) if meta.metadata.num_rows else None
            records = list(_head(text_blocks(f), kind, max_records, max_bytes))
    except Exception:   # unreadable here is unreadable in the read stage too: it records the shard's own error
        return None
    names = dict.fromkeys(k for rec in records for k in rec)
    return list(names) if records else None


def _head(blocks: Iterator[bytes], kind: str, max_records: int, max_bytes: int) -> Iterator[dict]:
    """The first JSON objects of a text shard: a JSON array's elements, else JSONL lines that parse."""
    first = b""
    for block in blocks:
        first += block
        if first.strip() or len(first) >= max_bytes:
            break
    if kind == "json" and first.lstrip().startswith(b"["):
        yield from _array_head(first, blocks, max_records, max_bytes)
        return
    found = read = 0
    for number, raw in enumerate(bounded_lines(chain([first], blocks), max_bytes), start=1):
        _, rec, err = json_line(number, raw)
        if not err and isinstance(rec, dict):
            found += 1
            yield rec
        read += raw.size if isinstance(raw, Overlong) else len(raw)
        if found >= max_records or number >= 4 * max_records or read >= max_bytes:
            return


def _array_head(data: bytes, blocks: Iterator[bytes], max_records: int, max_bytes: int) -> Iterator[dict]:
    """Elements of a JSON array decoded one by one from its first bytes (at most `max_bytes`)."""
    for block in blocks:
        if len(data) >= max_bytes:
            break
        data += block
    text = data[:max_bytes].decode("utf-8", errors="ignore")
    decoder, at, found = json.JSONDecoder(), text.index("[") + 1, 0
    while found < max_records:
        while at < len(text) and text[at] in " \t\r\n,":
            at += 1
        if at >= len(text) or text[at] == "]":
            return
        try:
            rec, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError:   # cut off by max_bytes, or malformed: what was read is the head
            return
        if isinstance(rec, dict):
            found += 1
            yield rec
