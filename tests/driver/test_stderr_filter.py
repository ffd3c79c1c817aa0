"""Ray's one harmless C++ "error" line per run is removed from the driver's stderr; everything else passes,
progress-bar updates included (driver/stderr_filter.py)."""
from __future__ import annotations

import subprocess
import sys

from driver.stderr_filter import clean

LINE = (b"[2026-12-03 13:29:28,221 E 25305 25305] core_worker.cc:2465: Actor with class name: "
        b"'MapWorker(MapBatches(DecodeStage))' and ID: '3308' has constructor arguments in the object store and "
        b"max_restarts > 0. If the arguments in the object store go out of scope or are lost, the actor restart "
        b"will fail. See https://github.com/ray-project/ray/issues/53727 for more details.\n")


def test_clean_removes_the_line_and_keeps_the_rest() -> None:
    bar = b"decoding: 0row [00:00, ?row/s]"
    assert clean(bar + LINE + b"\rdecoding: 1row") == (bar + b"\rdecoding: 1row", b"")
    other = b"[2026-12-03 13:29:28,221 E 1 1] raylet.cc:1: something real\n"
    assert clean(other) == (other, b"")
    out, held = clean(bar + LINE[:40])                 # a log line still arriving is held back, not printed
    assert (out, held) == (bar, LINE[:40])
    assert clean(held + LINE[40:]) == (b"", b"")


def test_a_c_level_write_to_fd_2_is_filtered(tmp_path) -> None:
    code = ("import os, sys\nfrom driver.stderr_filter import filtered_stderr\n"
            f"with filtered_stderr():\n    os.write(2, {LINE!r})\n    os.write(2, b'kept\\n')\n"
            "    print('also kept', file=sys.stderr)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert res.returncode == 0 and res.stderr == b"kept\nalso kept\n"
