"""Processes as Linux shows them in /proc (no psutil dependency): descendants of a pid, titles, memory.

Used by the reaper (driver/reaper.py) and by the fault tests and bench/soak.py, which find a decode
actor, a read task or a write task to SIGKILL by the title Ray gives its worker (`ray::<what it runs>`).
Elsewhere than Linux every function sees no processes.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass


@dataclass
class Proc:
    pid: int
    ppid: int
    title: str          # the command line as the process shows it (Ray workers: `ray::...`)
    start: int          # start time in clock ticks since boot: (pid, start) names a process uniquely
    rss_mb: float       # resident memory now
    hwm_mb: float       # peak resident memory (VmHWM)


def _read(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            title = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        mem = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    mem[key] = int(value.split()[0]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":   # a zombie has exited; it only waits for its parent to reap it
        return None
    return Proc(pid, int(fields[1]), title, int(fields[19]), mem.get("VmRSS", 0.0), mem.get("VmHWM", 0.0))


def all_procs() -> list[Proc]:
    out = []
    if not os.path.isdir("/proc"):
        return out
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            p = _read(int(entry))
            if p:
                out.append(p)
    return out


def descendants(pid: int) -> list[Proc]:
    """Every live process below `pid` (children, their children, ...)."""
    procs = all_procs()
    kids: dict[int, list[Proc]] = {}
    for p in procs:
        kids.setdefault(p.ppid, []).append(p)
    out, todo = [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child.pid)
    return out


def alive(pids) -> list[Proc]:
    return [p for p in (_read(pid) for pid in pids) if p]


def find(procs: list[Proc], *words: str) -> list[Proc]:
    """The processes whose title holds every one of `words`."""
    return [p for p in procs if all(w in p.title for w in words)]


def sigkill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False
