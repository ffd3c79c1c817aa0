"""All decode policies on the held-out set in one run: SchED, Fast-dLLM, Prophet, TSPD, TSPD+CE,
TSPD+CE+SchED against the fixed-step baseline.

    .venv/bin/python bench/policies.py [--limit N] [--controller embedded/controller/tspd.pt]

Reports NFE, step and wall-clock speedup, exact match (the task metric), retention against the
baseline's accuracy, agreement with the baseline's outputs, and QPS_4 = speedup x (exact match /
baseline exact match)^4 (stages/qps.py).
Writes bench/results/policies.json.
"""
from __future__ import annotations

import argparse

import torch

from common import print_table, save_result  # noqa: I001
from decode import VARIANTS, run_variants
from embedded.evaluate import load_heldout
from stages.config import load_config
from stages.decode.adapters import load_model
from stages.decode.offline import decode_prompts
from stages.preprocess import load_tokenizer

TRACE_AWARE = {
    "tspd": {"policy": ["tspd"]},
    "tspd+ce": {"policy": ["tspd", "ce"]},
    "tspd+ce+sched": {"policy": ["tspd", "ce", "sched"], "sched.aggregate": "min", "sched.schedule": "exp",
                      "sched.k": 16.0},
    "fastdllm+ce": {"policy": ["fastdllm", "ce"]},
    "sched-exp-k16-min+ce": {"policy": ["ce", "sched"], "sched.schedule": "exp", "sched.k": 16.0,
                             "sched.aggregate": "min"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--controller", default="embedded/controller/tspd.pt")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(None, ["decode.trace=off", f"decode.tspd.controller_path={args.controller}"])
    adapter = load_model(cfg.model.path, cfg.model.family, cfg.model.dtype, "cpu")
    tok = load_tokenizer(cfg.model.path)
    rows = load_heldout(args.limit)
    decode_prompts(adapter, tok, [r["prompt"] for r in rows[:32]], cfg.decode, args.batch_size)  # warm-up
    table = run_variants({**VARIANTS, **TRACE_AWARE}, adapter, tok, rows, cfg.decode, args.batch_size)
    text = print_table(table, ["policy", "nfe", "mean_steps", "step_speedup", "wall_speedup", "exact_match",
                               "retention", "agreement", "qps4"])
    save_result("policies", {"prompts": len(rows), "controller": args.controller, "results": table, "table": text})


if __name__ == "__main__":
    main()
