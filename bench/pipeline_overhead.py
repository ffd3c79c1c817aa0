"""End-to-end pipeline throughput vs the bare in-process decode loop, same prompts, model and config.

    .venv/bin/python bench/pipeline_overhead.py [--sizes 256 2048 8192] [--shards 8]

For each workload size: (1) the bare loop — tokenize, SlotScheduler over one DecodeEngine, detokenize,
in this process, model already loaded, the faster of a run before and a run after the pipeline runs; (2) the whole pipeline — read shards -> parse -> preprocess ->
decode actor -> shard datasink (Arrow outputs, traces, manifest), run twice: `cold` on a Ray instance
started for it (Ray start-up included, as `./run.sh` pays it) and `warm` on the Ray instance left
running (a job submitted to a running cluster; the decode actor still starts and loads its model).
Reports sequences/s of each, their ratios to the bare loop, the in-actor ratio (the decode actor's own
sequences/s over its active time), the fixed start-up costs, and `break_even_prompts`: the workload at
which the warm end-to-end ratio reaches 0.9 given that fixed cost and the in-actor ratio (none when the
in-actor ratio itself is under 0.9). Writes bench/results/pipeline_overhead.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import ray
import torch

from bench.common import print_table, save_result
from embedded.taskmix.tasks import EVAL_TASKS, sample_examples
from settings.loader import load_config
from decoder.build import load_model
from decoder.offline import decode_prompts
from stages.preprocess import load_tokenizer
from driver.run import init_ray, run_pipeline

TARGET = 0.9


def write_shards(folder: Path, n: int, shards: int) -> list[str]:
    examples = sample_examples(7_000_001, n, EVAL_TASKS)
    folder.mkdir(parents=True, exist_ok=True)
    per = (n + shards - 1) // shards
    for s in range(shards):
        rows = [{"id": f"p{s}-{i}", "prompt": e.prompt} for i, e in enumerate(examples[s * per:(s + 1) * per])]
        (folder / f"shard-{s:03d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [e.prompt for e in examples]


def timed_run(cfg) -> tuple[float, dict, float]:
    """(wall seconds, manifest, seconds from the call to the decode actor's first step)."""
    start = time.perf_counter()
    epoch = time.time()
    manifest = run_pipeline(cfg)
    wall = time.perf_counter() - start
    first = min(a["started_at"] for a in manifest["actors"].values() if a.get("started_at"))
    return wall, manifest, first - epoch


def break_even(fixed_s: float, bare_sps: float, in_actor: float) -> float | None:
    """Smallest N with N/bare / (fixed + N/(in_actor*bare)) >= TARGET."""
    slack = 1 - TARGET / in_actor
    return TARGET * fixed_s * bare_sps / slack if slack > 0 else None


def measure(work: Path, n: int, shards: int, config: str, device: str = "cpu", quick: bool = False) -> dict:
    """`quick`: one bare run and the cold run only (the warm figures repeat the cold ones)."""
    prompts = write_shards(work / f"in-{n}", n, shards)
    on_gpu = ["model.device=cuda", "actors.num_gpus=1", "ray.num_gpus=1"] if device == "cuda" else []

    def cfg_for(tag: str):
        return load_config(config, [f"input.url={work}/in-{n}/*.jsonl", f"output.url={work}/out-{n}-{tag}",
                                    "progress=false", *on_gpu])
    cfg = cfg_for("cold")
    adapter = load_model(cfg.model.path, cfg.model.family, cfg.model.dtype, device)

    def bare_seconds() -> float:
        return decode_prompts(adapter, load_tokenizer(cfg.model.path), prompts, cfg.decode,
                              cfg.decode.max_batch_size).seconds
    bare_runs = [bare_seconds()]
    ray.shutdown()
    t = time.perf_counter()
    init_ray(cfg)
    ray_init_s = time.perf_counter() - t
    cold_wall, manifest, first_step_s = timed_run(cfg)
    warm_wall, cold_wall = cold_wall, cold_wall + ray_init_s
    if not quick:
        warm_wall, manifest, first_step_s = timed_run(cfg_for("warm"))
        bare_runs.append(bare_seconds())   # before and after the pipeline: the best of two (noisy machine)
    bare_sps = n / min(bare_runs)
    actor = max(manifest["actors"].values(), key=lambda a: a["sequences"])
    in_actor = actor["sequences_per_s"] / bare_sps
    fixed = warm_wall - n / actor["sequences_per_s"]
    return {"prompts": n, "bare_seq_s": bare_sps, "bare_wall_s": min(bare_runs), "bare_runs_s": bare_runs,
            "cold_wall_s": cold_wall, "cold_ratio": n / cold_wall / bare_sps,
            "warm_wall_s": warm_wall, "warm_ratio": n / warm_wall / bare_sps,
            "in_actor_ratio": in_actor, "ray_init_s": ray_init_s, "to_first_step_s": first_step_s,
            "actor_load_s": actor.get("load_s", float("nan")), "warm_fixed_s": fixed,
            "break_even_prompts": break_even(fixed, bare_sps, in_actor)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 2048, 8192])
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cuda: the bare loop and the decode actor on the GPU (one actor, one GPU)")
    ap.add_argument("--quick", action="store_true", help="one bare run and the cold run only (smoke runs)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the decode actor runs with actors.threads = 1: same for the bare loop
    work = Path(tempfile.mkdtemp(prefix="pipeline-overhead-"))
    try:
        table = [measure(work, n, args.shards, args.config, args.device, args.quick) for n in args.sizes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for row in table:
        if row["break_even_prompts"] is not None:
            row["break_even_prompts"] = int(round(row["break_even_prompts"]))
    text = print_table(table, ["prompts", "bare_seq_s", "cold_ratio", "warm_ratio", "in_actor_ratio",
                               "ray_init_s", "to_first_step_s", "actor_load_s", "warm_fixed_s",
                               "break_even_prompts"])
    name = "pipeline_overhead" if args.device == "cpu" else "gpu_pipeline_overhead"
    save_result(name, {"device": args.device, "quick": args.quick, "target_ratio": TARGET, "results": table,
                       "table": text})


if __name__ == "__main__":
    main()
