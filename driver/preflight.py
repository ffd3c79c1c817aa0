"""Pre-flight: what a decode job can find wrong on the driver before Ray starts, in seconds, each failure one
`ConfigError` line naming the key (exit 2) instead of a traceback from inside the cluster minutes later.

`preflight(cfg)` imports no Ray and checks, in order:
  files    settings/checks.py `check_files`: the checkpoint as far as its files tell (config.json readable,
           family and mask token resolved, no remote code or unallowed pickles, every safetensors header
           readable and covering its file, the index naming existing files), the TSPD controller, a local
           Ray's resources. The checkpoint is checked in a child process (unless this one has torch
           already): reading a config through transformers imports its modelling stack (torch.compile,
           sympy, accelerate: ~75 MB), which the driver would otherwise carry for the whole job;
  input    the shards listed (none: exit 2), their output names unique, and the first shard that shows records:
           its fields against `input.id_field`, `prompt_field` / `messages_field` and the template's fields,
           with the same mapping the read stage uses (stages/read/row_mapping.py `RowMapping.absent`);
  output   an object-store output bucket exists, unless `output.create_bucket` (a typo would create a new one).
It returns what it listed, so the run (driver/run.py) does not list the input twice.
"""
from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
from dataclasses import dataclass

from settings.checks import check_files
from settings.schema import ConfigError, PipelineConfig
from stages.read.columns import shard_columns
from stages.read.row_mapping import RowMapping
from stages.read.stage import shard_format
from stages.storage import (check_unique_names, filesystem, list_shards, missing_bucket, shard_name,
                            similar_buckets)

#: Shards tried for their columns before giving up (each may be empty or unreadable; the read stage reports those).
COLUMN_PROBES = 3


@dataclass
class Preflight:
    in_fs: object
    shards: list[str]
    root: str
    names: dict[str, str]


def preflight(cfg: PipelineConfig) -> Preflight:
    """Every check above; raises ConfigError (MissingInputError for no shards) on the first failure."""
    check_files(cfg, local_ray=cfg.ray.address == "local" and not _ray_running(), loadable=checkpoint_loadable)
    in_fs, in_path = filesystem(cfg.input.url, cfg.storage)
    shards, root = list_shards(in_fs, in_path)
    names = {s: shard_name(s, root) for s in shards}
    check_unique_names(names)
    check_columns(cfg, in_fs, shards)
    check_output_bucket(cfg)
    return Preflight(in_fs, shards, root, names)


#: The child's program: `check_loadable` on argv, its refusal (a ValueError or OSError) as one JSON line.
_CHILD = """
import json, sys
from decoder.families import check_loadable
try:
    check_loadable(sys.argv[1], sys.argv[2], sys.argv[3] == "1")
    print(json.dumps({"error": None}))
except (ValueError, OSError) as e:
    print(json.dumps({"error": str(e) or type(e).__name__}))
"""


def checkpoint_loadable(path: str, family: str, allow_pickle_weights: bool) -> None:
    """decoder/families `check_loadable`: in a child process, unless this one has torch already (a library
    caller, a benchmark), where the child would only cost seconds."""
    if "torch" in sys.modules:
        from decoder.families import check_loadable
        check_loadable(path, family, allow_pickle_weights)
    else:
        loadable_in_child(path, family, allow_pickle_weights)


def loadable_in_child(path: str, family: str, allow_pickle_weights: bool) -> None:
    """decoder/families `check_loadable` in a child Python; its refusal raised here as a ValueError."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", _CHILD, path, family, "1" if allow_pickle_weights else "0"],
                          capture_output=True, text=True, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise RuntimeError(f"checking the checkpoint {path} failed: {tail}")
    error = json.loads(lines[-1])["error"]
    if error:
        raise ValueError(error)


def _ray_running() -> bool:
    ray = sys.modules.get("ray")
    return bool(ray) and ray.is_initialized()


def check_columns(cfg: PipelineConfig, fs, shards: list[str]) -> None:
    """The first shard with records carries the fields the mapping reads; else ConfigError naming the key."""
    mapping = RowMapping.from_config(cfg.input)
    for shard in shards[:COLUMN_PROBES]:
        columns = shard_columns(fs, shard, shard_format(shard, cfg.input.format))
        if columns is None:
            continue
        absent = mapping.absent(columns)
        if absent:
            raise ConfigError(columns_message(cfg, mapping, absent, columns, shard))
        return


def columns_message(cfg: PipelineConfig, mapping: RowMapping, absent: list[str], columns: list[str],
                    shard: str) -> str:
    """One line: the key whose field is missing, the fields missing, those the shard has, a likely match."""
    first = absent[0]
    key = ("input.id_field" if first == mapping.id_field else
           "input.prompt_template" if mapping.prompt_template else "input.prompt_field")
    what = " and ".join(repr(a) for a in absent)
    shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
    close = difflib.get_close_matches(first, columns, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (f"config error at {key}: the first input shard {shard} has no field {what} (its fields: {shown}{hint}); "
            f"every row would be an error")


def check_output_bucket(cfg: PipelineConfig) -> None:
    """A missing output bucket is an error unless output.create_bucket."""
    if cfg.output.create_bucket:
        return
    fs, path = filesystem(cfg.output.url, cfg.storage)
    bucket = missing_bucket(fs, cfg.output.url, path)
    if bucket:
        close = [b for b in similar_buckets(fs, bucket) if b != bucket]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"config error at output.url: bucket {bucket!r} does not exist{hint}; create it, or set "
                          f"output.create_bucket=true to let the run create it")
