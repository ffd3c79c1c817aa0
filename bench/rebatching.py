"""Dynamic rebatching vs static batching, one process, one run, same model and prompts (SchED on).

    .venv/bin/python bench/rebatching.py [--prompts 300] [--batch-size 16] [--threads 2] [--workload longform]

(a) static-keep:    static batches of B; finished rows stay in the forward until the slowest is done
                    (what the SchED, Fast-dLLM and dInfer code do)
(b) static-compact: static batches of B; finished rows are dropped from the forward (d2Cache style)
(c) rebatching:     B slots refilled from the queue as soon as a row exits (decoder/scheduler.py)

The exit policy is `decode.policy=[sched]` with the config's settings, except where a workload names its
own (POLICY_OVERRIDES: on the reasoning model SchED's paper defaults stop every row after one step, so
there would be no exits spread over steps to refill; it uses its best setting instead).

Reports sequences/s, slot utilisation (useful row-steps / (forwards x B)) and padding fraction; checks
that all three produce identical outputs and exits non-zero if not (after writing
bench/results/rebatching.json, so the failing run is on record).
"""
from __future__ import annotations

import argparse
import time

import torch

from bench.common import check_invariant, print_table, save_result
from embedded.evaluate import WORKLOADS, load_heldout
from settings.loader import load_config
from decoder.build import load_model
from decoder.masked.engine import DecodeEngine
from bench.decode import WORKLOAD_VARIANTS

#: The policy each workload is benchmarked with (default: SchED with the config's settings): a variant
#: of bench/decode.py's tables.
POLICY_OVERRIDES = {"reasoning": "fastdllm-0.95+sched-exp-k16-min"}


def policy_overrides(workload: str) -> list[str]:
    """`decode.*` key=value overrides of the workload's benchmarked policy."""
    if workload not in POLICY_OVERRIDES:
        return ["decode.policy=[sched]"]
    variant = WORKLOAD_VARIANTS[workload][POLICY_OVERRIDES[workload]]
    return [f"decode.{k}=[{','.join(v)}]" if isinstance(v, list) else f"decode.{k}={v}" for k, v in variant.items()]
from decoder.types import Request
from decoder.scheduler import SlotScheduler
from stages.preprocess import load_tokenizer


def run_static(adapter, dcfg, requests, b: int, keep: bool):
    engine = DecodeEngine(adapter, dcfg, keep_finished_in_batch=keep)
    start = time.perf_counter()
    results = engine.generate(requests, batch_size=b)
    seconds = time.perf_counter() - start
    return results, seconds, engine.stats


def run_rebatching(adapter, dcfg, requests, b: int):
    engine = DecodeEngine(adapter, dcfg)
    sched = SlotScheduler(engine, b, dcfg.max_batch_tokens, bucket=True)
    start = time.perf_counter()
    done = {r.id: r for r in sched.run(requests)}
    seconds = time.perf_counter() - start
    return [done[r.id] for r in requests], seconds, {**engine.stats, **sched.stats()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=500)
    ap.add_argument("--batch-size", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="toy")
    ap.add_argument("--config", default=None, help="config (default: configs/default.yaml; longform: configs/longform.yaml)")
    ap.add_argument("--out", default=None, help="result name (default rebatching, or rebatching_<workload>)")
    args = ap.parse_args()
    args.config = args.config or WORKLOADS[args.workload].config or "configs/default.yaml"
    args.out = args.out or ("rebatching" if args.workload == "toy" else f"rebatching_{args.workload}")
    torch.set_num_threads(args.threads)
    policy = policy_overrides(args.workload)
    cfg = load_config(args.config, ["decode.trace=off", *policy])
    adapter = load_model(cfg.model.path, cfg.model.family, cfg.model.dtype, "cpu")
    tok = load_tokenizer(cfg.model.path)
    rows = load_heldout(workload=args.workload)[: args.prompts]
    requests = [Request(r["id"], tok(r["prompt"], add_special_tokens=False)["input_ids"]) for r in rows]
    run_rebatching(adapter, cfg.decode, requests[:32], 16)  # warm-up
    table, outputs = [], {}
    for b in args.batch_size:
        for mode, fn in (("static-keep", lambda: run_static(adapter, cfg.decode, requests, b, True)),
                         ("static-compact", lambda: run_static(adapter, cfg.decode, requests, b, False)),
                         ("rebatching", lambda: run_rebatching(adapter, cfg.decode, requests, b))):
            results, seconds, s = fn()
            outputs[(b, mode)] = [r.output_ids for r in results]
            table.append({"B": b, "mode": mode, "sequences_per_s": len(results) / seconds, "seconds": seconds,
                          "forwards": s["forwards"], "slot_utilisation": s["useful_row_steps"] / (s["forwards"] * b),
                          "padding_fraction": s["pad_tokens"] / s["tokens"],
                          "steady_utilisation": s.get("steady_slot_utilisation", float("nan")),
                          "mean_steps": sum(r.steps_taken for r in results) / len(results)})
        base = next(t for t in table if t["B"] == b and t["mode"] == "static-keep")
        compact = next(t for t in table if t["B"] == b and t["mode"] == "static-compact")
        for t in table:
            if t["B"] == b:
                t["speedup_vs_keep"] = t["sequences_per_s"] / base["sequences_per_s"]
                t["speedup_vs_compact"] = t["sequences_per_s"] / compact["sequences_per_s"]
    identical = all(o == outputs[next(iter(outputs))] for o in outputs.values())
    text = print_table(table, ["B", "mode", "sequences_per_s", "slot_utilisation", "steady_utilisation",
                               "padding_fraction", "forwards",
                               "mean_steps", "speedup_vs_keep", "speedup_vs_compact"])
    print(f"outputs identical across modes and batch sizes: {identical}")
    last = [r for r in results]  # exit-step distribution of the last run, for bench/gpu_rebatching.py
    fractions = [r.steps_taken / r.step_budget for r in last]
    save_result(args.out, {"workload": args.workload, "prompts": len(rows), "policy": policy, "outputs_identical": identical,
                           "exit_fractions": fractions,
                           "results": table, "table": text})
    check_invariant(identical, "outputs differ across batching modes or batch sizes")


if __name__ == "__main__":
    main()
