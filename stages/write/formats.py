"""Output file formats of a shard's outputs and errors (`output.format`): Arrow IPC, JSONL, Parquet.

`write_formats(fs, base, table, formats)` writes `<base>.arrow` / `<base>.jsonl` / `<base>.parquet`, each
under a temporary name and then renamed, so readers never see half a file. JSONL rows are JSON objects
with the table's column names; values JSON has no type for (timestamps, bytes, decimals) are written as
strings. Traces are always Arrow (stages/write/sink.py).
"""
from __future__ import annotations

import datetime
import decimal
import io
import json
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

EXTENSIONS = {"arrow": ".arrow", "jsonl": ".jsonl", "parquet": ".parquet"}


def _json_default(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time, datetime.timedelta, decimal.Decimal)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode(table: pa.Table, fmt: str) -> bytes:
    """The bytes of `table` in one format."""
    buf = io.BytesIO()
    if fmt == "arrow":
        with pa.ipc.new_file(buf, table.schema) as writer:
            writer.write_table(table)
    elif fmt == "parquet":
        pq.write_table(table, buf)
    elif fmt == "jsonl":
        for batch in table.to_batches(max_chunksize=1024):
            for row in batch.to_pylist():
                buf.write(json.dumps(row, ensure_ascii=False, default=_json_default).encode() + b"\n")
    else:
        raise ValueError(f"unknown output format {fmt!r}; use {', '.join(EXTENSIONS)}")
    return buf.getvalue()


def write_formats(fs, base: str, table: pa.Table, formats: list[str]) -> list[str]:
    """Write `table` as `<base><ext>` in every format; returns the paths written."""
    paths = []
    for fmt in formats:
        path = base + EXTENSIONS[fmt]
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with fs.open(tmp, "wb") as f:
            f.write(encode(table, fmt))
        fs.mv(tmp, path)
        paths.append(path)
    return paths
