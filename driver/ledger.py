"""The run ledger: one record per `pipeline.py run` that works on an output root, `_attempts/<id>.json`.

An attempt's record is written when the command starts working on the root (after its checks and resume
plan: a command refused before any work leaves none), rewritten by a heartbeat every HEARTBEAT_S while it
runs, and completed when it ends: `completed`, `interrupted` (SIGINT or SIGTERM, driver/outcome.py) or
`failed` (with the error's line). Each file belongs to one attempt and only that attempt writes it, each
write whole or not at all (stages/write/commit.py), so the ledger is append-only and survives crashes.
An attempt killed without a chance to close (SIGKILL, a lost machine) keeps `status: running` on disk;
`read_attempts` shows it as `ended without record`, its time counted up to its last heartbeat or the
last shard it committed, whichever is later.

What an attempt did is counted from the shard markers it wrote (stages/write/sink.py names the attempt in
each): rows decoded = the rows of the shards it committed; actor-seconds = its decode actors' busy time
(their scheduler's `elapsed_s`: the latest snapshot of each actor in its markers and, for an attempt cut
short, in the part files of shards still in flight); accelerator-seconds = actor-seconds x
`actors.num_gpus` (CPU actor-seconds when it is 0, as the report counts them). The totals over attempts
(`ledger_totals`) are what was spent on the output root, work later thrown away (redone, dropped,
overwritten, interrupted) included.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from driver.outcome import Terminated, root_cause
from driver.redact import scrub_text
from driver.resume import committed_shards
from stages.storage import join
from stages.write.commit import write_json
from stages.write.formats import iter_batches

FOLDER = "_attempts"
HEARTBEAT_S = 30.0
UNRECORDED = "ended without record"
#: The fields of an attempt in the manifest's `attempts` table (the file also holds per-actor stats).
TABLE_FIELDS = ("attempt", "status", "reason", "started_at", "ended_at", "wall_s", "shards_todo",
                "shards_committed", "rows_decoded", "actor_s", "accelerator", "num_gpus", "accelerator_s", "load_s")


def units(num_gpus: float) -> tuple[str, float]:
    """('gpu', GPUs per actor), or ('cpu-actor', 1.0) when the actors hold no GPU."""
    return ("gpu", float(num_gpus)) if num_gpus and num_gpus > 0 else ("cpu-actor", 1.0)


def latest_actors(snapshots) -> dict[str, dict]:
    """actor -> {elapsed_s, load_s} of its latest snapshot (most row-steps) among `snapshots`:
    iterable of (actor, stats dict) pairs."""
    best: dict[str, dict] = {}
    for actor, stats in snapshots:
        if actor and stats and (actor not in best or stats.get("row_steps", 0) >= best[actor]["row_steps"]):
            best[actor] = {"row_steps": stats.get("row_steps", 0), "elapsed_s": float(stats.get("elapsed_s", 0.0)),
                           "load_s": float(stats.get("load_s", 0.0))}
    return best


class Attempt:
    """One command's record in the ledger. Use as a context manager around the work: leaving it by an
    exception closes the record as interrupted or failed; `close("completed")` ends it normally."""

    def __init__(self, fs, root: str, started: float, num_gpus: float, shards_todo: int,
                 known: dict[str, dict] | None = None) -> None:
        self.fs, self.root = fs, root
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started))
        self.id = f"{stamp}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        accelerator, _ = units(num_gpus)
        self.record = {"attempt": self.id, "command": "run", "host": socket.gethostname(), "pid": os.getpid(),
                       "started_at": started, "heartbeat_at": started, "ended_at": None, "status": "running",
                       "reason": "", "shards_todo": shards_todo, "num_gpus": float(num_gpus),
                       "accelerator": accelerator}
        self._markers: dict[str, dict] = dict(known or {})   # markers already read (never change once written)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._closed = False

    @property
    def path(self) -> str:
        return join(self.root, FOLDER, f"{self.id}.json")

    def __enter__(self) -> "Attempt":
        self.fs.makedirs(join(self.root, FOLDER), exist_ok=True)
        self._write({"shards_committed": [], "rows_decoded": 0, **_actor_totals({}, self.record["num_gpus"])})
        self._thread.start()
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if exc is None or self._closed:
            return
        if isinstance(exc, KeyboardInterrupt):
            self.close("interrupted", "SIGTERM" if isinstance(exc, Terminated) else "SIGINT")
        else:
            self.close("failed", scrub_text(root_cause(exc)))

    def close(self, status: str, reason: str = "") -> dict:
        """Stop the heartbeat, count what this attempt committed and write its final record."""
        if self._closed:
            return self.record
        self._closed = True
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        counted = self._counted(parts=status != "completed")
        now = time.time()
        self.record.update(counted, status=status, reason=reason, ended_at=now, heartbeat_at=now,
                           wall_s=now - self.record["started_at"])
        self._write({})
        return self.record

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._write({**self._counted(parts=False), "heartbeat_at": time.time()})
            except Exception:  # the heartbeat must never break the run (a storage hiccup: the next one)
                pass

    def _write(self, update: dict) -> None:
        self.record.update(update)
        write_json(self.fs, self.path, self.record, indent=1)

    def _counted(self, parts: bool) -> dict:
        """Shards, rows and actor time this attempt committed (and, with `parts`, decoded into shards not
        committed yet: their part files, which the next run clears)."""
        self._markers = committed_shards(self.fs, self.root, self._markers)
        mine = {n: m for n, m in self._markers.items() if m.get("attempt") == self.id}
        snapshots = [(a, s) for m in mine.values() for a, s in (m.get("actors") or {}).items()]
        if parts:
            snapshots += list(_part_snapshots(self.fs, self.root, set(mine)))
        actors = latest_actors(snapshots)
        return {"shards_committed": sorted(mine), "rows_decoded": sum(m.get("rows", 0) for m in mine.values()),
                **_actor_totals(actors, self.record["num_gpus"])}


def _actor_totals(actors: dict[str, dict], num_gpus: float) -> dict:
    actor_s = sum(a["elapsed_s"] for a in actors.values())
    return {"actors": actors, "actor_s": actor_s, "accelerator_s": actor_s * units(num_gpus)[1],
            "load_s": sum(a["load_s"] for a in actors.values())}


#: At most this many part files (the newest) are read when an attempt is cut short: each actor's latest
#: snapshot is in its newest parts, and a SIGTERM's grace period is short.
MAX_PARTS_READ = 64


def _part_snapshots(fs, root: str, skip: set[str]):
    """(actor, stats) of every row in the newest MAX_PARTS_READ part files of the shards not committed
    (`_parts/<shard>/`)."""
    folder = join(root, "_parts")
    try:
        entries = []
        for shard in fs.ls(folder, detail=False) if fs.exists(folder) else []:
            if shard.rstrip("/").rsplit("/", 1)[-1] not in skip:
                entries += [e for e in fs.ls(shard, detail=True) if e["name"].endswith(".rows.arrow")]
        for e in sorted(entries, key=_modified, reverse=True)[:MAX_PARTS_READ]:
            for b in iter_batches(fs, e["name"], ["actor", "actor_stats"]):
                if "actor_stats" in b.schema.names:
                    for actor, blob in zip(b.column("actor").to_pylist(), b.column("actor_stats").to_pylist()):
                        if blob:
                            yield actor, json.loads(blob)
    except FileNotFoundError:   # a part merged and removed while listed
        return


def _modified(entry: dict) -> float:
    """A listing entry's modification time (local: mtime; s3fs: LastModified) in seconds."""
    value = entry.get("mtime") or entry.get("LastModified") or 0.0
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def read_attempts(fs, root: str, markers: dict[str, dict] | None = None) -> list[dict]:
    """Every attempt on the root, oldest first; one still `running` on disk (none is, once its command
    has ended) is shown as UNRECORDED, timed and counted from its last heartbeat and its markers."""
    folder = join(root, FOLDER)
    if not fs.exists(folder):
        return []
    markers = committed_shards(fs, root) if markers is None else markers
    out = []
    for path in fs.ls(folder, detail=False):
        if path.endswith(".json"):
            with fs.open(path) as f:
                rec = json.load(f)
            out.append(_resolve(rec, markers) if rec.get("status") == "running" else rec)
    return sorted(out, key=lambda r: (r["started_at"], r["attempt"]))


