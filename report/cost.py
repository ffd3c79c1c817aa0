"""Time and cost of runs for the report (report/main.py): accelerator-seconds from the run ledger and the
decode actors' stats, their share per row, cost curves, and the comparison with a baseline's cost.

Two accelerator-second figures, both x `actors.num_gpus` (CPU actor-seconds when it is 0):
  spent    the run ledger's total over attempts (manifest `spent`, driver/ledger.py): everything the
           output root cost, work later thrown away (redone, overwritten, interrupted) included. The run
           row's `accelerator_s` and `cost`. A manifest from before the ledger: the outputs' figure.
  outputs  the busy time of the actors whose rows are in the outputs (manifest `actors`, the latest
           snapshot of each in the shard markers), shared among rows by slot time: the per-shard rows,
           and the per-prompt cost the baseline comparison projects (what producing these outputs took).
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from driver.ledger import units
from report.scan import ShardFiles, ShardStats, iter_batches, out_schema

N_CURVE_POINTS = 2000


def accelerator_info(config: dict) -> tuple[str, float]:
    """('gpu', GPUs per actor) or ('cpu-actor', 1.0) when the actors hold no GPU."""
    return units(float((config.get("actors", {}) or {}).get("num_gpus", 0.0) or 0.0))


def actor_rates(manifest: dict, shards: list[ShardStats], units_per_actor: float,
                max_batch_size: int) -> dict[str, float]:
    """Accelerator-seconds per slot-second of every actor: busy_s x units / its rows' total slot_s."""
    slot = defaultdict(float)
    for st in shards:
        for a, s in st.slot_by_actor.items():
            slot[a] += s
    stats = manifest.get("actors", {}) or {}
    rates = {}
    for a, s in slot.items():
        busy = float(stats.get(a, {}).get("elapsed_s", 0.0) or 0.0)
        if busy <= 0:
            busy = s / max(max_batch_size, 1)   # no stats: each slot is 1/B of the actor
        rates[a] = busy * units_per_actor / s if s > 0 else 0.0
    return rates


def outputs_accelerator_s(manifest: dict, units_per_actor: float) -> float:
    """Busy time of the actors behind the outputs (manifest `actors`) x units."""
    return sum(float(a.get("elapsed_s", 0.0) or 0.0) for a in (manifest.get("actors") or {}).values()) * units_per_actor


def spent(manifest: dict, units_per_actor: float) -> dict:
    """What the output root cost over all attempts: accelerator-s, model-load accelerator-s, wall time,
    attempts, rows decoded. From the ledger (manifest `spent`); else this manifest's own figures."""
    ledger = manifest.get("spent")
    if ledger:
        return {"accelerator_s": float(ledger["accelerator_s"]), "startup_accelerator_s": float(ledger["load_s"]) * units_per_actor,
                "wall_s": float(ledger["wall_s"]), "attempts": int(ledger["attempts"]),
                "rows_decoded": int(ledger["rows_decoded"]), "ledger": True}
    load = sum(float(a.get("load_s", 0.0) or 0.0) for a in (manifest.get("actors") or {}).values())
    return {"accelerator_s": outputs_accelerator_s(manifest, units_per_actor),
            "startup_accelerator_s": load * units_per_actor, "wall_s": float(manifest.get("wall_s", float("nan"))),
            "attempts": 1, "rows_decoded": int((manifest.get("totals") or {}).get("rows", 0)), "ledger": False}


def cumulative_cost(fs, files: dict[str, ShardFiles], rates: dict, price: float, total_rows: int) -> dict:
    """Cumulative cost (and the full-step-budget estimate) after each sequence, in row order
    (shard, line): outputs carry per-row durations, not absolute finish times. <= N_CURVE_POINTS points."""
    stride = max(1, math.ceil(total_rows / N_CURVE_POINTS))
    xs, ys, full = [0], [0.0], [0.0]
    done, cost, cost_full = 0, 0.0, 0.0
    for f in files.values():
        for b in iter_batches(fs, f.outputs, out_schema(["slot_s", "actor", "steps_taken", "step_budget"])):
            if not b.num_rows:
                continue
            slot = b.column("slot_s").to_numpy(zero_copy_only=False).astype(np.float64)
            actors = b.column("actor").to_pylist()
            rate = np.array([rates.get(a or "", 0.0) for a in actors])
            row = slot * rate / 3600.0 * price
            ratio = b.column("step_budget").to_numpy().astype(np.float64) / np.maximum(
                b.column("steps_taken").to_numpy().astype(np.float64), 1.0)
            c, cf = cost + np.cumsum(row), cost_full + np.cumsum(row * ratio)
            idx = np.arange(done + 1, done + b.num_rows + 1)
            keep = (idx % stride == 0) | (idx == total_rows)
            xs += idx[keep].tolist()
            ys += c[keep].tolist()
            full += cf[keep].tolist()
            done, cost, cost_full = done + b.num_rows, float(c[-1]), float(cf[-1])
    return {"sequences": xs, "cost": ys, "cost_full_budget": full}


def baseline_cost_columns(run: dict, base: dict, price: float) -> dict:
    """Both runs' cost and the difference. `run`/`base`: accelerator_s (spent), outputs_accelerator_s,
    prompts. Saved = baseline - run (positive: the run is cheaper); the projection per million prompts
    uses each run's outputs cost per prompt."""
    def per_prompt(r: dict) -> float:
        return r["outputs_accelerator_s"] / 3600.0 * price / r["prompts"] if r["prompts"] else float("nan")
    return {"baseline_accelerator_s": base["accelerator_s"], "baseline_cost": base["accelerator_s"] / 3600.0 * price,
            "baseline_prompts": base["prompts"],
            "accelerator_h_saved": (base["accelerator_s"] - run["accelerator_s"]) / 3600.0,
            "cost_saved": (base["accelerator_s"] - run["accelerator_s"]) / 3600.0 * price,
            "cost_per_prompt": per_prompt(run), "baseline_cost_per_prompt": per_prompt(base),
            "saving_per_million_prompts": (per_prompt(base) - per_prompt(run)) * 1e6}
