"""Output file formats of a shard's outputs and errors (`output.format`): Arrow IPC, JSONL, Parquet,
written and read back here.

`write_formats(fs, base, table, formats)` writes `<base>.arrow` / `<base>.jsonl` / `<base>.parquet`, each
under a temporary name and then renamed, so readers never see half a file. JSONL rows are JSON objects
with the table's column names; values JSON has no type for (timestamps, bytes, decimals) are written as
strings. Traces are always Arrow (stages/write/sink.py).

`find_file(fs, base)` picks the file of a shard whatever formats it was written in, and `iter_batches`
streams any of the three record batch by record batch, only the columns asked for: with a schema they
come back with its types in every format (JSONL has no types of its own), so a reader (the report, the
end-of-run examples) gets the same batches from a run written as Arrow, Parquet or JSONL.
"""
from __future__ import annotations

import datetime
import decimal
import io
import json

import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from stages.write.commit import put_atomic

EXTENSIONS = {"arrow": ".arrow", "jsonl": ".jsonl", "parquet": ".parquet"}
#: Which file a reader takes when a shard was written in several formats (they hold the same rows).
READ_ORDER = ("arrow", "parquet", "jsonl")
JSONL_BLOCK_BYTES = 1 << 20   # JSONL is parsed this many bytes at a time


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
        put_atomic(fs, path, encode(table, fmt))
        paths.append(path)
    return paths


def find_file(fs, base: str) -> str | None:
    """`<base><ext>` in the first of READ_ORDER's formats that exists, or None."""
    for fmt in READ_ORDER:
        if fs.exists(base + EXTENSIONS[fmt]):
            return base + EXTENSIONS[fmt]
    return None


def iter_batches(fs, path: str, columns: pa.Schema | list[str] | None = None):
    """Record batches of an Arrow IPC, Parquet or JSONL file (by extension), holding only `columns` (those
    the file has; None = all). Given a schema, each column is cast to its type there."""
    names = list(columns.names) if isinstance(columns, pa.Schema) else columns
    with fs.open(path, "rb") as f:
        if path.endswith(".parquet"):
            pf = pq.ParquetFile(f)
            present = _present(pf.schema_arrow.names, names)
            batches = pf.iter_batches(columns=present) if present else iter(())
        elif path.endswith(".jsonl"):
            batches = _jsonl_batches(f, names, columns if isinstance(columns, pa.Schema) else None)
        else:
            batches = _ipc_batches(f, names)
        for batch in batches:
            yield _cast(batch, columns) if isinstance(columns, pa.Schema) else batch


def _present(have: list[str], wanted: list[str] | None) -> list[str]:
    """The wanted columns the file has, in the file's order (as Arrow IPC and Parquet return them)."""
    return list(have) if wanted is None else [c for c in have if c in wanted]


def _ipc_batches(f, names: list[str] | None):
    reader = pa.ipc.open_file(f)
    if names is not None:
        have = reader.schema.names
        idx = [have.index(c) for c in names if c in have]
        reader = pa.ipc.open_file(f, options=pa.ipc.IpcReadOptions(included_fields=idx))
    for i in range(reader.num_record_batches):
        yield reader.get_batch(i)


def _jsonl_batches(f, names: list[str] | None, schema: pa.Schema | None):
    """JSONL in blocks of JSONL_BLOCK_BYTES. The columns are the keys of the first row (every row of a
    file written here has the same keys); with a schema, those it names are parsed as its types."""
    first = f.readline()
    if not first.strip():
        return
    have = list(json.loads(first))
    f.seek(0)
    present = _present(have, names)
    explicit = pa.schema([schema.field(c) for c in present if c in schema.names]) if schema is not None else None
    opts = pajson.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="ignore" if explicit else "infer")
    reader = pajson.open_json(f, read_options=pajson.ReadOptions(block_size=JSONL_BLOCK_BYTES), parse_options=opts)
    for batch in reader:
        yield batch.select(present)


def _cast(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    target = pa.schema([schema.field(c) if c in schema.names else batch.schema.field(c) for c in batch.schema.names])
    return batch if batch.schema == target else batch.cast(target)
