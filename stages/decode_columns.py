"""The columns the decode stage adds to every row, in a module of their own: the driver and the processor
plan datasets with them without importing the decode stage (torch, the model's code)."""
from __future__ import annotations

import pyarrow as pa

#: Columns the decode stage adds to every row.
DECODE_FIELDS = pa.schema([
    ("output", pa.string()), ("output_ids", pa.list_(pa.int32())), ("generated_tokens", pa.int32()),
    ("steps_taken", pa.int32()), ("step_budget", pa.int32()), ("nfe", pa.int32()),
    ("refreshes", pa.int32()), ("forward_tokens", pa.int64()),   # full-sequence forwards; tokens run
    ("encoder_passes", pa.int32()),   # canvas families (DiffusionGemma): encoder passes apart from the nfe
    ("exit_reason", pa.string()), ("commit_step", pa.list_(pa.int32())),
    ("temperature", pa.float64()), ("tau_low_logit", pa.float64()),   # the settings the row ran with
    ("top_p", pa.float64()), ("top_k", pa.int32()),
    ("queue_s", pa.float64()), ("slot_s", pa.float64()), ("latency_s", pa.float64()),
    ("trace_steps", pa.binary()), ("trace_tokens", pa.binary()),
    ("actor", pa.string()), ("actor_stats", pa.string()),   # per-actor scheduler stats at batch return
])
