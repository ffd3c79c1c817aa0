"""Fate-sharing for the local Ray a driver starts: when the driver dies, even by SIGKILL, so does its Ray.

Ray's GCS, raylet and workers exit with the driver by themselves, but its dashboard and runtime-env agents
linger for a minute (they publish the raylet's death to the dead GCS with a 60 s timeout). The reaper is a
tiny child process holding the read end of a pipe from the driver: it notes the driver's descendants every
`every_s`, and when the pipe reads EOF (the driver is gone, however it ended) it SIGKILLs the ones it last
saw that still are the same processes (pid and start time). Linux only (/proc); elsewhere it is not started.

    reaper = start_reaper()   # in the driver, after ray.init(address="local")
"""
from __future__ import annotations

import os
import re
import select
import subprocess
import sys

from driver.procs import all_procs, alive, descendants, sigkill

#: A Ray session's name as its processes' command lines carry it (`--session-name=session_2026-12-01_...`).
SESSION = re.compile(r"session_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_\d+_\d+")


def start_reaper(every_s: float = 0.5) -> subprocess.Popen | None:
    """Start the reaper of this process's descendants; None where /proc is missing."""
    if not os.path.isdir("/proc"):
        return None
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.Popen([sys.executable, "-m", "driver.reaper", str(os.getpid()), str(every_s)],
                            stdin=subprocess.PIPE, cwd=root, env={**os.environ, "PYTHONPATH": root},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def watch(driver: int, every_s: float) -> int:
    """Snapshot the driver's descendants until stdin reads EOF; then kill those still alive. Returns how many."""
    me, seen = os.getpid(), {}
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], every_s)
        if ready and not os.read(sys.stdin.fileno(), 1024):
            break
        seen.update({(p.pid, p.start): p for p in descendants(driver) if p.pid != me})
    # the driver is gone and its children are orphaned now, but a process started since the last snapshot
    # (a worker the raylet just forked) is still below a process already seen: take those too
    for p in alive(pid for pid, _ in list(seen)):
        if (p.pid, p.start) in seen:
            seen.update({(c.pid, c.start): c for c in descendants(p.pid) if c.pid != me})
    # ... or already orphaned, when its raylet exited first: a just-forked worker still shows its command
    # line (with the session's name) before it renames itself `ray::...`
    sessions = {m for p in seen.values() for m in SESSION.findall(p.title)}
    if sessions:
        seen.update({(p.pid, p.start): p for p in all_procs()
                     if p.pid != me and any(name in p.title for name in sessions)})
    killed = 0
    for p in alive(pid for pid, _ in seen):
        if (p.pid, p.start) in seen and sigkill(p.pid):
            killed += 1
    return killed


if __name__ == "__main__":
    watch(int(sys.argv[1]), float(sys.argv[2]))
