"""Write stage: one Ray Data datasink that commits each input shard's outputs, errors and traces atomically.

Every write task splits its rows by input shard and writes them as a *part* under `_parts/<shard>/`,
named deterministically from the rows' line numbers, so a retried task overwrites its own part. When a
shard's parts cover all its rows (the read stage counted them), the task that notices merges the parts
into the final files (written under a temporary name, then renamed) and writes `_done/<shard>.json`
last: a shard with a marker is complete, one without is finished by the next run (see driver/resume.py).
Each part folder records the shard's fingerprint (`_parts/<shard>/fingerprint.json`): a rerun with the
same settings and input keeps the parts of an interrupted run and decodes only the rows they lack.

Layout under the output root, for input shard <name>:
  outputs/<name>.arrow         one row per decoded prompt (text, token ids, steps, NFE, exit, timings)
  errors/<name>.arrow          one row per rejected or failed prompt (id, line, reason)
  traces/<name>.steps.arrow    STEP_SCHEMA rows   traces/<name>.tokens.arrow   TOKEN_SCHEMA rows
  _done/<name>.json            completion marker with the shard's counts, its fingerprint (driver/fingerprint.py),
                               the attempt that committed it and when (driver/ledger.py)
An input shard without rows is committed as empty (`"empty": true` in its marker, no rows, no error row).
"""
from __future__ import annotations

import io
import json
import os
import re
import signal
import time
import zlib
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data.block import Block, BlockAccessor
from ray.data.datasource import Datasink

from stages.write.commit import put_atomic, with_retries, write_json
from settings.schema import StorageConfig
from stages.write.trace_tables import STEP_SCHEMA, TOKEN_SCHEMA
from stages.write.formats import write_formats
from stages.read.stage import EMPTY_SHARD, FAILED_LINE, RESERVED
from stages.storage import check_shard_name, filesystem, join

OUTPUT_COLUMNS = ["id", "shard", "line", "sample", "prompt", "prompt_tokens", "output", "output_ids",
                  "generated_tokens", "steps_taken", "step_budget", "temperature", "tau_low_logit", "top_p", "top_k",
                  "nfe", "refreshes", "forward_tokens", "encoder_passes", "exit_reason", "commit_step", "queue_s",
                  "slot_s", "latency_s", "actor"]
ERROR_COLUMNS = ["id", "shard", "line", "sample", "error"]
PARTS = "_parts"
#: In a shard's part folder: the fingerprint its parts were decoded with ({"fingerprint": ...}).
PART_FINGERPRINT = "fingerprint.json"


def passthrough_columns(table: pa.Table) -> list[str]:
    """The source's own columns a table carries (stages/read/stage.py), in their order."""
    return [c for c in table.column_names if c not in RESERVED]


def read_ipc(fs, path: str) -> pa.Table:
    """A whole Arrow IPC file, fetched in one request (an open file on an object store fetches its size,
    then its footer and body in ranged reads)."""
    return pa.ipc.open_file(pa.BufferReader(fs.cat_file(path))).read_all()


def write_ipc(fs, path: str, table: pa.Table, parquet: bool = False) -> None:
    """Write `table` to `path` whole or not at all (`put_atomic`), so readers never see half a file."""
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    put_atomic(fs, path, sink.getvalue())
    if parquet:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        with fs.open(path.rsplit(".arrow", 1)[0] + ".parquet", "wb") as f:
            f.write(buf.getvalue())


def _concat_ipc_blobs(blobs: Iterable[bytes | None], schema: pa.Schema) -> pa.Table:
    tables = [pa.ipc.open_stream(b).read_all() for b in blobs if b]
    return pa.concat_tables(tables).cast(schema) if tables else schema.empty_table()


def _merge_traces(fs, parts: list[str], kind: str) -> pa.Table:
    """The parts' `kind` traces, each row id's trace taken from the first part that has it (parts that
    overlap after a regrouped retry hold the same, deterministic, trace twice)."""
    tables, seen = [], set()
    for p in parts:
        table = read_ipc(fs, p.replace(".rows.", f".{kind}."))
        ids = set(table["id"].to_pylist())
        if ids & seen:
            table = table.filter(pc.invert(pc.is_in(table["id"], pa.array(sorted(ids & seen), pa.string()))))
        seen |= ids
        tables.append(table)
    return pa.concat_tables(tables)


HOLD_AFTER_SIGNAL_S = 60.0


