"""Early-exit policies on the embedded model and the held-out set: steps, speed and exact-match quality.

    .venv/bin/python bench/decode.py [--limit N] [--threads 2] [--batch-size 32] [--workload toy|longform|reasoning]

For each policy (fixed-step baseline, SchED linear/cosine/exp k=4/exp k=16, Fast-dLLM, Prophet) it
decodes the same prompts through the same slot scheduler and reports NFE (forward passes x rows), step
speedup and wall-clock speedup against the baseline, exact-match accuracy, quality retention
(accuracy / baseline accuracy) and QPS_4 = speedup x (exact match / baseline exact match)^4 (report/qps.py,
the SchED paper's definition); on the long-form workload also token F1 (partial credit). Writes
bench/results/decode.json (`--workload longform`: decode_longform.json, on embedded/longform/ with
configs/longform.yaml; `--workload reasoning`: decode_reasoning.json, with the rows of WORKLOAD_VARIANTS).
"""
from __future__ import annotations

import argparse
import copy

import torch

from bench.common import print_table, save_result
from embedded.evaluate import WORKLOADS, accuracy, accuracy_by_task, load_heldout, token_score
from settings.loader import load_config
from decoder.build import load_model
from decoder.offline import decode_prompts
from stages.preprocess import load_tokenizer
from report.qps import qps

VARIANTS = {
    "none": {"policy": ["none"]},
    "sched-linear": {"policy": ["sched"], "sched.schedule": "linear"},
    "sched-cosine": {"policy": ["sched"], "sched.schedule": "cosine"},
    "sched-exp-k4": {"policy": ["sched"], "sched.schedule": "exp", "sched.k": 4.0},
    "sched-exp-k16": {"policy": ["sched"], "sched.schedule": "exp", "sched.k": 16.0},
    "sched-linear-min": {"policy": ["sched"], "sched.schedule": "linear", "sched.aggregate": "min"},
    "sched-cosine-min": {"policy": ["sched"], "sched.schedule": "cosine", "sched.aggregate": "min"},
    "sched-exp-k16-min": {"policy": ["sched"], "sched.schedule": "exp", "sched.k": 16.0, "sched.aggregate": "min"},
    "fastdllm": {"policy": ["fastdllm"]},
    "prophet": {"policy": ["prophet"]},
}
#: The row a workload's ratios refer to, first in its table (default: `none`, which stops a row at EOS).
#: The reasoning workload's quality criteria refer to the full budget: one token per step over the whole
#: 32-position window and no exit of any kind, not even at EOS.
BASELINES = {
    "reasoning": {"full": {"policy": ["none"], "stop_at_eos": False}},
}
#: Extra rows per workload. The reasoning workload (answer tokens that depend on each other) must show the
#: trade: fixed budgets below one token per step, SchED's paper defaults and Fast-dLLM at threshold 0.5,
#: and the settings that keep the full budget's accuracy at a fraction of its steps.
WORKLOAD_VARIANTS = {
    "reasoning": {
        "fixed-1/2": {"policy": ["none"], "steps": 16},
        "fixed-1/4": {"policy": ["none"], "steps": 8},
        "sched-paper": {"policy": ["sched"], "sched.schedule": "cosine", "sched.aggregate": "mean"},
        "fastdllm-0.5": {"policy": ["fastdllm"], "fastdllm.threshold_prob": 0.5},
        "fastdllm-0.95": {"policy": ["fastdllm"], "fastdllm.threshold_prob": 0.95},
        "fastdllm-0.95+sched-exp-k16-min": {"policy": ["fastdllm", "sched"], "fastdllm.threshold_prob": 0.95,
                                            "sched.schedule": "exp", "sched.k": 16.0, "sched.aggregate": "min"},
    },
}


def workload_variants(workload: str, *more: dict) -> dict:
    """The rows of a workload's table in order: its baseline, the common variants, its own, then `more`."""
    out = {**BASELINES.get(workload, {}), **VARIANTS, **WORKLOAD_VARIANTS.get(workload, {})}
    for extra in more:
        out.update(extra)
    return out


def variant_config(base, overrides: dict):
    cfg = copy.deepcopy(base)
    for key, value in overrides.items():
        target = cfg
        *path, last = key.split(".")
        for p in path:
            target = getattr(target, p)
        setattr(target, last, value)
    return cfg


def workload_setup(workload: str, config: str | None, controller: str | None = None):
    """(config, adapter, tokenizer) of a workload: its config file unless `config` names another."""
    extra = [f"decode.tspd.controller_path={controller}"] if controller else []
    cfg = load_config(config or WORKLOADS[workload].config, ["decode.trace=off", *extra])
    adapter = load_model(cfg.model.path, cfg.model.family, cfg.model.dtype, "cpu")
    return cfg, adapter, load_tokenizer(cfg.model.path)


