"""pipeline.py as users run it: help, and config errors that fail before Ray starts."""
from __future__ import annotations

import pytest

from pipeline import parse_args
from settings.loader import load_config
from tests.support import EMBEDDED_PROMPTS
from tests.support.cli import run_cli as _run


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
    out = _run("decode.block_length=3")      # 6 blocks: 16 steps do not divide among them
    assert out.returncode == 2 and "multiple of the number of blocks" in out.stderr
    out = _run("--config", "configs/nope.yaml")
    assert out.returncode == 2 and "not found" in out.stderr


def test_missing_input_is_one_line_error(tmp_path):
    out = _run(f"input.url={tmp_path}/none/*.jsonl", f"output.url={tmp_path}/out")
    assert out.returncode == 2 and "no input shards" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_overrides_on_both_sides_of_a_flag():
    args = parse_args(["decode.steps=8", "--overwrite", "input.block_rows=64", "--config", "configs/s3.yaml"])
    assert args.command == "run" and args.overwrite and args.config == ["configs/s3.yaml"]
    assert args.overrides == ["decode.steps=8", "input.block_rows=64"]
    out = _run("--overwrite", "input.block_rows=-1")      # reaches config validation, names the key
    assert out.returncode == 2 and "input.block_rows" in out.stderr
    out = _run("--bogus")
    assert out.returncode == 2 and "unrecognized arguments: --bogus" in out.stderr


BAD_SETTINGS = [
    (["model.dtype=float8"], "model.dtype", "float32, bfloat16, float16"),
    (["model.device=tpu"], "model.device", "auto, cpu, cuda"),
    (["decode.sched.schedule=weird"], "decode.sched.schedule", "linear, cosine, exp"),
    (["decode.policy=[fastdllm,prophet,none]"], "decode.policy", "at most one"),
    (["model.path=no/such/model"], "model.path", "is not a directory"),
    (["decode.policy=[tspd]", "decode.tspd.controller_path=/no/such.pt"], "decode.tspd.controller_path", "does not exist"),
]


@pytest.mark.parametrize("overrides, key, allowed", BAD_SETTINGS)
def test_bad_setting_exits_2_before_ray_starts(tmp_path, overrides, key, allowed):
    out = tmp_path / "out"
    res = _run(*overrides, f"input.url={EMBEDDED_PROMPTS}/shard-000.jsonl", f"output.url={out}")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: config error at {key}:") and allowed in lines[0]
    assert not out.exists()                      # stopped before any work (the output root is made before Ray)


def test_runs_from_another_folder_with_project_relative_defaults(tmp_path):
    """Default model.path / controller resolve against the project root, not the current directory."""
    res = _run("decode.policy=[tspd]", f"input.url={tmp_path}/none/*.jsonl", "output.url=out", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.strip() == f"error: no input shards match {tmp_path}/none/*.jsonl"


def test_help_lists_every_subcommand():
    out = _run("--help").stdout
    assert "{run,report,labels,train-tspd,calibrate}" in out
    run_help = _run("run", "--help").stdout
    for flag in ("--config", "--no-defaults", "--overwrite", "--redo-changed"):
        assert flag in run_help
    cal_help = _run("calibrate", "--help").stdout
    for flag in ("--pilot", "--seed", "--target", "--bound", "--reference-field", "--out"):
        assert flag in cal_help
    assert "--what-if" in _run("report", "--help").stdout


def test_unknown_flag_after_run_is_named_with_a_suggestion():
    out = _run("run", "--confg", "configs/s3.yaml")
    assert out.returncode == 2
    assert "pipeline.py run: error: unrecognized arguments: --confg (did you mean --config?)" in out.stderr


def test_config_layers_on_defaults_and_no_defaults_is_standalone(tmp_path):
    """A config holding only input/output keeps default.yaml's tuned SchED (exp); --no-defaults does not."""
    mine = tmp_path / "mine.yaml"
    mine.write_text("decode:\n  sched:\n    k: 8.0\n")
    for argv, schedule in (([], "exp"), (["--no-defaults"], "cosine")):
        args = parse_args(["--config", str(mine), *argv, "decode.sched.k=9"])
        cfg = load_config(args.config, args.overrides, defaults=not args.no_defaults)
        assert (cfg.decode.sched.schedule, cfg.decode.sched.k) == (schedule, 9.0)
    out = _run("--config", str(mine), "decode.sched.schedule=weird")        # the CLI uses the same layering
    assert out.returncode == 2 and "decode.sched.schedule" in out.stderr
