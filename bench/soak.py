"""Soak: a long S3 -> S3 job with faults injected on a schedule, checked for lost and duplicated rows.

    .venv/bin/python bench/soak.py                              # 50,000 prompts in 100 shards
    .venv/bin/python bench/soak.py --prompts 2000 --shards 10 --name soak_smoke   # smoke run, < 1 minute

A moto S3 server runs in this process behind the fault proxy (tests/support/faults/s3_proxy.py); the job is
`pipeline.py` with its own local Ray and two decode actors, reading and writing that server. As the rows
processed pass fixed fractions, bench/soak_monitor.py injects: a decode actor SIGKILL, an S3 server restart
(5 s down), a burst of 503 SlowDown answers, a write worker SIGKILL and a driver SIGKILL, after which the
same command is run again (resume). Every second it samples rows processed and committed, the driver's and
the decode actors' resident memory. At the end it reads every output and error id back and counts rows lost
and duplicated. Prints a table, writes bench/results/<name>.json; exits non-zero when a row is lost or
duplicated, the job fails, or memory grows (the last quarter's peak over 1.25 x the first half's + 64 MB).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.common import ROOT, check_invariant, print_table, save_result
from bench.soak_monitor import FaultEvent, Progress, Sample, as_dicts, fire, memory, quarter_peaks, throughput
from embedded.taskmix.tasks import EVAL_TASKS, sample_examples
from tests.support.faults.s3_proxy import FaultProxy, S3Server

SCHEDULE = [("actor_kill", 0.15), ("s3_restart", 0.30), ("slowdown_burst", 0.45), ("writer_kill", 0.55),
            ("driver_kill", 0.70)]
BUCKET = "soak"


def write_prompts(fs, n: int, shards: int) -> dict[str, int]:
    """n taskmix prompts in `shards` JSONL shards on S3; returns rows per shard name."""
    examples = sample_examples(11_000_001, n, EVAL_TASKS)
    per, sizes = -(-n // shards), {}
    for s in range(shards):
        chunk = examples[s * per:(s + 1) * per]
        rows = "".join(json.dumps({"id": f"p{s}-{i}", "prompt": e.prompt}) + "\n" for i, e in enumerate(chunk))
        fs.pipe(f"{BUCKET}/in/shard-{s:04d}.jsonl", rows.encode())
        sizes[f"shard-{s:04d}"] = len(chunk)
    return sizes


def command(proxy_url: str, extra: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / "pipeline.py"), f"input.url=s3://{BUCKET}/in/",
            f"output.url=s3://{BUCKET}/out", f"storage.endpoint_url={proxy_url}", "ray.address=local",
            "actors.min_actors=2", "actors.max_actors=2", "progress=false", *extra]


def accounting(fs, sizes: dict[str, int]) -> dict:
    """Every id in outputs/ and errors/, read back: lost (expected, absent) and duplicated (twice or more)."""
    import pyarrow as pa
    ids: Counter = Counter()
    for name in sizes:
        for sub in ("outputs", "errors"):
            path = f"{BUCKET}/out/{sub}/{name}.arrow"
            if fs.exists(path):
                with fs.open(path, "rb") as f:
                    ids.update(pa.ipc.open_file(f).read_all().column("id").to_pylist())
    expected = {f"p{s}-{i}" for s, n in enumerate(sizes.values()) for i in range(n)}
    markers = len(fs.ls(f"{BUCKET}/out/_done")) if fs.exists(f"{BUCKET}/out/_done") else 0
    return {"rows_expected": len(expected), "rows_found": sum(ids.values()),
            "rows_lost": len(expected - set(ids)), "rows_duplicated": sum(c - 1 for c in ids.values() if c > 1),
            "rows_unexpected": len(set(ids) - expected), "shards_committed": markers}


def soak(args) -> dict:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    for k, v in {"AWS_ACCESS_KEY_ID": "soak", "AWS_SECRET_ACCESS_KEY": "soak", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_EC2_METADATA_DISABLED": "true"}.items():
        os.environ.setdefault(k, v)
    import s3fs
    server = S3Server()
    proxy = FaultProxy(server.url)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": server.url}, use_listings_cache=False)
    fs.mkdir(BUCKET)
    sizes = write_prompts(fs, args.prompts, args.shards)
    total = sum(sizes.values())
    events = [] if args.no_faults else [FaultEvent(k, f) for k, f in SCHEDULE]
    progress, samples, runs = Progress(sizes), [], []
    logs = Path(tempfile.mkdtemp(prefix="soak-logs-"))
    cmd = command(proxy.url, args.set)
    started = time.time()
    while len(runs) < 3:
        log = logs / f"run-{len(runs)}.log"
        job = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"},
                               stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        while job.poll() is None:
            time.sleep(1.0)
            progress.update(proxy.log)
            rows = progress.rows_processed
            for ev in events:
                if ev.fired_at_s is None and rows >= ev.at_fraction * total:
                    fire(ev, job.pid, server, proxy, started, rows)
            samples.append(Sample(round(time.time() - started, 2), rows, progress.rows_committed,
                                  *memory(job.pid)))
        runs.append({"returncode": job.returncode, "ended_at_s": round(time.time() - started, 2), "log": str(log)})
        print(f"run {len(runs)}: exit {job.returncode} at {runs[-1]['ended_at_s']} s "
              f"({progress.rows_committed}/{total} rows committed)", file=sys.stderr)
        if job.returncode != -9:
            break
    wall = time.time() - started
    proxy.schedule()
    result = {"prompts": total, "shards": len(sizes), "wall_s": round(wall, 1), "runs": runs,
              "faults": as_dicts(events), "accounting": accounting(fs, sizes),
              "requests": len(proxy.log), "requests_failed_or_faulted": sum(1 for *_, w in proxy.log if w != "200"
                                                                           and not w.startswith(("20", "30", "404"))),
              "throughput_rows_s": {"start": throughput(samples, 0.0, 0.2), "end": throughput(samples, 0.8, 1.0),
                                    "overall": round(total / wall, 2)},
              "driver_peak_mb_by_quarter": quarter_peaks(samples, "driver_rss_mb"),
              "actor_peak_mb_by_quarter": quarter_peaks(samples, "actor_rss_mb"),
              "samples": as_dicts(samples), "command": cmd}
    proxy.stop()
    server.stop()
    return result


def flat(peaks: list[float]) -> bool:
    """No growth with rows processed: the last quarter's peak within 1.25 x the first half's + 64 MB."""
    return peaks[3] <= 1.25 * max(peaks[0], peaks[1]) + 64


def report(r: dict) -> None:
    a, t = r["accounting"], r["throughput_rows_s"]
    fired = [f for f in r["faults"] if f["fired_at_s"] is not None]
    d, ac = r["driver_peak_mb_by_quarter"], r["actor_peak_mb_by_quarter"]
    ok = r["runs"][-1]["returncode"] == 0 and a["rows_lost"] == a["rows_duplicated"] == 0
    rows = [{"what": k, "value": v} for k, v in [
        ("prompts / shards", f"{r['prompts']} / {r['shards']}"),
        ("faults injected", ", ".join(f"{f['kind']}@{f['rows_at']}" for f in fired) or "none"),
        ("faults survived", f"{len(fired) if ok else 0} of {len(fired)}"),
        ("driver runs (exit codes)", " ".join(str(x["returncode"]) for x in r["runs"])),
        ("rows lost / duplicated", f"{a['rows_lost']} / {a['rows_duplicated']} (found {a['rows_found']} of "
                                   f"{a['rows_expected']}, {a['shards_committed']} shards committed)"),
        ("throughput rows/s start / end / overall", f"{t['start']} / {t['end']} / {t['overall']}"),
        ("driver peak MB by quarter of rows", " ".join(map(str, d)) + (" (flat)" if flat(d) else " (GROWS)")),
        ("actor peak MB by quarter of rows", " ".join(map(str, ac)) + (" (flat)" if flat(ac) else " (GROWS)")),
        ("wall time", f"{r['wall_s']} s")]]
    print_table(rows, ["what", "value"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=50_000)
    ap.add_argument("--shards", type=int, default=100)
    ap.add_argument("--name", default="soak", help="results file bench/results/<name>.json")
    ap.add_argument("--no-faults", action="store_true", help="the same job without injected faults (a baseline)")
    ap.add_argument("--set", nargs="*", default=[], help="extra pipeline key=value overrides")
    args = ap.parse_args()
    result = soak(args)
    report(result)
    save_result(args.name, result)
    a = result["accounting"]
    check_invariant(result["runs"][-1]["returncode"] == 0, f"the last run exited {result['runs'][-1]['returncode']}")
    check_invariant(a["rows_lost"] == 0 and a["rows_duplicated"] == 0 and a["rows_unexpected"] == 0,
                    f"rows lost {a['rows_lost']}, duplicated {a['rows_duplicated']}")
    check_invariant(flat(result["driver_peak_mb_by_quarter"]) and flat(result["actor_peak_mb_by_quarter"]),
                    "peak memory grows with the rows processed")


if __name__ == "__main__":
    main()
