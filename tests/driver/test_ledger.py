"""The run ledger without Ray (driver/ledger.py): an attempt's record from open to close, what it counts
from its own shard markers and in-flight parts, an attempt that ended without a record, the totals; and
SIGTERM taking Ctrl-C's way out (driver/outcome.py)."""
from __future__ import annotations

import json
import os
import signal
import time

import pyarrow as pa
import pytest

from driver import ledger
from driver.ledger import UNRECORDED, Attempt, ledger_totals, read_attempts, table
from driver.outcome import (EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, catch_sigterm, interrupted_exit,
                            row_error_exit, top_reasons)
from settings.schema import StorageConfig
from stages.storage import filesystem
from stages.write.sink import error_kind, error_reasons, write_ipc


def _fs(tmp_path):
    return filesystem(str(tmp_path), StorageConfig())


def _marker(root, name: str, attempt: str, rows: int, actors: dict, committed_at: float) -> None:
    os.makedirs(f"{root}/_done", exist_ok=True)
    with open(f"{root}/_done/{name}.json", "w") as f:
        json.dump({"name": name, "rows": rows, "attempt": attempt, "committed_at": committed_at, "actors": actors}, f)


def _stats(row_steps: int, elapsed_s: float, load_s: float = 1.0) -> dict:
    return {"row_steps": row_steps, "elapsed_s": elapsed_s, "load_s": load_s}


def test_an_attempt_counts_only_its_own_markers(tmp_path):
    fs, root = _fs(tmp_path)
    _marker(root, "old", "earlier-attempt", 7, {"h:1": _stats(9, 50.0)}, 1.0)
    with Attempt(fs, root, time.time(), num_gpus=2.0, shards_todo=2) as a:
        on_disk = json.loads((tmp_path / "_attempts" / f"{a.id}.json").read_text())
        assert on_disk["status"] == "running" and on_disk["rows_decoded"] == 0 and on_disk["ended_at"] is None
        _marker(root, "s0", a.id, 4, {"h:2": _stats(10, 3.0), "h:3": _stats(5, 1.5)}, time.time())
        _marker(root, "s1", a.id, 6, {"h:2": _stats(30, 5.0)}, time.time())   # a later snapshot of h:2
        rec = a.close("completed")
    assert rec == json.loads((tmp_path / "_attempts" / f"{a.id}.json").read_text())
    assert rec["status"] == "completed" and rec["shards_committed"] == ["s0", "s1"] and rec["rows_decoded"] == 10
    assert rec["actor_s"] == pytest.approx(5.0 + 1.5) and rec["accelerator_s"] == pytest.approx(2 * 6.5)
    assert rec["accelerator"] == "gpu" and rec["load_s"] == pytest.approx(2.0)
    assert rec["wall_s"] == pytest.approx(rec["ended_at"] - rec["started_at"])


@pytest.mark.parametrize("exc, status, reason", [(KeyboardInterrupt(), "interrupted", "SIGINT"),
                                                 (Terminated("SIGTERM"), "interrupted", "SIGTERM"),
                                                 (OSError("disk full"), "failed", "OSError: disk full")])
def test_leaving_by_an_exception_closes_the_record(tmp_path, exc, status, reason):
    """An interrupted attempt also counts the actors' time in the parts of shards it did not commit."""
    fs, root = _fs(tmp_path)
    with pytest.raises(type(exc)):
        with Attempt(fs, root, time.time(), num_gpus=0.0, shards_todo=3) as a:
            _marker(root, "s0", a.id, 4, {"h:1": _stats(10, 2.0)}, time.time())
            os.makedirs(tmp_path / "_parts" / "s1")
            part = pa.table({"actor": ["h:1", "h:9"], "actor_stats": [json.dumps(_stats(40, 9.0)),
                                                                      json.dumps(_stats(3, 0.5))]})
            write_ipc(fs, f"{root}/_parts/s1/000000001-2-0-0.rows.arrow", part)
            raise exc
    (rec,) = read_attempts(fs, root)
    assert (rec["status"], rec["reason"]) == (status, reason)
    assert rec["rows_decoded"] == 4 and rec["accelerator"] == "cpu-actor"
    assert rec["actor_s"] == pytest.approx(9.0 + 0.5)            # the parts' later snapshot of h:1, and h:9


def test_an_attempt_without_a_record_is_timed_to_its_last_trace(tmp_path, monkeypatch):
    """A killed attempt stays `running` on disk: shown as ended without record, timed up to its last
    heartbeat or marker, counted from its markers; the heartbeat keeps the record current meanwhile."""
    fs, root = _fs(tmp_path)
    monkeypatch.setattr(ledger, "HEARTBEAT_S", 0.05)
    started = time.time() - 100.0
    a = Attempt(fs, root, started, num_gpus=1.0, shards_todo=2)
    a.__enter__()
    _marker(root, "s0", a.id, 5, {"h:1": _stats(10, 20.0)}, started + 40.0)
    path = tmp_path / "_attempts" / f"{a.id}.json"
    deadline = time.time() + 30
    while json.loads(path.read_text())["rows_decoded"] != 5 and time.time() < deadline:
        time.sleep(0.05)
    a._stop.set()                                 # the process dies: no close, the heartbeat stops
    a._thread.join()
    beat = json.loads(path.read_text())
    assert beat["status"] == "running" and beat["rows_decoded"] == 5 and beat["heartbeat_at"] > started + 40.0
    (rec,) = read_attempts(fs, root)
    assert rec["status"] == UNRECORDED and rec["ended_at"] == beat["heartbeat_at"]
    assert rec["wall_s"] == pytest.approx(beat["heartbeat_at"] - started)
    assert rec["rows_decoded"] == 5 and rec["accelerator_s"] == pytest.approx(20.0)

    beat.update(heartbeat_at=started, rows_decoded=0, actors={})   # died before its first heartbeat
    path.write_text(json.dumps(beat))
    (rec,) = read_attempts(fs, root)
    assert rec["wall_s"] == pytest.approx(40.0) and rec["rows_decoded"] == 5 and rec["actor_s"] == pytest.approx(20.0)


