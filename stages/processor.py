"""The stage chain as a Ray Data processor: any dataset of prompt rows in, the same rows with decode columns out.

`decode_stages` is the one decode path: validate/tokenize (stages/preprocess.py) -> the decode actor pool
(stages/decode.py). `pipeline.py run` puts it between its shard reader and its shard
writer (driver/run.py); `Processor` puts it between two row adapters, so a user's own dataset goes through
the same code with the same settings, seeds and per-row overrides:

- `to_pipeline_rows`: a user row -> the pipeline's row fields, mapped as the read stage maps a shard record
  (stages/read/row_mapping.py: `input.id_field`, `prompt_field`, `messages_field`, `prompt_template`, the
  per-row override fields). A row without an id gets one from its prompt's content (so its seed, which
  comes from the id, is the same on every run). The user's columns ride along; those whose names the
  pipeline uses are set aside and put back at the end.
- `finish_rows`: the user's columns as they came, plus `id` (when they had none), the decode columns and
  `error` ("" when the row decoded); the trace columns (Arrow IPC bytes) only while `decode.trace` is on.
  With `actors.on_error: fail` a row with an error fails the job instead (Ray Data's
  `should_continue_on_error=False`).

`decode_table` runs the same three steps in this process without Ray (dllm.decode, tests).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import uuid
from typing import TYPE_CHECKING, Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from settings.schema import PipelineConfig
from stages.decode_columns import DECODE_FIELDS
from stages.preprocess import preprocess_batch
from stages.read.row_mapping import RowMapping
from stages.read.stage import RESERVED, ROW_SCHEMA

if TYPE_CHECKING:
    from stages.decode import DecodeStage

#: Prefix under which a user column whose name the pipeline uses travels through the stages.
SET_ASIDE = "__user__"
#: Decode columns a processor's output keeps (the rest are the pipeline's bookkeeping).
RESULT_COLUMNS = [f.name for f in DECODE_FIELDS if not f.name.startswith(("trace_", "actor_stats"))]


def decode_stages(ds, cfg: PipelineConfig, counter=None):
    """Validate/tokenize tasks -> the decode actor pool, one decode task per block of the input (the CLI's
    blocks are `input.block_rows` rows); `counter`: a DecodedCounter the actors tell of finished rows."""
    import ray
    a = cfg.actors
    ds = ds.map_batches(preprocess_batch, batch_format="pyarrow", batch_size=a.batch_rows,
                        fn_kwargs={"model_path": cfg.model.path, "decode": cfg.decode,
                                   "use_template": cfg.model.chat_template})
    return ds.map_batches(
        LazyDecodeStage, fn_constructor_kwargs={"cfg": cfg, "counter": counter}, batch_format="pyarrow",
        batch_size=a.batch_rows,
        num_gpus=a.num_gpus, num_cpus=a.num_cpus,
        compute=ray.data.ActorPoolStrategy(min_size=a.min_actors, max_size=a.max_actors,
                                           max_tasks_in_flight_per_actor=a.max_tasks_in_flight,
                                           max_concurrent_calls_per_actor=a.max_concurrent_batches))


class LazyDecodeStage:
    """The decode stage as Ray Data builds it in each actor. stages/decode.py (torch, the model's code) is
    imported there, not in the driver that only plans the dataset: ~200 MB and seconds less on the driver."""

    def __init__(self, cfg: PipelineConfig, counter=None) -> None:
        from stages.decode import DecodeStage
        self.stage = DecodeStage(cfg, counter)

    async def __call__(self, batch: pa.Table) -> pa.Table:
        return await self.stage(batch)


def content_id(row: dict) -> str:
    """An id for a row that has none: a hash of what it asks (prompt or messages)."""
    what = {"prompt": row.get("prompt"), "messages": row.get("messages")}
    return "h" + hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def to_pipeline_rows(batch: pa.Table, cfg: PipelineConfig) -> pa.Table:
    """User rows -> pipeline rows (`decode.samples_per_prompt` each), the user's columns alongside."""
    mapping, n = RowMapping.from_config(cfg.input), cfg.decode.samples_per_prompt
    rows = []
    for i, rec in enumerate(batch.to_pylist()):
        mapped = mapping.map(rec)
        if mapped["id"] == "" and mapped["error"].startswith("missing id"):
            mapped["id"] = content_id(mapped)
            mapped["error"] = mapped["error"].removeprefix("missing id").lstrip("; ")
        # each row is its own "shard": requests are keyed by shard, id and sample, and ids may repeat (the
        # seed comes from the id and sample alone)
        base = {"shard": f"row-{uuid.uuid4().hex}", "shard_name": "",
                "shard_rows": 0, "shard_blank_lines": 0, "line": i + 1, "input_schema": None, **mapped}
        rows += [{**base, "sample": s} for s in range(n)]
    table = pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
    take = pa.array([i for i in range(batch.num_rows) for _ in range(n)], pa.int64())
    for name in batch.column_names:
        table = table.append_column(SET_ASIDE + name if name in RESERVED else name, batch.column(name).take(take))
    return table


def finish_rows(batch: pa.Table, cfg: PipelineConfig, user_columns: list[str] | None = None) -> pa.Table:
    """Decoded pipeline rows -> the user's columns, `id` (if they had none), decode columns, `error`."""
    if cfg.actors.on_error == "fail":
        bad = [(i, e) for i, e in zip(batch["id"].to_pylist(), batch["error"].to_pylist()) if e]
        if bad:
            raise RuntimeError(f"row {bad[0][0]!r}: {bad[0][1]} (actors.on_error=fail)")
    user = user_columns if user_columns is not None else \
        [c.removeprefix(SET_ASIDE) for c in batch.column_names if c.startswith(SET_ASIDE) or c not in RESERVED]
    out: dict[str, Any] = {}
    for name in user:
        column = batch[SET_ASIDE + name] if SET_ASIDE + name in batch.column_names else batch[name]
        if name == cfg.input.id_field and column.null_count and (pa.types.is_string(column.type) or pa.types.is_null(column.type)):
            column = pc.coalesce(column.cast(pa.string()), batch["id"])   # rows without an id: their content id
        out[name if name not in RESULT_COLUMNS + ["error"] else f"input_{name}"] = column
    if "id" not in out:
        out["id"] = batch["id"]
    for name in RESULT_COLUMNS + ["error"] + (["trace_steps", "trace_tokens"] if cfg.decode.trace != "off" else []):
        out[name] = batch[name]
    return pa.table(out)


class Processor:
    """`Processor(cfg, preprocess, postprocess)(dataset) -> dataset`: see the module docstring.
    `preprocess` / `postprocess` take and return one row (a dict), as in ray.data.llm."""

    def __init__(self, cfg: PipelineConfig, preprocess: Callable[[dict], dict] | None = None,
                 postprocess: Callable[[dict], dict] | None = None) -> None:
        self.cfg, self.preprocess, self.postprocess = cfg, preprocess, postprocess

    def __call__(self, ds):
        if self.preprocess is not None:
            ds = ds.map(self.preprocess)
        if self.cfg.input.block_rows > 0:
            # blocks of block_rows rows: a big input block (a Parquet file) must not be one decode task, nor
            # the many small blocks of from_items a task each (strict: small blocks are combined)
            ds = ds.repartition(target_num_rows_per_block=self.cfg.input.block_rows, strict=True)
        ds = ds.map_batches(to_pipeline_rows, batch_format="pyarrow", fn_kwargs={"cfg": self.cfg})
        ds = decode_stages(ds, self.cfg)
        ds = ds.map_batches(finish_rows, batch_format="pyarrow", fn_kwargs={"cfg": self.cfg})
        if self.postprocess is not None:
            ds = ds.map(self.postprocess)
        return ds


_STAGES: dict[str, "DecodeStage"] = {}
_LOCK = threading.Lock()


def local_stage(cfg: PipelineConfig) -> "DecodeStage":
    """One decode stage (model loaded once) per distinct config in this process."""
    from omegaconf import OmegaConf

    from stages.decode import DecodeStage
    key = json.dumps(OmegaConf.to_container(OmegaConf.structured(cfg)), sort_keys=True, default=str)
    with _LOCK:
        if key not in _STAGES:
            _STAGES[key] = DecodeStage(cfg)
        return _STAGES[key]


def decode_table(table: pa.Table, cfg: PipelineConfig) -> pa.Table:
    """The processor's steps on one in-memory table, in this process (no Ray)."""
    rows = preprocess_batch(to_pipeline_rows(table, cfg), cfg.model.path, cfg.decode, cfg.model.chat_template)
    stage = local_stage(cfg)
    try:
        asyncio.get_running_loop()
    except RuntimeError:   # no loop running here (a script)
        decoded = asyncio.run(stage(rows))
    else:                  # inside a running loop (a notebook): run ours in a thread
        box: dict = {}
        worker = threading.Thread(target=lambda: box.update(out=asyncio.run(stage(rows))))
        worker.start()
        worker.join()
        decoded = box["out"]
    return finish_rows(decoded, cfg, table.column_names)