def first_step_margins(adapter, tok, prompts, dcfg) -> dict:
    """From the token traces of a baseline run: mean step-0 margin at positions that end as EOS vs content.
    This is what SchED's mean aggregate sees at its first decision."""
    run = decode_prompts(adapter, tok, prompts, variant_config(dcfg, {"policy": ["none"], "trace": "tokens"}), 32)
    eos, content = [], []
    for r in run.results:
        at0 = r.trace.token_step == 0                    # step 0: every position is still masked
        step0 = dict(zip(r.trace.position[at0].tolist(), r.trace.tokens[at0, 2].tolist()))
        for pos, tok_id in enumerate(r.output_ids):
            (eos if tok_id in adapter.eos_token_ids else content).append(step0[pos])
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {"eos_positions": mean(eos), "content_positions": mean(content),
            "eos_fraction": len(eos) / (len(eos) + len(content))}


def run_variants(variants: dict, adapter, tok, rows: list[dict], dcfg, batch_size: int,
                 workload: str = "toy") -> list[dict]:
    """Decode `rows` once per variant; the first variant is the baseline the ratios refer to."""
    prompts = [r["prompt"] for r in rows]
    table, base = [], None
    for name, overrides in variants.items():
        run = decode_prompts(adapter, tok, prompts, variant_config(dcfg, overrides), batch_size)
        nfe = sum(r.steps_taken for r in run.results)
        acc, partial = accuracy(run.texts, rows, workload), token_score(run.texts, rows, workload)
        if base is None:
            base = {"nfe": nfe, "seconds": run.seconds, "acc": acc, "texts": run.texts, "partial": partial}
        speedup = base["nfe"] / nfe
        retention = acc / base["acc"] if base["acc"] else 0.0
        agreement = sum(a == b for a, b in zip(run.texts, base["texts"])) / len(rows)
        exits: dict[str, int] = {}
        for r in run.results:
            exits[r.exit_reason] = exits.get(r.exit_reason, 0) + 1
        table.append({
            "policy": name, "nfe": nfe, "mean_steps": nfe / len(rows), "step_speedup": speedup,
            "wall_s": run.seconds, "wall_speedup": base["seconds"] / run.seconds, "exact_match": acc,
            "retention": retention, "agreement": agreement, "qps4": qps(speedup, acc, base["acc"]),
            "exit_reasons": exits, "accuracy_by_task": accuracy_by_task(run.texts, rows, workload),
            **({"token_f1": partial, "token_f1_retention": partial / base["partial"] if base["partial"] else 0.0}
               if partial is not None else {}),
        })
        print(f"{name}: nfe {nfe} exact {acc:.3f} ({run.seconds:.1f} s)", flush=True)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="held-out prompts to use (default all 500)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--config", default=None,
                    help="base config (default: the schema's paper defaults; longform: configs/longform.yaml)")
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="toy")
    ap.add_argument("--out", default=None, help="result name (default decode, or decode_<workload>)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg, adapter, tok = workload_setup(args.workload, args.config)
    rows = load_heldout(args.limit, args.workload)
    prompts = [r["prompt"] for r in rows]
    decode_prompts(adapter, tok, prompts[:32], cfg.decode, args.batch_size)  # warm-up
    margins = first_step_margins(adapter, tok, prompts, cfg.decode)
    table = run_variants(workload_variants(args.workload), adapter, tok, rows, cfg.decode, args.batch_size,
                         args.workload)
    text = print_table(table, ["policy", "nfe", "mean_steps", "step_speedup", "wall_speedup", "exact_match",
                               "retention", *(["token_f1"] if "token_f1" in table[0] else []), "qps4"])
    print(f"first-step top-2 logit margin, mean over positions whose final token is end-of-text: "
          f"{margins['eos_positions']:.2f}; over answer-content positions: {margins['content_positions']:.2f}")
    out = args.out or ("decode" if args.workload == "toy" else f"decode_{args.workload}")
    save_result(out, {"workload": args.workload, "first_step_margins": margins, "prompts": len(rows),
                      "batch_size": args.batch_size,
                           "decode": {"gen_length": cfg.decode.gen_length, "block_length": cfg.decode.block_length,
                                      "steps": cfg.decode.steps, "remasking": cfg.decode.remasking},
                           "results": table, "table": text})


if __name__ == "__main__":
    main()