def test_totals_are_sums_over_attempts(tmp_path):
    fs, root = _fs(tmp_path)
    records = []
    for i, (rows, actor_s) in enumerate(((10, 4.0), (0, 0.0), (3, 1.0))):
        with Attempt(fs, root, 1000.0 + i, num_gpus=0.0, shards_todo=1) as a:
            if rows:
                _marker(root, f"s{i}", a.id, rows, {f"h:{i}": _stats(1, actor_s)}, time.time())
            records.append(a.close("completed"))
    attempts = read_attempts(fs, root)
    assert [a["attempt"] for a in attempts] == [r["attempt"] for r in records]   # oldest first
    spent = ledger_totals(attempts)
    assert spent["attempts"] == 3 and spent["by_status"] == {"completed": 3} and spent["rows_decoded"] == 13
    assert spent["wall_s"] == pytest.approx(sum(r["wall_s"] for r in records))
    assert spent["actor_s"] == spent["accelerator_s"] == pytest.approx(5.0)
    assert spent["first_started_at"] == 1000.0
    rows = table(attempts)
    assert [r["shards_committed"] for r in rows] == [1, 0, 1] and set(rows[0]) == set(ledger.TABLE_FIELDS)


def test_sigterm_raises_terminated_and_exits_143():
    previous = signal.getsignal(signal.SIGTERM)
    try:
        catch_sigterm()
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)                          # interrupted by the handler long before
        os.kill(os.getpid(), signal.SIGTERM)       # a repeat while stopping is ignored
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert interrupted_exit(Terminated("SIGTERM"))[0] == EXIT_TERMINATED == 143
    assert interrupted_exit(KeyboardInterrupt()) == (EXIT_INTERRUPTED, "interrupted; rerun the same command to resume")


def test_error_reasons_group_rows_that_failed_the_same_way():
    errors = [f"line {n}: malformed JSON: Expecting value: line 1 column {n} (char {n - 1})" for n in (3, 9, 12)]
    errors += ["missing id", "missing id", "line 7: line too long: 20000000 bytes", "x\n" * 200]
    reasons = error_reasons(errors)
    assert reasons["malformed JSON: Expecting value: line N column N (char N)"] == 3 and reasons["missing id"] == 2
    assert reasons["line too long: N bytes"] == 1
    assert all(len(k) <= 100 and "\n" not in k for k in reasons) and error_kind("x\n" * 200).endswith("…")
    many = error_reasons([f"kind {chr(65 + i)}" for i in range(25)])
    assert len(many) == 21 and many["(other reasons)"] == 5
    assert top_reasons({"a": 1, "b": 5, "c": 5, "d": 2}, most=3) == "b ×5; c ×5; d ×2; 1 other reason(s)"
    code, message = row_error_exit({"rows": 10, "errors": 4, "error_reasons": {"missing id": 3, "empty prompt": 1}}, 0.0)
    assert code == 3 and "top reasons: missing id ×3; empty prompt ×1" in message


def test_a_cut_short_attempt_reads_only_the_newest_parts(tmp_path, monkeypatch):
    """Each actor's latest snapshot is in its newest parts; reading is bounded (a SIGTERM's grace is short)."""
    import datetime
    fs, root = _fs(tmp_path)
    monkeypatch.setattr(ledger, "MAX_PARTS_READ", 1)
    os.makedirs(tmp_path / "_parts" / "s1")
    for i, (row_steps, elapsed) in enumerate(((50, 9.0), (20, 7.0))):   # the second is the newest (its
        part = pa.table({"actor": ["h:1"], "actor_stats": [json.dumps(_stats(row_steps, elapsed))]})  # mtime)
        path = f"{root}/_parts/s1/00000000{i}-1-0-0.rows.arrow"
        write_ipc(fs, path, part)
        os.utime(path, (1000.0 + i, 1000.0 + i))
    with pytest.raises(KeyboardInterrupt):
        with Attempt(fs, root, time.time(), num_gpus=0.0, shards_todo=1):
            raise KeyboardInterrupt
    assert read_attempts(fs, root)[0]["actor_s"] == pytest.approx(7.0)
    stamp = datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc)
    assert ledger._modified({"LastModified": stamp}) == stamp.timestamp() and ledger._modified({"mtime": 3.5}) == 3.5