class JobKill:
    """Test-only fault injection (config `testing.kill_*`): SIGKILL the driver process `driver_pid`, then the
    writing worker, at a chosen point of the commit: after `after_commits` shards are committed under the
    output root, between shard `before_marker`'s merge and its marker, or once the parts in flight hold
    `after_rows` rows (a part's name holds its row count). Needs the driver on this machine."""

    def __init__(self, driver_pid: int, after_commits: int = 0, before_marker: str = "", after_rows: int = 0,
                 rows_signal: str = "SIGKILL") -> None:
        self.driver_pid, self.after_commits, self.before_marker = driver_pid, after_commits, before_marker
        self.after_rows, self.rows_signal = after_rows, rows_signal

    def kill(self, how: str = "SIGKILL") -> None:
        try:
            os.kill(self.driver_pid, getattr(signal, how))
        except ProcessLookupError:
            pass
        if how == "SIGKILL":
            os._exit(1)
        # a graceful signal: this writer holds its rows, as one that is mid-write when the signal lands, until
        # the driver's stop takes the workers down (else on a small job it commits the rest first)
        time.sleep(HOLD_AFTER_SIGNAL_S)

    def merged(self, name: str) -> None:
        if name == self.before_marker:
            self.kill()

    def part_written(self, fs, root: str) -> None:
        parts = fs.glob(join(root, PARTS, "*", "*.rows.arrow")) if self.after_rows else []
        if self.after_rows and sum(int(p.rsplit("/", 1)[-1].split("-")[1]) for p in parts) >= self.after_rows:
            self.kill(self.rows_signal)

    def committed(self, fs, root: str) -> None:
        if self.after_commits and len(fs.ls(join(root, "_done"), detail=False)) >= self.after_commits:
            self.kill()


