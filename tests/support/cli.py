"""`pipeline.py` as users run it: a child process of this interpreter, output captured as text."""
from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT

PIPELINE = ROOT / "pipeline.py"


def pipeline_cmd(*args: str) -> list[str]:
    """The command line `python pipeline.py ARGS` (this interpreter, the checkout's pipeline.py)."""
    return [sys.executable, str(PIPELINE), *args]


def run_cli(*args: str, cwd=ROOT, timeout: float = 120, **options) -> subprocess.CompletedProcess:
    """Run `python pipeline.py ARGS` in `cwd` to the end; stdout and stderr captured as text. `options` go
    to subprocess.run (env, start_new_session, ...)."""
    return subprocess.run(pipeline_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=cwd, **options)
