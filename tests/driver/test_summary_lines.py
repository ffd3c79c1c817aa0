"""The end-of-run summary without Ray (driver/summary.py): examples read from any output format and cut
to one line, the top error reasons with counts, the KV-cache figures and the attempts."""
from __future__ import annotations

import re

import pyarrow as pa
import pytest

from driver.summary import one_line, print_examples, print_summary
from settings.schema import StorageConfig
from stages.storage import filesystem
from stages.write.formats import write_formats

LONG = "Summarize the following article.\n\n" + "word " * 600     # ~3,000 characters over several lines


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_examples_are_one_line_each_in_any_format(tmp_path, capsys, fmt):
    fs, root = filesystem(str(tmp_path), StorageConfig())
    (tmp_path / "outputs").mkdir()
    rows = [{"id": str(i), "prompt": LONG, "output": "line one\nline two " * 20, "steps_taken": 3,
             "step_budget": 16, "exit_reason": "sched"} for i in range(7)]
    write_formats(fs, f"{root}/outputs/a", pa.Table.from_pylist(rows), [fmt])
    print_examples(fs, root, ["a"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "examples from a:" and len(out) == 1 + 5
    for line in out[1:]:
        assert len(line) < 120 and "\\n" not in line and "…" in line and line.endswith("3/16 steps (sched)")
    assert one_line("a\n  b\tc", 10) == "a b c" and one_line("x" * 20, 10) == "x" * 9 + "…"


def test_summary_shows_error_reasons_cache_and_attempts(capsys):
    totals = {"rows": 10, "outputs": 6, "errors": 4, "prompt_tokens": 50, "generated_tokens": 40, "nfe": 30,
              "step_budget": 96, "steps_saved": 66, "step_speedup": 3.2, "exit_reasons": {"sched": 6},
              "refreshes": 12, "forward_tokens": 900, "error_reasons": {"missing id": 3, "empty prompt": 1}}
    attempts = [{"status": "interrupted", "wall_s": 30.0, "rows_decoded": 4, "actor_s": 20.0},
                {"status": "completed", "wall_s": 12.5, "rows_decoded": 6, "actor_s": 9.25}]
    manifest = {"totals": totals, "wall_s": 42.5, "input_shards": ["a", "b"], "resumed_shards": ["a"],
                "attempts": attempts, "config": {"decode": {"cache": "prefix"}}}
    print_summary(manifest)
    table = dict(re.findall(r"^(\S.*?)\s{2,}(.*)$", capsys.readouterr().out, re.M))
    assert table["KV cache (decode.cache=prefix)"] == ("12 of 30 row-steps ran the full sequence (40.0%), "
                                                       "900 forward tokens (22.5 per generated token)")
    assert table["top error reasons"] == "missing id ×3; empty prompt ×1"
    assert table["wall time"] == "42.5 s over 2 attempts" and table["sequences/s"] == f"{6 / 42.5:.2f}"
    assert table["attempts"] == "2 (1 completed, 1 interrupted); this one 12.5 s, 6 rows decoded, 9.2 actor-s"
