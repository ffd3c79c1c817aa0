"""What calibration costs, and whether its choice holds on rows it did not see (task-mix model).

    .venv/bin/python bench/calibrate.py [--prompts 2000] [--pilot 500] [--held-out 500] [--target 0.99]

Writes `--prompts` task-mix prompts with their reference answers into 8 JSONL shards, then:
  baseline     one full-budget decode of the pilot rows in this process (model load included, no traces):
               what a single trial run of the pilot costs
  calibrate    `pipeline.py calibrate --pilot N` (driver/calibrate.py: sampling, the traced full-budget decode,
               the default grid replayed, scoring, the layer, the plot), same model load included
  held-out     `--held-out` rows the pilot did not draw, decoded for real at the full budget, with the chosen
               layer, and with the cheapest setting meeting the target on those rows themselves (from a replay
               on their own traces): accuracy against the references and mean NFE
Prints a table and writes bench/results/calibrate.json; the ratio calibrate / baseline is the cost of
calibrating in units of one decode of the pilot.
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
from driver.calibrate import calibrate
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


def accuracy(table: pa.Table, answers: dict[str, str]) -> float:
    return sum(o.strip() == answers[i].strip() for i, o in zip(table["id"].to_pylist(), table["output"].to_pylist())) \
        / max(table.num_rows, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--pilot", type=int, default=500)
    ap.add_argument("--held-out", type=int, default=500)
    ap.add_argument("--target", type=float, default=0.99)
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="calibrate-bench-"))
    try:
        rows = write_prompts(work / "in", args.prompts)
        answers = {r["id"]: r["answer"] for r in rows}
        job = load_config(None, [f"input.url={work / 'in'}", "decode.policy=[sched]", "progress=false"])
        full = load_config(None, [f"input.url={work / 'in'}", "decode.policy=[none]", "decode.trace=off"])
        result = calibrate(job, pilot=args.pilot, seed=0, target=args.target, out=str(work / "calibrated.yaml"),
                           reference_field="answer")
        pilot_ids = {r["id"] for r in result["pilot"]}
        pilot_rows = [r for r in rows if r["id"] in pilot_ids]
        _, baseline_s = decode_rows(pilot_rows, full)
        held = [r for r in rows if r["id"] not in pilot_ids][:args.held_out]
        full_out, _ = decode_rows(held, full)
        chosen = result["chosen"]
        layer = load_config(None, [f"input.url={work / 'in'}", "decode.trace=off"],
                            mappings=[_layer(work / "calibrated.yaml")]) if chosen else None
        chosen_out = decode_rows(held, layer)[0] if layer else None
        (work / "held").mkdir()
        (work / "held" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
        oracle = calibrate(load_config(None, [f"input.url={work / 'held'}", "decode.policy=[sched]"]),
                           pilot=len(held), seed=0, target=args.target, out=str(work / "oracle.yaml"),
                           reference_field="answer", bound="point")["chosen"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    full_acc = accuracy(full_out, answers)
    summary = {"pilot": result["pilot_rows"], "settings": len(result["rows"]) - 1, "decode_s": result["decode_s"],
               "replay_s": result["replay_s"], "calibrate_s": result["wall_s"], "baseline_decode_s": baseline_s,
               "ratio": result["wall_s"] / baseline_s}
    held_rows = [{"run": "full budget", "accuracy": full_acc, "mean_nfe": sum(full_out["nfe"].to_pylist()) / full_out.num_rows}]
    if chosen_out is not None:
        held_rows.append({"run": "chosen: " + chosen["setting"], "accuracy": accuracy(chosen_out, answers),
                          "mean_nfe": sum(chosen_out["nfe"].to_pylist()) / chosen_out.num_rows})
    if oracle is not None:   # replayed on the held-out rows' own traces: the best that meets the target there
        held_rows.append({"run": "best on these rows: " + oracle["setting"], "accuracy": oracle["accuracy"],
                          "mean_nfe": oracle["mean_nfe"]})
    text = print_table([summary], list(summary)) + "\n\n" + print_table(held_rows, ["run", "accuracy", "mean_nfe"])
    print(text)
    checks = {}
    if chosen_out is not None and oracle is not None:
        checks = {"accuracy_kept": held_rows[1]["accuracy"] / max(full_acc, 1e-9),
                  "nfe_over_best": held_rows[1]["mean_nfe"] / oracle["mean_nfe"]}
        print(f"held-out: the chosen setting keeps {checks['accuracy_kept']:.3f} of the full budget's accuracy, "
              f"at {checks['nfe_over_best']:.3f}x the NFE of the best setting meeting the target on those rows")
    save_result("calibrate", {"args": vars(args), "cost": summary, "held_out": held_rows, "chosen": chosen,
                              "oracle": oracle, "checks": checks,
                              "pilot_full_budget_accuracy": result["full_budget_accuracy"], "table": text})
    check_invariant(chosen is not None, "no setting met the target on the pilot")


def _layer(path: Path) -> dict:
    import yaml
    return yaml.safe_load(path.read_text())


if __name__ == "__main__":
    main()