class ShardDatasink(Datasink):
    def __init__(self, out_url: str, storage: StorageConfig, parquet: bool = False,
                 fingerprints: dict[str, dict] | None = None, kill: JobKill | None = None,
                 formats: list[str] | None = None, attempt: str = "") -> None:
        self.out_url, self.storage, self.kill, self.attempt = out_url, storage, kill, attempt
        self.formats = list(dict.fromkeys([*(formats or ["arrow"]), *(["parquet"] if parquet else [])]))
        self.fingerprints = fingerprints or {}   # shard name -> fingerprint, recorded in its marker

    def _fs(self):
        return filesystem(self.out_url, self.storage)

    def write(self, blocks: Iterable[Block], ctx) -> list[str]:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return []
        table = pa.concat_tables(tables, promote_options="default")
        fs, root = self._fs()
        completed = []
        for name in map(check_shard_name, pc.unique(table["shard_name"]).to_pylist()):
            rows = table.filter(pc.equal(table["shard_name"], name))
            failed = rows.filter(pc.equal(rows["line"], FAILED_LINE))
            if failed.num_rows:   # the shard could not be read: record why; it stays uncommitted
                record_failure(fs, root, name, failed["shard"][0].as_py(), failed["error"][0].as_py())
                continue
            self._retry(f"shard {name}: part write", lambda: self._write_part(fs, root, name, rows))
            if self.kill:
                self.kill.part_written(fs, root)
            if self._retry(f"shard {name}: commit", lambda: self._complete(fs, root, name)):
                completed.append(name)
        return completed

    def _retry(self, what: str, fn):
        return with_retries(what, fn, self.storage.commit_attempts, self.storage.commit_backoff_s)

    def _write_part(self, fs, root: str, name: str, rows: pa.Table) -> None:
        keys = sorted(zip(rows["line"].to_pylist(), _samples(rows)))
        total = pc.max(rows["shard_rows"]).as_py() or 0   # known on the shard's last block only
        part = f"{keys[0][0]:09d}-{len(keys)}-{zlib.crc32(json.dumps(keys).encode()):08x}-{total}"
        folder = join(root, PARTS, name)
        fs.makedirs(folder, exist_ok=True)
        if name in self.fingerprints and not fs.exists(join(folder, PART_FINGERPRINT)):
            write_json(fs, join(folder, PART_FINGERPRINT), {"fingerprint": self.fingerprints[name]})
        write_ipc(fs, join(folder, f"{part}.steps.arrow"), _concat_ipc_blobs(rows["trace_steps"].to_pylist(), STEP_SCHEMA))
        write_ipc(fs, join(folder, f"{part}.tokens.arrow"), _concat_ipc_blobs(rows["trace_tokens"].to_pylist(), TOKEN_SCHEMA))
        write_ipc(fs, join(folder, f"{part}.rows.arrow"), rows.drop_columns(["trace_steps", "trace_tokens"]))

    def commit_ready(self, names: list[str]) -> list[str]:
        """Commit the shards among `names` whose kept parts already hold every row (a run interrupted
        after their last part); returns those committed."""
        fs, root = self._fs()
        return [n for n in names if self._retry(f"shard {n}: commit", lambda: self._complete(fs, root, n))]

    def _complete(self, fs, root: str, name: str) -> bool:
        """Merge a shard whose parts cover all its rows; True if it is (now) committed. The total comes
        from the part holding the shard's last block (0 in the names of the others)."""
        marker = join(root, "_done", f"{name}.json")
        if fs.exists(marker):
            return True
        folder = join(root, PARTS, name)
        parts = sorted(p for p in fs.ls(folder, detail=False) if p.endswith(".rows.arrow"))
        fields = [p.rsplit("/", 1)[-1].split(".")[0].split("-") for p in parts]
        total = max((int(f[3]) for f in fields if len(f) > 3), default=0)
        if not total or sum(int(f[1]) for f in fields) < total:  # the end not seen yet, or not all rows yet
            return False
        rows = pa.concat_tables([read_ipc(fs, p) for p in parts], promote_options="permissive")
        if "sample" not in rows.column_names:
            rows = rows.append_column("sample", pa.array([0] * rows.num_rows, pa.int32()))
        rows = rows.sort_by([("line", "ascending"), ("sample", "ascending")])
        keys = list(zip(rows["line"].to_pylist(), rows["sample"].to_pylist()))
        rows = rows.take(pa.array([i for i, k in enumerate(keys) if i == 0 or k != keys[i - 1]], pa.int64()))  # retries
        if rows.num_rows < total:  # overlapping parts (a retry regrouped its rows) over-counted: lines missing
            return False
        rows = restore_input_types(rows)
        shard_path = rows["shard"][0].as_py()
        blanks = rows["shard_blank_lines"] if "shard_blank_lines" in rows.column_names else None
        empty = pc.equal(rows["error"], EMPTY_SHARD)   # the read stage's marker of a shard without rows
        is_empty = bool(pc.any(empty).as_py())
        rows = rows.filter(pc.invert(empty))
        ok = pc.equal(rows["error"], "")
        outputs, errors = rows.filter(ok), _one_per_problem(rows.filter(pc.invert(ok)))
        outputs = outputs.append_column("prompt_tokens", pc.list_value_length(outputs["prompt_ids"]).cast(pa.int32()))
        extra = passthrough_columns(rows)
        outputs = outputs.select([c for c in OUTPUT_COLUMNS if c in outputs.column_names] + extra)
        steps, tokens = _merge_traces(fs, parts, "steps"), _merge_traces(fs, parts, "tokens")
        for sub in ("outputs", "errors", "traces"):
            fs.makedirs(join(root, sub), exist_ok=True)
        write_formats(fs, join(root, "outputs", name), outputs, self.formats)
        write_formats(fs, join(root, "errors", name), errors.select(ERROR_COLUMNS + extra), self.formats)
        write_ipc(fs, join(root, "traces", f"{name}.steps.arrow"), steps)
        write_ipc(fs, join(root, "traces", f"{name}.tokens.arrow"), tokens)
        summary = shard_summary(name, shard_path, outputs, errors)
        if is_empty:
            summary["empty"] = True
        summary["actors"] = latest_actor_stats(rows)
        if blanks is not None:
            summary["blank_lines"] = int(pc.max(blanks).as_py() or 0)
        summary["fingerprint"] = self.fingerprints.get(name)
        summary.update(attempt=self.attempt, committed_at=time.time())
        if self.kill:
            self.kill.merged(name)
        fs.makedirs(join(root, "_done"), exist_ok=True)
        write_json(fs, marker, summary)
        if self.kill:
            self.kill.committed(fs, root)
        return True

    def on_write_complete(self, write_result) -> None:
        """Sweep: commit any shard whose last parts landed in two racing tasks; then drop the parts."""
        fs, root = self._fs()
        parts_root = join(root, PARTS)
        if not fs.exists(parts_root):
            return
        for folder in self._retry("listing parts", lambda: fs.ls(parts_root, detail=False)):
            name = folder.rstrip("/").rsplit("/", 1)[-1]
            self._retry(f"shard {name}: commit", lambda: self._complete(fs, root, name))
        self._retry("removing parts", lambda: fs.rm(parts_root, recursive=True))