def _resolve(rec: dict, markers: dict[str, dict]) -> dict:
    mine = {n: m for n, m in markers.items() if m.get("attempt") == rec["attempt"]}
    last = max([rec.get("heartbeat_at") or rec["started_at"], *(m.get("committed_at", 0.0) for m in mine.values())])
    actors = dict(rec.get("actors") or {})
    for name, stats in latest_actors((a, s) for m in mine.values() for a, s in (m.get("actors") or {}).items()).items():
        if name not in actors or stats["row_steps"] >= actors[name].get("row_steps", 0):
            actors[name] = stats
    committed = sorted(set(rec.get("shards_committed") or []) | set(mine))
    return {**rec, "status": UNRECORDED, "ended_at": last, "wall_s": last - rec["started_at"],
            "shards_committed": committed,
            "rows_decoded": max(rec.get("rows_decoded", 0), sum(m.get("rows", 0) for m in mine.values())),
            **_actor_totals(actors, rec.get("num_gpus", 0.0))}


def table(attempts: list[dict]) -> list[dict]:
    """The per-attempt table (the manifest's `attempts`): TABLE_FIELDS, shards as a count."""
    rows = []
    for a in attempts:
        row = {k: a.get(k) for k in TABLE_FIELDS}
        row["shards_committed"] = len(a.get("shards_committed") or [])
        rows.append(row)
    return rows


def ledger_totals(attempts: list[dict]) -> dict:
    """Totals over attempts (the manifest's `spent`): time, rows and actor time spent on the root."""
    by_status: dict[str, int] = {}
    for a in attempts:
        by_status[a["status"]] = by_status.get(a["status"], 0) + 1
    total = {k: sum(float(a.get(k) or 0.0) for a in attempts) for k in ("wall_s", "actor_s", "accelerator_s", "load_s")}
    return {"attempts": len(attempts), "by_status": by_status, **total,
            "rows_decoded": sum(int(a.get("rows_decoded") or 0) for a in attempts),
            "first_started_at": min((a["started_at"] for a in attempts), default=None),
            "last_ended_at": max((a["ended_at"] or 0.0 for a in attempts), default=None)}
