"""Work kept across an interrupt: a job stopped at ~90 % of its rows decoded keeps how many of them?

    .venv/bin/python bench/interrupt.py [--prompts 3000] [--shards 6] [--at 0.9] [--signals SIGTERM SIGKILL]

Writes `--prompts` task-mix prompts into `--shards` JSONL shards and runs `pipeline.py run` on them (local
Ray, one decode actor) under a pseudo-terminal, so its progress line (rows the decode actors have decoded,
stages/decoded_counter.py) refreshes twice a second. When that count reaches `--at` of the rows, the driver
gets the signal. Then it counts the rows the interrupted run kept (committed shards + committed parts), reruns
the same command to the end and checks the outputs: every id once, the same output text as an uninterrupted
run, and how many rows the rerun decoded again (rows whose `actor` is the rerun's).
Target (issue: preemption): an interrupt at 90 % keeps >= 80 % of the decoded rows; 0 lost, 0 duplicated.
Writes bench/results/interrupt.json.
"""
from __future__ import annotations

import argparse
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fsspec
import pyarrow.ipc as ipc

from bench.calibrate import write_prompts
from bench.common import check_invariant, print_table, save_result
from stages.write.formats import find_file, iter_batches

ROOT = Path(__file__).resolve().parent.parent
PROGRESS = re.compile(rb"(\d+)(?:/\d+ |row )\[")


def command(inp: Path, out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / "pipeline.py"), f"input.url={inp}/*.jsonl", f"output.url={out}",
            "actors.max_actors=1", "actors.threads=1", "ray.object_store_mb=256", *extra]


def run_until(cmd: list[str], at_rows: int | None, how: str) -> dict:
    """Run `cmd` under a pty; once its progress shows `at_rows` decoded, send `how`. Returns what happened."""
    pid, fd = pty.fork()
    if pid == 0:   # the child: the driver, its stderr a terminal (tqdm refreshes every 0.5 s)
        os.execv(cmd[0], cmd)
    started, decoded_at_signal, sent, buf = time.time(), None, None, b""
    while True:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf = (buf + chunk)[-4096:]
            counts = PROGRESS.findall(buf)
            if counts and at_rows is not None and sent is None and int(counts[-1]) >= at_rows:
                decoded_at_signal, sent = int(counts[-1]), time.time()
                os.kill(pid, getattr(signal, how))
    _, status = os.waitpid(pid, 0)
    return {"rc": os.waitstatus_to_exitcode(status), "wall_s": time.time() - started,
            "decoded_at_signal": decoded_at_signal, "signal_at_s": (sent - started) if sent else None}


def committed_batches(out: Path):
    """(shard name, record batch) of every committed shard's output."""
    fs = fsspec.filesystem("file")
    for marker in sorted((out / "_done").glob("*.json")) if (out / "_done").exists() else []:
        for batch in iter_batches(fs, find_file(fs, str(out / "outputs" / marker.stem))):
            yield marker.stem, batch


def rows_kept(out: Path) -> tuple[int, set[str]]:
    """(rows in committed outputs and committed parts, the decode actors that wrote them)."""
    n, actors, committed = 0, set(), set()
    for shard, batch in committed_batches(out):
        committed.add(shard)
        n += batch.num_rows
        actors |= set(batch.column("actor").to_pylist())
    for part in (out / "_parts").glob("*/*.rows.arrow") if (out / "_parts").exists() else []:
        if part.parent.name in committed:
            continue   # a committed shard's parts not removed yet: its rows are counted in its output
        t = ipc.open_file(str(part)).read_all()
        n += t.num_rows
        actors |= set(t["actor"].to_pylist())
    return n, actors - {None}


def outputs(out: Path) -> dict[str, tuple[str, str]]:
    """id -> (output text, actor) of every committed output row."""
    rows = {}
    for _, batch in committed_batches(out):
        for i, o, a in zip(batch.column("id").to_pylist(), batch.column("output").to_pylist(),
                           batch.column("actor").to_pylist()):
            assert i not in rows, f"duplicated id {i}"
            rows[i] = (o, a)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=3000)
    ap.add_argument("--shards", type=int, default=6)
    ap.add_argument("--at", type=float, default=0.9, help="fraction of the rows decoded when the signal is sent")
    ap.add_argument("--signals", nargs="+", default=["SIGTERM", "SIGKILL"])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides of every run")
    ap.add_argument("--name", default="interrupt", help="result name under bench/results/")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="interrupt-bench-"))
    table = []
    try:
        rows = write_prompts(work / "in", args.prompts, args.shards)
        ref = run_until(command(work / "in", work / "ref", args.set), None, "")
        check_invariant(ref["rc"] == 0, f"the uninterrupted run failed: rc {ref['rc']}")
        want = {i: o for i, (o, _) in outputs(work / "ref").items()}
        table.append({"run": "uninterrupted", "signal": "", "rc": ref["rc"], "wall_s": ref["wall_s"],
                      "decoded_at_signal": None, "kept_rows": len(want), "kept_of_decoded": None,
                      "redecoded": None, "lost": len(rows) - len(want), "equal_to_uninterrupted": True})
        for how in args.signals:
            out = work / f"out-{how}"
            cut = run_until(command(work / "in", out, args.set), int(args.at * len(rows)), how)
            kept, first_actors = rows_kept(out)
            done = run_until(command(work / "in", out, args.set), None, "")
            got = outputs(out)
            redecoded = sum(a not in first_actors for _, a in got.values())
            table.append({"run": "interrupted + rerun", "signal": how, "rc": f"{cut['rc']} / {done['rc']}",
                          "wall_s": cut["wall_s"] + done["wall_s"], "decoded_at_signal": cut["decoded_at_signal"],
                          "kept_rows": kept,
                          "kept_of_decoded": kept / cut["decoded_at_signal"] if cut["decoded_at_signal"] else None,
                          "redecoded": redecoded, "lost": len(rows) - len(got),
                          "equal_to_uninterrupted": {i: o for i, (o, _) in got.items()} == want})
            print(table[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = print_table(table, ["run", "signal", "rc", "wall_s", "decoded_at_signal", "kept_rows", "kept_of_decoded",
                               "redecoded", "lost", "equal_to_uninterrupted"])
    print(text)
    save_result(args.name, {"args": vars(args), "results": table, "table": text})
    check_invariant(all(r["lost"] == 0 and r["equal_to_uninterrupted"] for r in table),
                    "a row was lost or an output differs from the uninterrupted run")


if __name__ == "__main__":
    main()
