"""All decode policies on the held-out set in one run: SchED, Fast-dLLM, Prophet, TSPD, TSPD+CE,
TSPD+CE+SchED against the fixed-step baseline.

    .venv/bin/python bench/policies.py [--limit N] [--controller embedded/taskmix/controller/tspd.pt]
    .venv/bin/python bench/policies.py --workload longform [--controller embedded/longform/controller/tspd.pt]
    .venv/bin/python bench/policies.py --workload reasoning [--controller embedded/reasoning/controller/tspd.pt]

Reports NFE, step and wall-clock speedup, exact match (the task metric), retention against the
baseline's accuracy, agreement with the baseline's outputs, and QPS_4 = speedup x (exact match /
baseline exact match)^4 (report/qps.py).
Writes bench/results/policies.json (policies_<workload>.json for the long-form and reasoning workloads).
"""
from __future__ import annotations

import argparse

import torch

from bench.common import print_table, save_result
from bench.decode import run_variants, workload_setup, workload_variants
from embedded.evaluate import WORKLOADS, load_heldout
from decoder.offline import decode_prompts

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
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="toy")
    ap.add_argument("--config", default=None, help="base config (default: the workload's)")
    ap.add_argument("--controller", default=None,
                    help="TSPD controller (default: embedded/taskmix/controller/tspd.pt; longform: embedded/longform/controller/tspd.pt)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    controller = args.controller or ("embedded/taskmix/controller/tspd.pt" if args.workload == "toy"
                                     else f"embedded/{args.workload}/controller/tspd.pt")
    cfg, adapter, tok = workload_setup(args.workload, args.config, controller)
    rows = load_heldout(args.limit, args.workload)
    decode_prompts(adapter, tok, [r["prompt"] for r in rows[:32]], cfg.decode, args.batch_size)  # warm-up
    table = run_variants(workload_variants(args.workload, TRACE_AWARE), adapter, tok, rows, cfg.decode,
                         args.batch_size, args.workload)
    text = print_table(table, ["policy", "nfe", "mean_steps", "step_speedup", "wall_speedup", "exact_match",
                               "retention", *(["token_f1"] if "token_f1" in table[0] else []), "agreement", "qps4"])
    out = "policies" if args.workload == "toy" else f"policies_{args.workload}"
    save_result(out, {"workload": args.workload, "prompts": len(rows), "controller": controller,
                      "decode": {"gen_length": cfg.decode.gen_length, "block_length": cfg.decode.block_length,
                                 "steps": cfg.decode.steps},
                      "results": table, "table": text})


if __name__ == "__main__":
    main()
