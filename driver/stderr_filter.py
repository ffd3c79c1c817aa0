"""Drop known-harmless lines that Ray's C++ core writes straight to the driver's stderr (file descriptor 2).

Ray Data always puts an actor pool's map transformer in the object store, and the core worker then logs, as an
error, that the decode actors have "constructor arguments in the object store and max_restarts > 0" (Ray issue
53727) on every run, whatever the arguments. Nothing at the Python level can silence a C++ write, so for the
length of a job fd 2 becomes a pipe read by a thread that forwards everything else as it arrives (progress bars
included) and removes exactly these lines.
"""
from __future__ import annotations

import contextlib
import os
import re
import select
import sys
import threading

#: `[2026-12-03 13:29:28,221 E 25305 25305] core_worker.cc:2465: Actor with class name: ... object store ...`
HARMLESS = re.compile(rb"\[\d{4}-\d\d-\d\d [^\]\n]*\] core_worker\.cc:\d+: Actor with class name: [^\n]*"
                      rb"has constructor arguments in the object store and max_restarts > 0[^\n]*\n?")
#: where a log line may begin in a chunk without its newline yet: hold that tail until the line completes
LOG_START = re.compile(rb"\[\d{0,4}(?:-\d{0,2}){0,2}(?: [^\n]*)?$")


def clean(chunk: bytes) -> tuple[bytes, bytes]:
    """(what to write now, what to hold): known lines removed; an unfinished log line at the end held back."""
    held = b""
    last = chunk.rfind(b"\n")
    tail = chunk[last + 1:]
    m = LOG_START.search(tail)
    if m:
        held = tail[m.start():]
        chunk = chunk[:len(chunk) - len(held)]
    return HARMLESS.sub(b"", chunk), held


@contextlib.contextmanager
def filtered_stderr():
    """Within the block, fd 2 goes through `clean` to the real stderr. A no-op where fd 2 cannot be replaced."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    stop = threading.Event()

    def pump() -> None:
        """Forward until EOF, or until asked to stop and nothing more is waiting (a process started inside
        the block may still hold the pipe's write end: the pump does not wait for it)."""
        held = b""
        while True:
            ready, _, _ = select.select([read_end], [], [], 0.05)
            if not ready:
                if stop.is_set():
                    break
                continue
            data = os.read(read_end, 65536)
            if not data:
                break
            out, held = clean(held + data)
            if out:
                os.write(saved, out)
        if held:
            os.write(saved, HARMLESS.sub(b"", held))

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)          # this process writes to the real stderr again
        stop.set()
        thread.join(timeout=5)
        os.close(read_end)
        os.close(saved)
