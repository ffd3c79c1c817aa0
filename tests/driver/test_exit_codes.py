"""Only a user's mistake exits 2; any other exception on the driver is a failure (exit 1) with its traceback
in a log file, so a bug never looks like a config error (pipeline.py, driver/outcome.py)."""
from __future__ import annotations

import re

import pipeline
from settings.schema import ConfigError, MissingInputError


def _main_raising(monkeypatch, capsys, exc: Exception) -> tuple[int, str]:
    def boom(args):
        raise exc
    monkeypatch.setattr(pipeline, "run", boom)
    code = pipeline.main(["decode.steps=16"])
    return code, capsys.readouterr().err


def test_a_bug_exits_1_with_its_traceback_in_a_log(monkeypatch, capsys) -> None:
    for exc in (ValueError("internal invariant broken"), FileNotFoundError("/tmp/gone"), KeyError("x")):
        code, err = _main_raising(monkeypatch, capsys, exc)
        assert code == 1, exc
        m = re.fullmatch(r"error: (.+) \(traceback: (\S+)\)\n", err)
        assert m and type(exc).__name__ in m.group(1)
        assert "Traceback (most recent call last)" in open(m.group(2)).read()


def test_config_errors_exit_2_in_one_line(monkeypatch, capsys) -> None:
    for exc in (ConfigError("config error at decode.steps: bad"), MissingInputError("no input shards match x")):
        code, err = _main_raising(monkeypatch, capsys, exc)
        assert (code, err) == (2, f"error: {exc}\n")
