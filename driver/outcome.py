"""How a run ends: its exit code, and a failure reduced to one readable line with the details in a log.

Exit codes (README "The pipeline command"): 0 every row decoded (or error rows within
`run.max_error_fraction`); 1 a failure (Ray, storage, a model that does not load); 2 a config error or
a resume conflict, found before any work; 3 the job completed and wrote everything, but error rows
exceeded `run.max_error_fraction`; 4 the job completed for every readable shard, but some shards could
not be read (vanished or unreadable since they were listed; not committed, a rerun retries them); 130
interrupted (SIGINT, Ctrl-C); 143 terminated (SIGTERM: Kubernetes, spot preemption, `kill`). Both stop
the same way: Ray shuts down cleanly, committed shards are kept, one line says to rerun.
"""
from __future__ import annotations

import functools
import os
import re
import signal
import sys
import threading
import tempfile
import time
import traceback

from driver.redact import scrub_text

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_ROW_ERRORS, EXIT_FAILED_SHARDS, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
EXIT_TERMINATED = 128 + signal.SIGTERM   # 143, as a shell reports a process ended by SIGTERM
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
#: An exception line in a traceback text: `pkg.mod.SomeError: message`.
ERROR_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception|Exit|Interrupt))(?:\([^)]*\))?: (.+)$")
#: Ray's wrappers: their own message is never the root cause.
RAY_WRAPPERS = {"RayTaskError", "RayActorError", "ActorDiedError", "ActorUnavailableError", "RaySystemError",
                "UserCodeException", "ObjectLostError", "TaskCancelledError"}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so it takes the same way out."""


_terminating = False


def _on_sigterm(signum, frame) -> None:
    global _terminating
    if _terminating:      # a repeat while the job is already stopping: let the stop finish
        return
    _terminating = True
    raise Terminated("SIGTERM")


def catch_sigterm() -> None:
    """Turn SIGTERM into `Terminated` in this (main-thread) process. ray.init installs its own handler,
    which kills Ray's processes and exits from inside the signal handler while Ray Data's threads run
    (exit 134 and a C++ stack dump): call this again after ray.init (driver/run.py does)."""
    global _terminating
    if threading.current_thread() is threading.main_thread():
        _terminating = False
        signal.signal(signal.SIGTERM, _on_sigterm)


def interrupted_exit(exc: KeyboardInterrupt) -> tuple[int, str]:
    """(exit code, the one line) of a command stopped by SIGINT or SIGTERM."""
    if isinstance(exc, Terminated):
        return EXIT_TERMINATED, "interrupted (SIGTERM); committed shards are kept, rerun the same command to resume"
    return EXIT_INTERRUPTED, "interrupted; rerun the same command to resume"


def top_reasons(reasons: dict[str, int], most: int = 3) -> str:
    """`reason ×count; ...` of the most frequent error reasons (ties by name), and how many others."""
    ranked = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    text = "; ".join(f"{k} ×{v}" for k, v in ranked[:most])
    return text + (f"; {len(ranked) - most} other reason(s)" if len(ranked) > most else "")


def row_error_exit(totals: dict, max_error_fraction: float) -> tuple[int, str]:
    """(exit code, message) of a completed run from its error-row count; the message names the top reasons."""
    rows, errors = totals.get("rows", 0), totals.get("errors", 0)
    if errors and errors / max(rows, 1) > max_error_fraction:
        reasons = totals.get("error_reasons") or {}
        top = f"; top reasons: {top_reasons(reasons)}" if reasons else ""
        return EXIT_ROW_ERRORS, (f"{errors} of {rows} rows went to errors/ ({errors / max(rows, 1):.1%} > "
                                 f"run.max_error_fraction={max_error_fraction:g}){top}; every output and error "
                                 f"was written")
    return EXIT_OK, ""


def run_exit(manifest: dict, max_error_fraction: float) -> tuple[int, list[str]]:
    """(exit code, messages) of a completed run: failed shards (4) outrank error rows (3)."""
    code, message = row_error_exit(manifest["totals"], max_error_fraction)
    messages = [message] if message else []
    failed = manifest.get("failed_shards") or {}
    if failed:
        first, why = next(iter(failed.items()))
        messages.append(f"{len(failed)} shard(s) could not be read and were not committed ({first}: {why}"
                        f"{'; ...' if len(failed) > 1 else ''}; all in the manifest's failed_shards); every other "
                        f"shard was; rerun the same command to retry them")
        code = EXIT_FAILED_SHARDS
    return code, messages


def from_ray(exc: BaseException) -> bool:
    """Did `exc` come out of Ray (a task, an actor, Ray Data)? Ray's task errors also subclass the
    user's exception type, so `isinstance(e, ValueError)` alone cannot tell a config error from one."""
    exceptions = sys.modules.get("ray.exceptions")
    return bool(exceptions) and any(isinstance(e, exceptions.RayError) for e in _chain(exc))


def _chain(exc: BaseException | None):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "cause", None)


def root_cause(exc: BaseException) -> str:
    """One line without ANSI codes: the innermost non-Ray `Type: message` found in the exception chain
    and the traceback texts Ray embeds in its messages; else the outermost exception itself."""
    best = ""
    for e in _chain(exc):
        name = type(e).__name__
        text = ANSI.sub("", str(e))
        for line in text.splitlines():
            m = ERROR_LINE.match(line)
            if m and m.group(1) not in RAY_WRAPPERS:
                best = f"{m.group(1)}: {m.group(2).strip()}"
        if name not in RAY_WRAPPERS and not any(w in name for w in RAY_WRAPPERS) and text and not best:
            best = f"{name}: {text.splitlines()[0].strip()}"
    if not best:
        text = ANSI.sub("", str(exc)).strip()
        best = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
    return best


@functools.lru_cache(maxsize=1)
def log_path() -> str:
    """This process's log file (named at the first call): Ray workers' tracebacks (driver/worker_logs.py) and
    the driver's own, so a failure's one line points at one file holding both."""
    folder = os.path.join(tempfile.gettempdir(), "dllm-pipeline-logs")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")


def write_log(exc: BaseException) -> str:
    """Append the full traceback (ANSI codes removed) to the log file; returns its path."""
    path = log_path()
    with open(path, "a") as f:
        f.write(scrub_text(ANSI.sub("", "".join(traceback.format_exception(exc)))))
    return path
