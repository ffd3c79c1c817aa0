"""Pre-flight (driver/preflight.py): every failure knowable before the cluster starts is one line and exit 2,
from `pipeline.py` as users run it, with Ray never imported (so never started), in seconds: under 10 s of
CPU, and of wall-clock time on an idle machine (the wall-clock bound stretches with this shared box's load).
The column check reads a shard's head the way the read stage reads the shard (stages/read/columns.py)."""
from __future__ import annotations

import gzip
import io
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

from driver.preflight import check_columns
from settings.loader import load_config
from settings.schema import ConfigError
from stages.read.columns import shard_columns

ROOT = pathlib.Path(__file__).resolve().parents[2]
EMBEDDED_MODEL = ROOT / "embedded" / "taskmix" / "model"
#: pipeline.py's main as the CLI runs it, then whether Ray was ever imported.
PROBE = ("import sys, pipeline; code = pipeline.main(sys.argv[1:]); "
         "print('ray imported' if 'ray' in sys.modules else 'no ray'); sys.exit(code)")
SECONDS = 10.0


def run_cli(*args: str, cwd=ROOT, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float, float]:
    """(result, wall seconds, CPU seconds) of `pipeline.py *args` in a fresh interpreter."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    out = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    wall, after = time.monotonic() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return out, wall, cpu


def assert_one_line_exit_2(out: subprocess.CompletedProcess, wall: float, cpu: float, key: str, *words: str) -> str:
    assert out.returncode == 2, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: config error at {key}: "), out.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert out.stdout.strip() == "no ray"                      # Ray never imported, so never started
    assert cpu < SECONDS, f"{cpu:.1f} s of CPU"
    assert wall < SECONDS * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1)), f"{wall:.1f} s"
    return lines[0]


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model"
    shutil.copytree(EMBEDDED_MODEL, path)
    return path


@pytest.fixture
def shard(tmp_path):
    path = tmp_path / "in" / "part-0.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"doc": f"d{i}", "text": f"copy:ab{i}=", "lang": "en"}) + "\n"
                            for i in range(3)))
    return path


def _edit_config(path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))


def _truncate(model) -> None:
    weights = model / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)


CHECKPOINTS = {   # how the checkpoint is broken -> words of the one line
    "no mask token": (lambda m: _edit_config(m, mask_token_id=None), ["config has no mask_token_id"]),
    "truncated safetensors": (_truncate, ["model.safetensors: truncated: tensor"]),
    "unreadable config": (lambda m: (m / "config.json").write_text("{"), ["config.json: not valid JSON"]),
    "unknown architecture": (lambda m: _edit_config(m, model_type="mystery"),
                             ["model type `mystery`", "does not recognize"]),
}


@pytest.mark.parametrize("broken", CHECKPOINTS)
def test_a_broken_checkpoint_is_one_line_and_exit_2_before_ray(tmp_path, model, shard, broken) -> None:
    breaks, words = CHECKPOINTS[broken]
    breaks(model)
    out, wall, cpu = run_cli(f"model.path={model}", f"input.url={shard}", f"output.url={tmp_path}/out",
                             "input.id_field=doc", "input.prompt_field=text")
    assert_one_line_exit_2(out, wall, cpu, "model.path", str(model), *words)
    assert not (tmp_path / "out").exists()


FIELDS = {   # overrides -> (key named, words of the one line)
    "wrong id_field": (["input.id_field=id"], "input.id_field",
                       ["has no field 'id'", "(its fields: doc, text, lang)"]),
    "wrong prompt_field": (["input.id_field=doc", "input.prompt_field=txt"], "input.prompt_field",
                           ["has no field 'txt' and 'messages'", "did you mean 'text'?"]),
    "template names a missing field": (["input.id_field=doc", "input.prompt_template=copy:{text} in {language}"],
                                       "input.prompt_template", ["has no field 'language'", "did you mean 'lang'?"]),
}


@pytest.mark.parametrize("case", FIELDS)
def test_fields_the_first_shard_lacks_are_one_line_and_exit_2_before_ray(tmp_path, shard, case) -> None:
    overrides, key, words = FIELDS[case]
    out, wall, cpu = run_cli(f"input.url={shard.parent}", f"output.url={tmp_path}/out", *overrides)
    line = assert_one_line_exit_2(out, wall, cpu, key, str(shard), *words)
    assert line.endswith("every row would be an error")
    assert not (tmp_path / "out").exists()


# ----- the column check itself, in process ---------------------------------------------------------------------
def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def test_shard_columns_of_every_input_format(tmp_path) -> None:
    fs = LocalFileSystem()
    rows = [{"id": 1, "prompt": "p"}, {"id": 2, "prompt": "q", "extra": True}]
    files = {"a.jsonl": "\n\n" + "\n".join(json.dumps(r) for r in rows) + "\n",
             "b.json": json.dumps(rows, indent=2), "c.jsonl.gz": gzip.compress(json.dumps(rows[1]).encode()),
             "d.parquet": _parquet(pa.table({"id": [1], "prompt": ["p"], "extra": [1.0]})),
             "e.json": "\n".join(json.dumps(r) for r in rows)}               # JSONL in a .json file
    for name, data in files.items():
        (tmp_path / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    kinds = {"a.jsonl": "jsonl", "b.json": "json", "c.jsonl.gz": "jsonl", "d.parquet": "parquet", "e.json": "json"}
    got = {name: shard_columns(fs, str(tmp_path / name), kind) for name, kind in kinds.items()}
    assert got == {"a.jsonl": ["id", "prompt", "extra"], "b.json": ["id", "prompt", "extra"],
                   "c.jsonl.gz": ["id", "prompt", "extra"], "d.parquet": ["id", "prompt", "extra"],
                   "e.json": ["id", "prompt", "extra"]}


def test_shard_columns_of_shards_that_show_no_record(tmp_path) -> None:
    fs = LocalFileSystem()
    cases = {"empty.jsonl": b"", "blank.jsonl": b"\n \n", "bad.jsonl": b"{not json\n[1, 2]\n",
             "none.parquet": _parquet(pa.table({"id": pa.array([], pa.int64())})), "junk.parquet": b"not parquet",
             "cut.json": b'[{"id": 1, "prompt": "p"'}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        kind = "parquet" if name.endswith("parquet") else "json" if name.endswith(".json") else "jsonl"
        assert shard_columns(fs, str(tmp_path / name), kind) is None, name


def test_a_long_json_array_is_read_by_its_head_only(tmp_path) -> None:
    path = tmp_path / "big.json"
    path.write_text(json.dumps([{"id": i, "prompt": "x" * 1000} for i in range(5000)]))     # ~5 MB
    assert shard_columns(LocalFileSystem(), str(path), "json", max_records=10, max_bytes=64 << 10) == ["id", "prompt"]


def test_empty_first_shards_are_passed_over_for_one_with_records(tmp_path) -> None:
    (tmp_path / "a.jsonl").write_text("")
    (tmp_path / "b.jsonl").write_text(json.dumps({"key": 1, "prompt": "p"}) + "\n")
    shards = [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    cfg = load_config(None, [f"input.url={tmp_path}"])
    with pytest.raises(ConfigError, match=r"at input.id_field: the first input shard .*b\.jsonl has no field 'id'"):
        check_columns(cfg, LocalFileSystem(), shards)
    check_columns(load_config(None, [f"input.url={tmp_path}", "input.id_field=key"]), LocalFileSystem(), shards)
    check_columns(cfg, LocalFileSystem(), shards[:1])                       # nothing to tell from: the run decides
