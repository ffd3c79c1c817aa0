"""Read stage: stream one input shard into prompt-row blocks, never failing on a row.

`read_shards` is the Ray Data read task (map_batches over shard paths, a generator): it opens each shard
through fsspec (compressed shards decompressed by extension, stages/read/source.py), reads it in bounded
chunks (stages/read/stream.py, stages/read/text_lines.py) and yields one Arrow block per chunk, so a read
task's memory does not grow with the shard. A shard the storage cannot give (vanished since it was listed,
forbidden, failing mid-read) yields one row with line FAILED_LINE instead: the writer records the shard as
failed and the job goes on. Parsing ourselves rather than with `read_json` is deliberate: Ray's JSON reader fails a whole
block on one malformed line and loses line numbers, while we report each bad line in errors/. Duplicate
ids are detected here because only this stage sees a whole shard (it keeps the shard's ids, not its rows).

Each source record becomes `decode.samples_per_prompt` rows (`sample` 0..n-1). Fields are mapped by
stages/read/row_mapping.py; every other source field (or only `input.keep_fields`) passes through as its own
column, with its Arrow type (Parquet: the file's; JSONL: inferred, fixed by the first chunk that has a
value: a later value that does not fit is that row's error). A pass-through name that clashes with a
pipeline column gets the prefix `input_`.

A shard's row total is known only at its end: rows carry `shard_rows` = 0 except those of the shard's
last block, which carry the total (and `shard_blank_lines`); the writer commits a shard once its parts
hold that many rows. A shard without rows yields one marker row (error EMPTY_SHARD) the writer commits as an
empty shard. `line` is 1-based: the file line for JSONL (blank lines are skipped, not rows), the
record number for Parquet and JSON-array files. A `.json` file starting with `[` is one array (read whole).

Rows a kept part already holds (a `Coverage`, stages/read/coverage.py) are parsed, so ids, types and totals
are those of the whole shard, but not yielded: a rerun decodes only what the interrupted run had not.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Iterator

import pyarrow as pa

from stages.read.coverage import Coverage
from stages.read.row_mapping import RowMapping
from stages.read.source import ShardUnavailable, open_shard
from stages.read.stream import Record, json_array, jsonl_chunks, parquet_batches
from stages.storage import COMPRESSED, shard_name
from stages.read.text_lines import bounded_lines, text_blocks

ROW_SCHEMA = pa.schema([
    ("shard", pa.string()), ("shard_name", pa.string()), ("shard_rows", pa.int64()),
    ("shard_blank_lines", pa.int64()), ("line", pa.int64()), ("sample", pa.int32()), ("id", pa.string()),
    ("prompt", pa.string()), ("messages", pa.string()), ("max_new_tokens", pa.int64()),
    ("row_temperature", pa.float64()), ("row_steps", pa.int64()), ("row_tau_low_logit", pa.float64()),
    ("row_top_p", pa.float64()), ("row_top_k", pa.int64()),
    ("error", pa.string()), ("input_schema", pa.binary()),   # the pass-through columns' schema (IPC bytes)
])
#: `line` of the row that stands for a whole shard that could not be read (stages/write/sink.py records it failed).
FAILED_LINE = 0
#: `error` of the one row that stands for a shard without rows (an empty file, only blank lines, a Parquet file
#: of no rows): the writer commits the shard as empty, with no error row (stages/write/sink.py).
EMPTY_SHARD = "line 1: empty shard (no rows)"
#: Columns every row carries from here on (decode and write add theirs; pass-through columns follow).
ROW_FIELDS = tuple(ROW_SCHEMA.names)
#: Names a pass-through column may not take (it is renamed input_<name>).
RESERVED = set(ROW_FIELDS) | {"prompt_ids", "prompt_tokens", "output", "output_ids", "generated_tokens",
                              "steps_taken", "step_budget", "nfe", "exit_reason", "commit_step", "queue_s",
                              "slot_s", "latency_s", "actor", "actor_stats", "trace_steps", "trace_tokens",
                              "temperature", "tau_low_logit", "input_schema", "refreshes", "forward_tokens",
                              "encoder_passes", "top_p", "top_k"}


@dataclass
class ReadOptions:
    fmt: str = "auto"
    mapping: RowMapping = field(default_factory=RowMapping)
    keep_fields: list[str] = field(default_factory=list)   # empty: every field the mapping does not consume
    samples: int = 1
    chunk_rows: int = 256
    chunk_bytes: int = 16 << 20
    max_line_bytes: int = 16 << 20     # a longer JSONL line is that line's error, read past unparsed

    @classmethod
    def from_config(cls, cfg) -> "ReadOptions":
        inp = cfg.input
        return cls(inp.format, RowMapping.from_config(inp), list(inp.keep_fields), cfg.decode.samples_per_prompt,
                   inp.block_rows or 256, int(inp.read_chunk_mb * 2 ** 20), int(inp.max_line_mb * 2 ** 20))

    def passes(self, name: str) -> bool:
        return name in self.keep_fields if self.keep_fields else name not in self.mapping.consumed


def shard_format(path: str, configured: str = "auto") -> str:
    """parquet, json (an array file, or JSONL in a .json file) or jsonl."""
    if configured != "auto":
        return configured
    for comp in COMPRESSED:
        path = path.removesuffix(comp)
    if path.endswith((".parquet", ".pq")):
        return "parquet"
    return "json" if path.endswith(".json") else "jsonl"


def out_name(name: str) -> str:
    return f"input_{name}" if name in RESERVED else name


class _ColumnTypes:
    """Pass-through column types of one JSONL shard, fixed by the first chunk that has a non-null value."""

    def __init__(self) -> None:
        self.types: dict[str, pa.DataType] = {}

    def array(self, name: str, values: list, errors: list[str]) -> pa.Array:
        known = self.types.get(name)
        try:
            arr = pa.array(values, type=known)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            arr = self._per_value(name, values, known, errors)
        if known is None and arr.type != pa.null():
            self.types[name] = arr.type
        return arr

    def _per_value(self, name: str, values: list, known, errors: list[str]) -> pa.Array:
        if known is None:  # mixed types inside the first chunk: the first value's type wins
            known = pa.array([next(v for v in values if v is not None)]).type
        kept = []
        for i, v in enumerate(values):
            try:
                pa.array([v], type=known)
                kept.append(v)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                errors[i] = "; ".join(e for e in (errors[i], f"field {name!r}: {v!r} does not fit the "
                                                  f"column's type {known}") if e)
                kept.append(None)
        return pa.array(kept, type=known)


class ShardReader:
    """One shard's rows, chunk by chunk (`tables()`); keeps only the ids seen and the column types."""

    def __init__(self, path: str, name: str, opts: ReadOptions, covered: Coverage | None = None) -> None:
        self.path, self.name, self.opts, self.covered = path, name, opts, covered
        self.seen: set[str] = set()
        self.types = _ColumnTypes()
        self.rows = self.blank = 0

    def tables(self, f) -> Iterator[pa.Table]:
        """Blocks of rows from the open binary file `f`; the last one carries the shard's totals."""
        pending = None
        for table in self._chunks(f):
            if pending is not None:
                yield from self._uncovered(pending)
            pending = table
        if pending is None:  # no rows: one marker row (EMPTY_SHARD), or the shard is never committed
            pending = self._records_table([(1, None, EMPTY_SHARD.removeprefix("line 1: "))])
        n = pending.num_rows
        pending = pending.set_column(2, "shard_rows", pa.array([self.rows] * n, pa.int64()))
        yield from self._uncovered(pending.set_column(3, "shard_blank_lines", pa.array([self.blank] * n, pa.int64())))

    def _uncovered(self, table: pa.Table) -> Iterator[pa.Table]:
        """`table` without the rows kept parts hold. A last block left empty is not needed: the rows of
        the shard's last line are always in its last block, so the kept part holding them has the total."""
        if self.covered:
            table = table.filter(pa.array(self.covered.keep(table["line"].to_pylist(), table["sample"].to_pylist())))
        if table.num_rows:
            yield table

    def _chunks(self, f) -> Iterator[pa.Table]:
        o = self.opts
        fmt = shard_format(self.path, o.fmt)
        try:
            if fmt == "parquet":
                for batch in parquet_batches(f, o.chunk_rows):
                    yield self._parquet_table(batch)
                return
            first, blocks = _sniff(text_blocks(f)) if fmt == "json" else (b"", text_blocks(f))
            if first.lstrip().startswith(b"["):
                records = list(json_array(first + b"".join(blocks)))
                for a in range(0, len(records), o.chunk_rows):
                    yield self._records_table(records[a:a + o.chunk_rows])
                return
            lines = bounded_lines(chain([first], blocks), o.max_line_bytes)
            for chunk in jsonl_chunks(lines, o.chunk_rows, o.chunk_bytes):
                table = self._records_table(chunk)
                if table.num_rows:
                    yield table
        except ShardUnavailable:  # the storage failed, not the content: the whole shard fails (read_shards)
            raise
        except Exception as e:  # unreadable (corrupt Parquet or compressed stream): one error row for the rest
            yield self._records_table([(self.rows // o.samples + 1, None, f"unreadable shard: {type(e).__name__}: {e}")])

    def failure_table(self, reason: ShardUnavailable) -> pa.Table:
        """The one row that says this shard could not be read now (line FAILED_LINE): the writer records
        the shard as failed instead of committing it, so a rerun tries it again."""
        row = {**self._row(FAILED_LINE, None, "-"), "error": f"shard failed: {reason}"}
        return _with_schema(pa.Table.from_pylist([row], schema=ROW_SCHEMA))

    # ----- rows --------------------------------------------------------------------------------
    def _row(self, line: int, rec: Any, err: str) -> dict:
        row = {"shard": self.path, "shard_name": self.name, "shard_rows": 0, "shard_blank_lines": 0,
               "line": line, "sample": 0, "id": "", "prompt": None, "messages": None, "max_new_tokens": -1,
               "row_temperature": None, "row_steps": -1, "row_tau_low_logit": None, "row_top_p": None,
               "row_top_k": -1, "error": "",
               "input_schema": None}
        if err:
            row["error"] = f"line {line}: {err}"
        elif not isinstance(rec, dict):
            row["error"] = f"line {line}: a row must be a JSON object, got {type(rec).__name__}"
        else:
            row.update(self.opts.mapping.map(rec))
        if row["id"] and row["id"] in self.seen:
            row["error"] = row["error"] or f"duplicate id {row['id']!r} in shard"
        self.seen.add(row["id"])
        return row

    def _expand(self, rows: list[dict]) -> tuple[list[dict], list[int]]:
        """Each row n times (sample 0..n-1) and, per output row, the index of its source row."""
        n = self.opts.samples
        out = [{**r, "sample": s} for r in rows for s in range(n)]
        self.rows += len(out)
        return out, [i for i in range(len(rows)) for _ in range(n)]

    def _records_table(self, records: list[Record]) -> pa.Table:
        self.blank += sum(err == "blank" for _, _, err in records)
        records = [r for r in records if r[2] != "blank"]
        rows = [self._row(line, rec, err) for line, rec, err in records]
        names = list(dict.fromkeys(k for _, rec, _ in records if isinstance(rec, dict) for k in rec
                                   if self.opts.passes(k)))
        errors = [r["error"] for r in rows]
        extra = {out_name(k): self.types.array(k, [rec.get(k) if isinstance(rec, dict) else None
                                                    for _, rec, _ in records], errors) for k in names}
        for r, e in zip(rows, errors):
            r["error"] = e
        rows, index = self._expand(rows)
        table = pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
        take = pa.array(index, pa.int64())
        for k, arr in extra.items():
            table = table.append_column(k, arr.take(take))
        return _with_schema(table)

    def _parquet_table(self, batch: pa.RecordBatch) -> pa.Table:
        start = self.rows // self.opts.samples
        needed = [c for c in batch.schema.names if c in self.opts.mapping.consumed]
        recs = batch.select(needed).to_pylist() if needed else [{}] * batch.num_rows
        rows = [self._row(start + i + 1, rec, "") for i, rec in enumerate(recs)]
        note = self._absent_columns(batch.schema.names)
        for r in rows:
            if note and r["error"]:
                r["error"] = f"{r['error']} ({note})"
        rows, index = self._expand(rows)
        table = pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
        take = pa.array(index, pa.int64())
        for k in batch.schema.names:
            if self.opts.passes(k):
                table = table.append_column(out_name(k), batch.column(k).take(take))
        return _with_schema(table)


    def _absent_columns(self, columns: list[str]) -> str:
        """Why every row of a Parquet file lacks its id or prompt: the columns it lacks, and those it has."""
        absent = self.opts.mapping.absent(columns)
        if not absent:
            return ""
        return f"the file has no column {', '.join(map(repr, absent))}; its columns: {', '.join(columns) or 'none'}"


def _with_schema(table: pa.Table) -> pa.Table:
    """Add `input_schema`: the pass-through columns' Arrow schema (IPC bytes). Ray may promote a column's
    type when it batches blocks of two shards together; the writer casts each shard's columns back."""
    extra = pa.schema([f for f in table.schema if f.name not in RESERVED])
    blob = extra.serialize().to_pybytes()
    i = table.schema.get_field_index("input_schema")
    return table.set_column(i, "input_schema", pa.array([blob] * table.num_rows, pa.binary()))


def _sniff(blocks: Iterator[bytes]) -> tuple[bytes, Iterator[bytes]]:
    """(the first blocks up to a non-blank byte, the rest): enough to tell a JSON array from JSONL."""
    data = b""
    for block in blocks:
        data += block
        if data.strip():
            break
    return data, blocks


def _name(path: str, names: dict[str, str]) -> str:
    """The shard's output name from the driver's listing; a path it lacks gets its safe base name."""
    return names.get(path) or names.get(path.split("://", 1)[-1]) or shard_name(path, "")


def read_shards(batch: pa.Table, fs, names: dict[str, str], opts: ReadOptions,
                covered: dict[str, Coverage] | None = None) -> Iterator[pa.Table]:
    """Ray Data read task over a batch of shard paths (column `path`): yields each shard's blocks, less
    the rows `covered[shard name]` holds."""
    for path in batch.column("path").to_pylist():
        name = _name(path, names)
        reader = ShardReader(path, name, opts, (covered or {}).get(name))
        try:
            with open_shard(fs, path, compressed=shard_format(path, opts.fmt) != "parquet") as f:
                yield from reader.tables(f)
        except ShardUnavailable as e:   # vanished or unreadable since it was listed: the shard fails, the job goes on
            yield reader.failure_table(e)


def parse_shard(item: dict, names: dict[str, str], fmt: str = "auto", opts: ReadOptions | None = None) -> list[dict]:
    """All rows of one shard held in memory (`item` = {"bytes", "path"}), totals on every row (tests)."""
    opts = opts or ReadOptions(fmt=fmt)
    path = item["path"]
    reader = ShardReader(path, _name(path, names), opts)
    rows = pa.concat_tables(list(reader.tables(io.BytesIO(item["bytes"]))), promote_options="default").to_pylist()
    for row in rows:
        row["shard_rows"], row["shard_blank_lines"] = len(rows), reader.blank
    return rows
