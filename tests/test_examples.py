"""Every script in examples/ runs from a clean checkout and prints what it promises."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import ROOT

EXPECT = {"parquet_processor.py": "24 rows ->", "chat_messages.py": "'answer': 'river'",
          "in_process.py": "empty prompt", "cost_report.py": "report:"}


def test_every_example_is_tested():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(EXPECT)


#: Examples that start two or more Ray jobs: in the slow run (./test.sh -m slow), not the default one.
SLOW = {"cost_report.py"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(EXPECT)])
def test_example_runs(name, tmp_path):
    args = [str(tmp_path)] if name in ("parquet_processor.py", "cost_report.py") else []
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert EXPECT[name] in done.stdout, done.stdout[-2000:]
