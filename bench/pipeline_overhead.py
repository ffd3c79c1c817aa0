"""End-to-end pipeline throughput vs the bare in-process decode loop, same prompts, model and config.

    .venv/bin/python bench/pipeline_overhead.py [--sizes 256 2048] [--shards 8]

For each workload size: (1) the bare loop — tokenize, SlotScheduler over one DecodeEngine, detokenize,
in this process; (2) the whole pipeline — a local Ray, read shards -> parse -> preprocess -> decode actor
-> shard datasink (Arrow outputs, traces, manifest). Reports sequences/s of both, the end-to-end ratio
(wall clock including Ray start and actor start-up), and the in-actor ratio (the decode actor's own
sequences/s over its active time, from the manifest). Writes bench/results/pipeline_overhead.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from common import print_table, save_result  # noqa: I001
from embedded.taskmix import EVAL_TASKS, sample_examples
from stages.config import load_config
from stages.decode.adapters import load_model
from stages.decode.offline import decode_prompts
from stages.preprocess import load_tokenizer
from stages.run import run_pipeline


def write_shards(folder: Path, n: int, shards: int) -> list[str]:
    examples = sample_examples(7_000_001, n, EVAL_TASKS)
    folder.mkdir(parents=True, exist_ok=True)
    per = (n + shards - 1) // shards
    for s in range(shards):
        rows = [{"id": f"p{s}-{i}", "prompt": e.prompt} for i, e in enumerate(examples[s * per:(s + 1) * per])]
        (folder / f"shard-{s:03d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [e.prompt for e in examples]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 2048])
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--config", default="configs/default.yaml")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the decode actor runs with actors.threads = 1: same for the bare loop
    work = Path(tempfile.mkdtemp(prefix="pipeline-overhead-"))
    table = []
    for n in args.sizes:
        prompts = write_shards(work / f"in-{n}", n, args.shards)
        cfg = load_config(args.config, [f"input.url={work}/in-{n}/*.jsonl", f"output.url={work}/out-{n}",
                                        "progress=false"])
        adapter = load_model(cfg.model.path, cfg.model.family, cfg.model.dtype, "cpu")
        bare = decode_prompts(adapter, load_tokenizer(cfg.model.path), prompts, cfg.decode, cfg.decode.max_batch_size)
        start = time.perf_counter()
        manifest = run_pipeline(cfg)
        wall = time.perf_counter() - start
        actor = max(manifest["actors"].values(), key=lambda a: a["sequences"])
        bare_sps, pipe_sps = n / bare.seconds, manifest["totals"]["outputs"] / wall
        table.append({"prompts": n, "bare_seq_s": bare_sps, "pipeline_seq_s": pipe_sps,
                      "end_to_end_ratio": pipe_sps / bare_sps, "actor_seq_s": actor["sequences_per_s"],
                      "in_actor_ratio": actor["sequences_per_s"] / bare_sps, "pipeline_wall_s": wall,
                      "bare_wall_s": bare.seconds, "fixed_overhead_s": wall - n / actor["sequences_per_s"]})
    shutil.rmtree(work, ignore_errors=True)
    text = print_table(table, ["prompts", "bare_seq_s", "pipeline_seq_s", "end_to_end_ratio", "actor_seq_s",
                               "in_actor_ratio", "pipeline_wall_s", "fixed_overhead_s"])
    save_result("pipeline_overhead", {"results": table, "table": text})


if __name__ == "__main__":
    main()
