"""Ray workers' output on the driver's terminal without their tracebacks: those go to the run's log file.

With `log_to_driver`, Ray prints every line its workers and raylets write, with a coloured `(Actor pid=...)`
prefix. When a decode actor fails to start (a checkpoint that does not load) that is 70-80 lines: the Python
traceback, the C++ stack of the worker's abort, faulthandler's dump, and the raylet's retry notices with the
traceback again, plus transformers' load-report table; then the driver prints the root cause in one line
(driver/outcome.py). `route_worker_logs` puts a `WorkerLogRouter` in place of Ray's printer: every forwarded
line is appended to the run's log file (ANSI codes removed, credentials masked), and only the lines outside
such blocks reach Ray's own printer (its prefixes, colours and de-duplication kept). `TracebackFilter` tells
the blocks apart, per process and stream, across batches.
"""
from __future__ import annotations

import re
import threading

from driver.outcome import ANSI, ERROR_LINE
from driver.redact import scrub_text

#: A line that opens a block of diagnostics: a Python traceback, Ray's creation-task and retry notices, a C++
#: stack trace or signal report, faulthandler's dump.
BLOCK_START = re.compile(r"Traceback \(most recent call last\)|Exception raised in creation task|Stack trace:"
                         r"|\*\*\* SIG\w+ received|Fatal Python error|Stack \(most recent call first\)"
                         r"|Current thread 0x|Thread 0x|Extension modules:|Task \S+ failed\. There are .* retries"
                         r"|During handling of the above exception|The above exception was the direct cause"
                         r"|LOAD REPORT from:")
#: A line that continues a block: indented or blank, a frame, carets, a C++ log or stack line, a library path,
#: a row of a table (transformers' load report) and its notes.
BLOCK_LINE = re.compile(r"\s|$|File \"|\^+\s*$|\[\d{4}-\d\d-\d\d [^\]]*\] \S+\.cc:\d+:|/|PC: @|ray::|\*\*\* "
                        r"|.*\||-+\+|Notes:|- [A-Z]+:")


class TracebackFilter:
    """Splits each process's lines into those inside diagnostic blocks and the rest; state per stream."""

    def __init__(self) -> None:
        self.inside: dict[tuple, bool] = {}

    def keep(self, stream: tuple, lines: list[str]) -> list[str]:
        """The lines of one batch of `stream` that are outside any block."""
        inside, kept = self.inside.get(stream, False), []
        for line in lines:
            plain = ANSI.sub("", line)
            if BLOCK_START.search(plain):
                inside = True
            elif inside and not (BLOCK_LINE.match(plain) or ERROR_LINE.match(plain)):
                inside = False
            if not inside:
                kept.append(line)
        self.inside[stream] = inside
        return kept


class WorkerLogRouter:
    """Stands in for Ray's `print_worker_logs(data, print_file, ignore_prefix)`: every line of a batch to `path`,
    those outside diagnostic blocks on to Ray's own function (`printer`). Autoscaler batches pass untouched
    (Ray prints only their event lines)."""

    def __init__(self, path: str, printer) -> None:
        self.path, self.printer = path, printer
        self.filter = TracebackFilter()
        self.lock = threading.Lock()

    def __call__(self, data: dict, print_file, ignore_prefix: bool = False) -> None:
        if data.get("pid") == "autoscaler":
            return self.printer(data, print_file, ignore_prefix)
        lines = [part for line in data.get("lines") or [] for part in str(line).split("\n")]
        who = data.get("actor_name") or data.get("task_name") or ("raylet" if data.get("pid") == "raylet" else "worker")
        prefix = f"({who} pid={data.get('pid')}) "
        with self.lock:
            if lines:
                with open(self.path, "a", encoding="utf-8", errors="replace") as f:
                    f.writelines(prefix + scrub_text(ANSI.sub("", line)) + "\n" for line in lines)
            kept = self.filter.keep((data.get("ip"), data.get("pid"), data.get("is_err")), lines)
        if kept:
            self.printer({**data, "lines": kept}, print_file, ignore_prefix)


def route_worker_logs(path: str) -> bool:
    """Put a `WorkerLogRouter` writing to `path` in place of Ray's printer of forwarded worker output and of the
    errors the raylet pushes to the driver (both call `ray._private.worker.print_worker_logs`); False when this
    Ray has no such function."""
    from ray._private import worker

    current = getattr(worker, "print_worker_logs", None)
    if current is None:
        return False
    if isinstance(current, WorkerLogRouter):
        current.path = path
    else:
        worker.print_worker_logs = WorkerLogRouter(path, current)
    return True
