"""What bench/soak.py watches while a job runs: progress from the S3 requests the fault proxy saw, memory
of the driver and the decode actors from /proc, and the fault schedule firing at fractions of the rows.

Progress: a part file's name holds its row count (`<first>-<rows>-<crc>-<total>.rows.arrow`, stages/write/sink.py),
so the rows processed are summed over part writes (work done: a shard redone after the driver kill counts
again; memory is judged against it), and a marker `_done/<shard>.json` means its shard's rows are committed. Both are read from the proxy's log of
successful PUTs, so watching costs the job nothing.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import asdict, dataclass, field

from driver.procs import descendants, find, sigkill
from tests.support.faults.s3_proxy import Fault

PART = re.compile(r"/_parts/([^/]+)/(\d+)-(\d+)-([0-9a-f]+)-\d+\.rows\.arrow$")
MARKER = re.compile(r"/_done/([^/]+)\.json$")


@dataclass
class Sample:
    t_s: float
    rows_processed: int     # rows in part files written so far (a redone shard counts again: work done)
    rows_committed: int     # rows of committed shards
    driver_rss_mb: float
    actor_rss_mb: float     # the largest decode actor
    actors: int


@dataclass
class FaultEvent:
    kind: str               # actor_kill | s3_restart | slowdown_burst | writer_kill | driver_kill
    at_fraction: float      # of the input's rows processed
    fired_at_s: float | None = None
    rows_at: int | None = None
    detail: str = ""


@dataclass
class Progress:
    rows_per_shard: dict[str, int]
    rows_processed: int = 0
    committed: set = field(default_factory=set)
    seen: int = 0           # proxy log entries read

    def update(self, log: list) -> None:
        for method, path, what in log[self.seen:]:
            if method != "PUT" or what != "200":
                continue
            m = PART.search(path)
            if m:
                self.rows_processed += int(m.group(3))
            m = MARKER.search(path)
            if m:
                self.committed.add(m.group(1))
        self.seen = len(log)

    @property
    def rows_committed(self) -> int:
        return sum(self.rows_per_shard.get(s, 0) for s in self.committed)


def memory(driver_pid: int) -> tuple[float, float, int]:
    """(driver RSS, largest decode-actor RSS, decode actors) in MB."""
    procs = descendants(driver_pid)
    actors = find(procs, "ray::", "DecodeStage")
    try:
        with open(f"/proc/{driver_pid}/status") as f:
            rss = next(int(x.split()[1]) / 1024 for x in f if x.startswith("VmRSS:"))
    except (FileNotFoundError, StopIteration):
        rss = 0.0
    return rss, max((a.rss_mb for a in actors), default=0.0), len(actors)


def fire(event: FaultEvent, driver_pid: int, server, proxy, started: float, rows: int) -> bool:
    """Inject one fault; False while its target is not there yet (a writer between tasks)."""
    if event.kind in ("actor_kill", "writer_kill"):
        title = ("ray::", "DecodeStage") if event.kind == "actor_kill" else ("ray::Write",)
        victims = find(descendants(driver_pid), *title)
        if not victims or not sigkill(victims[0].pid):
            return False
        event.detail = f"pid {victims[0].pid} {victims[0].title[:48]}"
    elif event.kind == "s3_restart":
        threading.Thread(target=server.restart, args=(5.0,), daemon=True).start()
        event.detail = "S3 server down 5 s"
    elif event.kind == "slowdown_burst":
        proxy.schedule(Fault("slowdown", every=3, times=30))
        event.detail = "503 SlowDown on every 3rd request, 30 times"
    elif event.kind == "driver_kill":
        if not sigkill(driver_pid):
            return False
        event.detail = f"driver pid {driver_pid}; rerun the same command"
    event.fired_at_s, event.rows_at = round(time.time() - started, 2), rows
    return True


def quarter_peaks(samples: list[Sample], key: str) -> list[float]:
    """Peak of `key` over the samples in each quarter of the rows processed (by the end of the run)."""
    peaks, total = [0.0] * 4, max((s.rows_processed for s in samples), default=0)
    for s in samples:
        q = min(int(4 * s.rows_processed / max(total, 1)), 3)
        peaks[q] = max(peaks[q], getattr(s, key))
    return [round(p, 1) for p in peaks]


def throughput(samples: list[Sample], lo: float, hi: float) -> float:
    """Rows processed per second while the fraction `lo`..`hi` of all rows processed was done."""
    total = max((s.rows_processed for s in samples), default=0)
    inside = [s for s in samples if lo * total <= s.rows_processed <= hi * total]
    if len(inside) < 2 or inside[-1].t_s <= inside[0].t_s:
        return 0.0
    return round((inside[-1].rows_processed - inside[0].rows_processed) / (inside[-1].t_s - inside[0].t_s), 2)


def as_dicts(items) -> list[dict]:
    return [asdict(x) for x in items]
