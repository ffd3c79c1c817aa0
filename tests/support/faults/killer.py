"""SIGKILL one process of a running job at a seeded random point (process-fault tests, bench/soak.py).

A `KillPlan` says whom (`driver`, a decode `actor`, a `reader` or a `writer` worker) and when: once the
job has made `after` requests of a kind the fault proxy sees (input GETs for a reader, part writes for
the others), plus `delay_s`. The point is random per seed but read from the job's own progress, so it
lands inside the run whatever the machine's speed. Ray workers are found by their process title.
"""
from __future__ import annotations

import random
import re
import subprocess
import time
from dataclasses import dataclass, field

from driver.procs import Proc, all_procs, descendants, find, sigkill

#: Ray's process title of each kind of worker (`ray::<what it runs>`).
TITLES = {"actor": ("ray::", "DecodeStage"), "reader": ("ray::", "read_shards"), "writer": ("ray::Write",)}
#: The proxy-log requests that mark progress for each target.
PROGRESS = {"reader": r"^GET .*/in/", "driver": r"^PUT .*/_parts/.*\.rows\.arrow$",
            "actor": r"^PUT .*/_parts/.*\.rows\.arrow$", "writer": r"^PUT .*/_parts/.*\.rows\.arrow$"}


@dataclass
class KillPlan:
    target: str        # driver | actor | reader | writer
    after: int         # progress requests seen before the kill
    delay_s: float     # then wait this long
    titles: set = field(default_factory=set, repr=False)   # Ray worker titles seen meanwhile (for messages)

    @classmethod
    def draw(cls, target: str, seed: int, most: int) -> "KillPlan":
        rng = random.Random(f"{target}-{seed}")
        return cls(target, rng.randint(1, most), round(rng.uniform(0.0, 0.5), 3))


def progress(log, target: str) -> int:
    pattern = re.compile(PROGRESS[target])
    return sum(1 for method, path, what in list(log) if what.startswith("2") and pattern.search(f"{method} {path}"))


def victims(target: str, job: subprocess.Popen, scope: int) -> list[Proc]:
    """Live processes `target` names: the job's driver, or Ray workers below `scope` (the Ray's owner)."""
    if target == "driver":
        return [p for p in all_procs() if p.pid == job.pid]
    return find(descendants(scope), *TITLES[target])


def kill_at(plan: KillPlan, job: subprocess.Popen, log, scope: int, timeout_s: float = 240) -> Proc | None:
    """Wait for the plan's point, SIGKILL one victim, return it (None if the job ended first)."""
    deadline = time.time() + timeout_s
    reached = None
    while job.poll() is None and time.time() < deadline:
        if reached is None and progress(log, plan.target) >= plan.after:
            reached = time.time()
        if reached is not None and time.time() - reached >= plan.delay_s:
            found = victims(plan.target, job, scope)
            plan.titles |= {p.title[:70] for p in descendants(scope) if p.title.startswith("ray::")}
            if found and sigkill(found[0].pid):
                return found[0]
        time.sleep(0.01)
    return None