def record_failure(fs, root: str, name: str, shard: str, reason: str) -> None:
    """`_failed/<name>.json`: a shard the read stage could not read (it has no marker; a rerun retries it)."""
    fs.makedirs(join(root, "_failed"), exist_ok=True)
    with fs.open(join(root, "_failed", f"{name}.json"), "w") as f:
        json.dump({"shard": shard, "name": name, "error": reason}, f)


def restore_input_types(rows: pa.Table) -> pa.Table:
    """Cast one shard's pass-through columns back to the types its read stage recorded (`input_schema`)."""
    if "input_schema" not in rows.column_names:
        return rows
    blobs = pc.unique(rows["input_schema"]).to_pylist()
    target = pa.unify_schemas([pa.ipc.read_schema(pa.py_buffer(b)) for b in blobs if b],
                              promote_options="permissive")
    for f in target:
        if f.name in rows.column_names and rows.schema.field(f.name).type != f.type:
            rows = rows.set_column(rows.schema.get_field_index(f.name), f.name, rows[f.name].cast(f.type))
    return rows.drop_columns(["input_schema"])


def _samples(rows: pa.Table) -> list[int]:
    return rows["sample"].to_pylist() if "sample" in rows.column_names else [0] * rows.num_rows


def _one_per_problem(errors: pa.Table) -> pa.Table:
    """Error rows, one per (line, reason): a prompt-level problem is reported once, not once per sample."""
    seen, keep = set(), []
    for i, key in enumerate(zip(errors["line"].to_pylist(), errors["error"].to_pylist())):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return errors.take(pa.array(keep, pa.int64()))


def shard_summary(name: str, shard: str, outputs: pa.Table, errors: pa.Table) -> dict:
    """Counts for a shard's completion marker (and, summed, the run manifest)."""
    def total(col: str) -> int:
        return int(pc.sum(outputs[col]).as_py() or 0) if outputs.num_rows else 0
    exits = pc.value_counts(outputs["exit_reason"]).to_pylist() if outputs.num_rows else []
    return {
        "shard": shard, "name": name, "rows": outputs.num_rows + errors.num_rows, "outputs": outputs.num_rows,
        "errors": errors.num_rows, "prompt_tokens": total("prompt_tokens"),
        "generated_tokens": total("generated_tokens"), "nfe": total("nfe"), "step_budget": total("step_budget"),
        "refreshes": total("refreshes"), "forward_tokens": total("forward_tokens"),
        "exit_reasons": {e["values"]: e["counts"] for e in exits},
        "error_reasons": error_reasons(errors["error"].to_pylist() if errors.num_rows else []),
    }


#: Kinds of error kept per shard marker; the rarer ones are counted together as OTHER_ERRORS.
MAX_ERROR_KINDS = 20
OTHER_ERRORS = "(other reasons)"


def error_kind(error: str) -> str:
    """An error row's reason without what differs from row to row (its line number, numbers), on one
    line of at most 100 characters: rows that failed the same way share it."""
    text = re.sub(r"^line \d+: ", "", " ".join(error.split()))
    text = re.sub(r"\d+", "N", text)
    return text if len(text) <= 100 else text[:99] + "…"


def error_reasons(errors: list[str]) -> dict[str, int]:
    """error kind -> rows, the MAX_ERROR_KINDS most frequent (the rest under OTHER_ERRORS)."""
    counts: dict[str, int] = {}
    for e in errors:
        k = error_kind(e or "")
        counts[k] = counts.get(k, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    out = dict(ranked[:MAX_ERROR_KINDS])
    if len(ranked) > MAX_ERROR_KINDS:
        out[OTHER_ERRORS] = sum(v for _, v in ranked[MAX_ERROR_KINDS:])
    return out


def latest_actor_stats(rows: pa.Table) -> dict[str, dict]:
    """Per decode actor, its most recent scheduler stats snapshot seen in these rows."""
    latest: dict[str, dict] = {}
    if "actor_stats" not in rows.column_names:
        return latest
    for actor, blob in zip(rows["actor"].to_pylist(), rows["actor_stats"].to_pylist()):
        if actor and blob:
            stats = json.loads(blob)
            if actor not in latest or stats["row_steps"] >= latest[actor]["row_steps"]:
                latest[actor] = stats
    return latest
