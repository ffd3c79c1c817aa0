"""Every script in examples/ runs from a clean checkout and prints what it promises."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import ROOT

EXPECT = {"parquet_processor.py": "24 rows ->", "chat_messages.py": "'answer': 'river'",
          "in_process.py": "empty prompt", "cost_report.py": "report:"}


def test_every_example_is_tested():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(EXPECT)


#: Examples in the slow run (./test.sh -m slow) only: the default run's time budget (the processor path is
#: also tested in tests/pipeline/test_processor.py).
SLOW = {"cost_report.py", "chat_messages.py", "parquet_processor.py"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(EXPECT)])
def test_example_runs(name, tmp_path):
    args = [str(tmp_path)] if name in ("parquet_processor.py", "cost_report.py") else []
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)},   # this checkout's code, whatever the venv's
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert EXPECT[name] in done.stdout, done.stdout[-2000:]
