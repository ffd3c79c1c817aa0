"""The Python processor vs `pipeline.py run` on the same prompts, one Ray, one run.

    .venv/bin/python bench/processor_overhead.py [--prompts 2000] [--shards 8]

Both decode the same task-mix prompts with the embedded model and configs/default.yaml on one local Ray
(started once, before either is timed): `pipeline` is run_pipeline (read shards -> decode -> shard writer
with traces, manifest), `processor` is dllm.build_processor over an in-memory dataset of the same rows,
written with Ray Data's write_parquet. Each is timed twice, alternating, and the faster run counts (a
noisy shared machine). Reports sequences/s of each and their ratio, checks the outputs are identical, and
writes bench/results/processor_overhead.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import ray

import dllm
from bench.common import check_invariant, print_table, save_result
from bench.pipeline_overhead import write_shards
from driver.run import init_ray, run_pipeline
from settings.loader import load_config
from stages.write.formats import iter_batches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--shards", type=int, default=8)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="processor-overhead-"))
    try:
        write_shards(work / "in", args.prompts, args.shards)
        rows = [json.loads(x) for f in sorted((work / "in").glob("*.jsonl")) for x in f.read_text().splitlines()]
        cfg = load_config(None, [f"input.url={work}/in/*.jsonl", "progress=false"], defaults=True)
        init_ray(cfg)
        processor = dllm.build_processor(cfg)
        times: dict[str, list[float]] = {"pipeline": [], "processor": []}
        for attempt in range(2):
            out = work / f"cli-{attempt}"
            t0 = time.perf_counter()
            run_pipeline(load_config(None, [f"input.url={work}/in/*.jsonl", f"output.url={out}", "progress=false"],
                                     defaults=True))
            times["pipeline"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            processor(ray.data.from_items(rows)).write_parquet(str(work / f"api-{attempt}"))
            times["processor"].append(time.perf_counter() - t0)
        cli = {r["id"]: r["output_ids"] for f in sorted((work / "cli-0" / "outputs").glob("*.arrow"))
               for b in iter_batches(fsspec.filesystem("file"), str(f), ["id", "output_ids"])
               for r in b.to_pylist()}
        api = {r["id"]: r["output_ids"] for r in pq.read_table(work / "api-0", columns=["id", "output_ids"]).to_pylist()}
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    table = [{"path": k, "best_s": min(v), "runs_s": [round(x, 2) for x in v], "sequences_per_s": args.prompts / min(v)}
             for k, v in times.items()]
    ratio = table[1]["sequences_per_s"] / table[0]["sequences_per_s"]
    for row in table:
        row["ratio_vs_pipeline"] = row["sequences_per_s"] / table[0]["sequences_per_s"]
    text = print_table(table, ["path", "best_s", "sequences_per_s", "ratio_vs_pipeline"])
    save_result("processor_overhead", {"prompts": args.prompts, "shards": args.shards, "rows": table,
                                       "ratio": ratio, "identical_outputs": cli == api, "table": text})
    check_invariant(cli == api, "the processor and pipeline.py run decoded different tokens")


if __name__ == "__main__":
    main()
