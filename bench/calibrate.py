"""What calibration costs, and whether its choice holds on rows it did not see.

    .venv/bin/python bench/calibrate.py [--prompts 2000] [--pilot 500] [--held-out 500] [--target 0.99]
    .venv/bin/python bench/calibrate.py --workload reasoning [--pilot 200] [--decode-budget-s 120] [--seeds 10]

`--workload toy` (task-mix model, the default): writes `--prompts` task-mix prompts with their reference
answers into 8 JSONL shards (exact match). `--workload reasoning` (the reasoning model,
configs/reasoning.yaml): the job's input is the workload's 400 TSPD prompts (reference: the prompt's
letters, all the task's verifier reads), the held-out rows are its 512 held-out prompts, answers are judged
by the verifier (`embedded.reasoning.tasks:correct`), and the commit settings are decoded on the pilot too
(`--decode-budget-s`). Then:
  baseline     one full-budget decode of the pilot rows in this process (model load included, no traces):
               what a single trial run of the pilot costs
  calibrate    `pipeline.py calibrate --pilot N` (driver/calibrate.py: sampling, the traced full-budget decode,
               the default grid replayed, the commit settings decoded within the budget, scoring, the layer,
               the plot), same model load included
  held-out     `--held-out` rows the pilot did not draw, decoded for real at the full budget, with the chosen
               layer, and the cheapest setting meeting the target on those rows themselves (every setting
               scored on them by calibrate: replayed on their own traces, commit settings decoded on them; the
               target compared with each one's fraction as it is)
  seeds        (reasoning, `--seeds K`) the calibration repeated with pilot seeds 1 .. K-1: each choice's
               figures on the held-out rows, read from that same scoring of every setting on them (exact
               where replay is: tests/decoder/test_replay.py), so the check is seen over K pilots, not one
Both timed runs start after a warm-up that imports and loads everything once, so neither pays the process's
first imports. Prints a table and writes bench/results/calibrate.json (calibrate_reasoning.json); the ratio
calibrate / baseline is the cost of calibrating in units of one decode of the pilot (the exit grid on the
job's commit policy; the commit settings' part, decodes and replays, is listed apart: its budget is the
user's).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import torch

from bench.common import check_invariant, print_table, save_result
from driver.calibrate import calibrate, load_verifier
from embedded.taskmix.tasks import EVAL_TASKS, sample_examples
from settings.loader import load_config
from stages.decode import DecodeStage
from stages.preprocess import preprocess_batch


def write_prompts(folder: Path, n: int, shards: int = 8) -> list[dict]:
    rows = [{"id": f"p{i}", "prompt": e.prompt, "answer": e.answer}
            for i, e in enumerate(sample_examples(5_000_011, n, EVAL_TASKS))]
    folder.mkdir(parents=True)
    per = -(-n // shards)
    for s in range(shards):
        (folder / f"shard-{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[s * per:(s + 1) * per]))
    return rows


def decode_rows(rows: list[dict], cfg) -> tuple[pa.Table, float]:
    """Decode `rows` in this process with a fresh decode stage (model load included); (table, seconds)."""
    t0 = time.perf_counter()
    stage = DecodeStage(cfg)
    batch = preprocess_batch(_pipeline_rows(rows, cfg), cfg.model.path, cfg.decode, cfg.model.chat_template)
    out = asyncio.run(stage(batch))
    return out, time.perf_counter() - t0


def _pipeline_rows(rows: list[dict], cfg) -> pa.Table:
    from stages.processor import to_pipeline_rows
    return to_pipeline_rows(pa.Table.from_pylist(rows), cfg)


def workload_rows(workload: str, work: Path, n: int) -> tuple[list[dict], list[dict], list[str], str | None]:
    """(input rows, held-out candidates, base config overrides, verifier) of a workload, input written as
    JSONL shards under work/in."""
    if workload == "toy":
        rows = write_prompts(work / "in", n)
        return rows, rows, [], None
    from embedded.evaluate import load_heldout
    from embedded.reasoning.make_data import HERE
    from embedded.reasoning.tasks import letters_of
    prompts = [json.loads(line) for line in (HERE / "tspd" / "prompts.jsonl").read_text().splitlines() if line.strip()]
    rows = [{**r, "answer": letters_of(r["prompt"])} for r in prompts]
    (work / "in").mkdir(parents=True)
    (work / "in" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows, load_heldout(None, "reasoning"), ["decode.policy=[none]"], "embedded.reasoning.tasks:correct"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=("toy", "reasoning"), default="toy")
    ap.add_argument("--prompts", type=int, default=2000, help="toy: prompts written as the job's input")
    ap.add_argument("--pilot", type=int, default=None, help="pilot rows (default: toy 500, reasoning 200)")
    ap.add_argument("--held-out", type=int, default=500)
    ap.add_argument("--target", type=float, default=0.99)
    ap.add_argument("--bound", choices=("lower", "point"), default=None,
                    help="calibrate --bound (default: toy lower; reasoning point, since a 200-row pilot cannot show "
                         "0.99 at 95 %% confidence)")
    ap.add_argument("--seeds", type=int, default=1,
                    help="reasoning: pilots drawn with seeds 0 .. K-1, each choice checked on the held-out rows")
    ap.add_argument("--decode-budget-s", type=float, default=None,
                    help="commit settings decoded on the pilot (default: toy 0, reasoning 120)")
    args = ap.parse_args()
    reasoning = args.workload == "reasoning"
    args.pilot = args.pilot or (200 if reasoning else 500)
    budget = args.decode_budget_s if args.decode_budget_s is not None else (120.0 if reasoning else 0.0)
    args.bound = args.bound or ("point" if reasoning else "lower")
    if args.seeds > 1 and not reasoning:
        ap.error("--seeds needs --workload reasoning (its held-out rows are not in the job's input)")
    torch.set_num_threads(1)
    base = "configs/reasoning.yaml" if reasoning else None
    work = Path(tempfile.mkdtemp(prefix="calibrate-bench-"))
    try:
        rows, candidates, extra, verifier = workload_rows(args.workload, work, args.prompts)
        answers = {r["id"]: r["answer"] for r in [*rows, *candidates]}
        correct = load_verifier(verifier)
        job = load_config(base, [f"input.url={work / 'in'}", "decode.policy=[sched]", "progress=false", *extra])
        full = load_config(base, [f"input.url={work / 'in'}", "decode.policy=[none]", "decode.trace=off"])
        decode_rows(rows[:8], full)   # warm-up: imports, the model's files in the page cache
        result = calibrate(job, pilot=args.pilot, seed=0, target=args.target, out=str(work / "calibrated.yaml"),
                           reference_field="answer", verifier=verifier, decode_budget_s=budget, bound=args.bound)
        pilot_ids = {r["id"] for r in result["pilot"]}
        pilot_rows = [r for r in rows if r["id"] in pilot_ids]
        _, baseline_s = decode_rows(pilot_rows, full)
        held = [r for r in candidates if r["id"] not in pilot_ids][:args.held_out]
        full_out, _ = decode_rows(held, full)
        chosen = result["chosen"]
        layer = load_config(base, [f"input.url={work / 'in'}", "decode.trace=off"],
                            mappings=[_layer(work / "calibrated.yaml")]) if chosen else None
        chosen_out = decode_rows(held, layer)[0] if layer else None
        (work / "held").mkdir()
        (work / "held" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
        on_held = calibrate(load_config(base, [f"input.url={work / 'held'}", "decode.policy=[sched]", *extra]),
                            pilot=len(held), seed=0, target=args.target, out=str(work / "oracle.yaml"),
                            reference_field="answer", bound="point", verifier=verifier, decode_budget_s=budget * 10)
        metric = on_held["metric"]
        meeting = [r for r in on_held["rows"] if r[metric] >= args.target - 1e-12]
        oracle = min(meeting, key=lambda r: (r["mean_nfe"], r["setting"])) if meeting else None
        seeds = [seed_check(0, chosen, on_held, oracle)]
        for seed in range(1, args.seeds):
            other = calibrate(job, pilot=args.pilot, seed=seed, target=args.target, out=str(work / f"s{seed}.yaml"),
                              reference_field="answer", verifier=verifier, decode_budget_s=budget, bound=args.bound)
            seeds.append(seed_check(seed, other["chosen"], on_held, oracle))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def accuracy(table: pa.Table) -> float:
        return sum(correct(o, answers[i]) for i, o in zip(table["id"].to_pylist(), table["output"].to_pylist())) \
            / max(table.num_rows, 1)

    full_acc = accuracy(full_out)
    summary = {"pilot": result["pilot_rows"], "settings": len(result["rows"]) - 1, "decode_s": result["decode_s"],
               "replay_s": result["replay_s"], "calibrate_s": result["wall_s"] - result["commit_s"],
               "baseline_decode_s": baseline_s, "ratio": (result["wall_s"] - result["commit_s"]) / baseline_s,
               "commit_settings": len(result["commit_decodes"]), "commit_s": result["commit_s"]}
    held_rows = [{"run": "full budget", "accuracy": full_acc, "mean_nfe": sum(full_out["nfe"].to_pylist()) / full_out.num_rows}]
    if chosen_out is not None:
        held_rows.append({"run": "chosen: " + chosen["setting"], "accuracy": accuracy(chosen_out),
                          "mean_nfe": sum(chosen_out["nfe"].to_pylist()) / chosen_out.num_rows})
    if oracle is not None:   # on the held-out rows' own traces and decodes: the best that meets the target there
        held_rows.append({"run": "best on these rows: " + oracle["setting"], "accuracy": oracle["accuracy"],
                          "mean_nfe": oracle["mean_nfe"]})
    text = print_table([summary], list(summary)) + "\n\n" + print_table(held_rows, ["run", "accuracy", "mean_nfe"])
    if args.seeds > 1:
        text += "\n\n" + print_table(seeds, list(seeds[0]))
    print(text)
    checks = {}
    if chosen_out is not None and oracle is not None:
        checks = {"accuracy_kept": held_rows[1]["accuracy"] / max(full_acc, 1e-9),
                  "nfe_over_best": held_rows[1]["mean_nfe"] / oracle["mean_nfe"]}
        print(f"held-out: the chosen setting keeps {checks['accuracy_kept']:.3f} of the full budget's accuracy, "
              f"at {checks['nfe_over_best']:.3f}x the NFE of the best setting meeting the target on those rows")
    save_result("calibrate" + ("_reasoning" if reasoning else ""),
                {"args": {**vars(args), "decode_budget_s": budget}, "cost": summary, "held_out": held_rows,
                 "chosen": chosen, "oracle": oracle, "checks": checks, "verifier": verifier or "exact",
                 "commit_decodes": result["commit_decodes"], "seeds": seeds,
                 "pilot_full_budget_accuracy": result["full_budget_accuracy"], "table": text})
    check_invariant(chosen is not None, "no setting met the target on the pilot")


def seed_check(seed: int, chosen: dict | None, on_held: dict, oracle: dict | None) -> dict:
    """One pilot seed's choice, on the held-out rows: its accuracy over the full budget's, and its NFE over the
    best setting's that meets the target there (from calibrate's scoring of every setting on those rows)."""
    row = {"seed": seed, "chosen": chosen["setting"] if chosen else "(none met the target)"}
    held = next((r for r in on_held["rows"] if chosen and r["setting"] == chosen["setting"]), None)
    if held is None or oracle is None:
        return {**row, "accuracy_kept": None, "nfe_over_best": None, "ok": False}
    kept = held["accuracy"] / max(on_held["full_budget_accuracy"], 1e-9)
    over = held["mean_nfe"] / oracle["mean_nfe"]
    return {**row, "accuracy_kept": round(kept, 4), "nfe_over_best": round(over, 3),
            "ok": kept >= on_held["target"] - 1e-12 and over <= 1.10}


def _layer(path: Path) -> dict:
    import yaml
    return yaml.safe_load(path.read_text())


if __name__ == "__main__":
    main()
