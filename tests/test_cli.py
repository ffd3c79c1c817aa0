"""pipeline.py as users run it: help, and config errors that fail before Ray starts."""
from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, str(ROOT / "pipeline.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_help_lists_subcommands_and_options():
    out = _run("--help")
    assert out.returncode == 0 and "run" in out.stdout and "report" in out.stdout
    out = _run("run", "--help")
    assert out.returncode == 0 and "--config" in out.stdout and "decode.policy" in out.stdout


def test_unknown_key_fails_fast_naming_it():
    out = _run("decode.stepz=3")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: config error at decode.stepz")


def test_wrong_type_and_bad_value():
    out = _run("decode.steps=many")
    assert out.returncode == 2 and "decode.steps" in out.stderr
    out = _run("decode.gen_length=15")
    assert out.returncode == 2 and "multiple of block_length" in out.stderr
    out = _run("--config", "configs/nope.yaml")
    assert out.returncode == 2 and "not found" in out.stderr


def test_missing_input_is_one_line_error(tmp_path):
    out = _run(f"input.url={tmp_path}/none/*.jsonl", f"output.url={tmp_path}/out")
    assert out.returncode == 2 and "no input shards" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_overrides_on_both_sides_of_a_flag():
    sys.path.insert(0, str(ROOT))
    from pipeline import parse_args
    args = parse_args(["decode.steps=8", "--overwrite", "input.block_rows=64", "--config", "configs/s3.yaml"])
    assert args.command == "run" and args.overwrite and args.config == "configs/s3.yaml"
    assert args.overrides == ["decode.steps=8", "input.block_rows=64"]
    out = _run("--overwrite", "input.block_rows=-1")      # reaches config validation, names the key
    assert out.returncode == 2 and "input.block_rows" in out.stderr
    out = _run("--bogus")
    assert out.returncode == 2 and "unrecognized arguments: --bogus" in out.stderr
