"""Cost of step tracing: the same decode with decode.trace = off | steps | tokens, plus Arrow conversion.

    .venv/bin/python bench/trace_cost.py [--repeats 3]

Writes bench/results/trace_cost.json (best-of-repeats wall time per level, ratio to `off`).
"""
from __future__ import annotations

import argparse
import time

import torch

from bench.common import print_table, save_result
from bench.decode import variant_config
from embedded.evaluate import load_heldout
from settings.loader import load_config
from decoder.build import load_model
from decoder.offline import decode_prompts
from stages.write.trace_tables import step_table, token_table
from stages.preprocess import load_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config("configs/default.yaml")
    adapter, tok = load_model(cfg.model.path), load_tokenizer(cfg.model.path)
    prompts = [r["prompt"] for r in load_heldout()]
    table = []
    for level in ("off", "steps", "tokens"):
        dcfg = variant_config(cfg.decode, {"trace": level, "policy": ["none"]})
        best, best_arrow = float("inf"), 0.0
        for _ in range(args.repeats):
            run = decode_prompts(adapter, tok, prompts, dcfg, 32)
            start = time.perf_counter()
            if level != "off":
                ids, traces = [r.id for r in run.results], [r.trace for r in run.results]
                step_table(ids, traces, [r.exit_reason for r in run.results])
                token_table(ids, traces)
            arrow = time.perf_counter() - start
            if run.seconds + arrow < best + best_arrow:
                best, best_arrow = run.seconds, arrow
        table.append({"trace": level, "decode_s": best, "arrow_s": best_arrow, "total_s": best + best_arrow})
    for row in table:
        row["ratio_vs_off"] = row["total_s"] / table[0]["total_s"]
    text = print_table(table, ["trace", "decode_s", "arrow_s", "total_s", "ratio_vs_off"])
    save_result("trace_cost", {"prompts": len(prompts), "policy": "none", "results": table, "table": text})


if __name__ == "__main__":
    main()
