"""Cost and step accounting report of a finished run: `python pipeline.py report <run-url> [--out DIR]
[--baseline URL] [--price-per-gpu-hour X] [--config YAML]`.

Reads the run's `outputs/`, `errors/`, `traces/` and `_manifest.json` through fsspec (local paths or
object storage; S3 endpoint from `--config`'s storage section, else AWS_ENDPOINT_URL) and aggregates
them file by file, record batch by record batch, reading only the columns it needs (Arrow IPC
`included_fields`): no more than one shard's outputs and one record batch of a trace are in memory.

Accounting (one row per shard plus a `__run__` row):
  NFE            forward passes x rows = step-trace rows (the outputs' `nfe` column when traces are off)
  steps saved    sum(step_budget) - NFE;  step speedup = sum(step_budget) / NFE
  accelerator-s  each decode actor's busy time (its scheduler's `elapsed_s` in the manifest) x the
                 accelerators it holds (`actors.num_gpus`; with num_gpus = 0 the report counts CPU
                 actor-seconds and says so in the `accelerator` column), attributed to rows by their
                 slot time (`slot_s`): a row's share of its actor is slot_s / the actor's total slot_s.
                 An actor without stats falls back to sum(slot_s) / decode.max_batch_size.
  cost           accelerator-s / 3600 x --price-per-gpu-hour; per 1k generated tokens as well
  start-up       the actors' model-load time (manifest actors.*.load_s) x accelerators, on the run row
  --baseline     agreement = exact match of `output` over the ids present in both runs;
                 step speedup vs baseline = baseline NFE / run NFE over those ids;
                 QPS_4 = that speedup x (score / baseline score)^4 (report/qps.py) with agreement as
                 the score (no reference answers; the baseline's own agreement is 1)
Reading and aggregation live in report/scan.py, plots and the HTML page in report/plots.py.
Writes summary.parquet, summary.csv, four PNG plots and report.html, and prints a short summary.
"""
from __future__ import annotations

import json
import math
import os
import posixpath
import shutil
import tempfile
from collections import defaultdict

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from settings.schema import StorageConfig
from report.scan import (RUN_ROW, Agreement, PlotData, ShardStats, compare_baseline, count_rows,
                                iter_batches, load_run, run_settings, scan_outputs, scan_steps, scan_token_margins)
from stages.storage import filesystem, join
from settings.schema import ConfigError

N_CURVE_POINTS = 2000


# ----- cost -------------------------------------------------------------------------------------------
def accelerator_info(config: dict) -> tuple[str, float]:
    """('gpu', GPUs per actor) or ('cpu-actor', 1.0) when the actors hold no GPU."""
    num_gpus = float(config.get("actors", {}).get("num_gpus", 0.0) or 0.0)
    return ("gpu", num_gpus) if num_gpus > 0 else ("cpu-actor", 1.0)


def actor_rates(manifest: dict, shards: list[ShardStats], units: float, max_batch_size: int) -> dict[str, float]:
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
        rates[a] = busy * units / s if s > 0 else 0.0
    return rates


def cumulative_cost(fs, root: str, names: list[str], rates: dict, price: float, total_rows: int) -> dict:
    """Cumulative cost (and the full-step-budget estimate) after each sequence, in row order
    (shard, line): outputs carry per-row durations, not absolute finish times. <= N_CURVE_POINTS points."""
    stride = max(1, math.ceil(total_rows / N_CURVE_POINTS))
    xs, ys, full = [0], [0.0], [0.0]
    done, cost, cost_full = 0, 0.0, 0.0
    for n in names:
        path = join(root, "outputs", f"{n}.arrow")
        if not fs.exists(path):
            continue
        for b in iter_batches(fs, path, ["slot_s", "actor", "steps_taken", "step_budget"]):
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


def startup_accelerator_s(manifest: dict, units: float) -> float:
    """Accelerator-seconds the decode actors spent loading tokenizer and model (manifest actors.*.load_s):
    paid for, but not decoding, so reported beside the cost rather than spread over rows."""
    return sum(float(a.get("load_s", 0.0) or 0.0) for a in (manifest.get("actors", {}) or {}).values()) * units


# ----- the summary table ------------------------------------------------------------------------------
def summary_row(shard: str, st: ShardStats, accel: str, units: float, accel_s: float, price: float,
                wall_s: float, reasons: list[str]) -> dict:
    cost = accel_s / 3600.0 * price
    row = {
        "shard": shard, "sequences": st.sequences, "errors": st.errors, "prompt_tokens": st.prompt_tokens,
        "generated_tokens": st.generated_tokens, "nfe": st.nfe,
        "nfe_source": "traces" if st.nfe_traced is not None else "outputs",
        "step_budget": st.step_budget, "steps_taken": st.steps_taken, "steps_saved": st.step_budget - st.nfe,
        "steps_saved_frac": (st.step_budget - st.nfe) / st.step_budget if st.step_budget else float("nan"),
        "step_speedup": st.step_budget / st.nfe if st.nfe else float("nan"),
        "mean_steps": st.nfe / st.sequences if st.sequences else float("nan"),
        "refresh_row_steps": st.refreshes, "cached_row_steps": st.nfe - st.refreshes,
        "forward_tokens": st.forward_tokens, "encoder_passes": st.encoder_passes,
        "forward_tokens_per_generated": st.forward_tokens / st.generated_tokens if st.generated_tokens else float("nan"),
        "exit_reasons": json.dumps(dict(sorted(st.exits.items()))),
        **{f"exit_{r}": int(st.exits.get(r, 0)) for r in reasons},
        "wall_s": wall_s, "slot_s": st.slot_s, "accelerator": accel, "accelerators_per_actor": units,
        "accelerator_s": accel_s, "price_per_hour": price, "cost": cost,
        "cost_per_1k_generated_tokens": cost / st.generated_tokens * 1000 if st.generated_tokens else float("nan"),
    }
    return row


def _merge(shards: list[ShardStats]) -> ShardStats:
    t = ShardStats(RUN_ROW)
    traced = [s.nfe_traced for s in shards if s.nfe_traced is not None]
    for s in shards:
        for k in ("sequences", "errors", "prompt_tokens", "generated_tokens", "nfe_outputs", "step_budget",
                  "steps_taken", "slot_s", "refreshes", "forward_tokens", "encoder_passes"):
            setattr(t, k, getattr(t, k) + getattr(s, k))
        t.exits.update(s.exits)
    # NFE from traces only when every shard has them; otherwise the outputs' column for all
    if shards and len(traced) == len(shards):
        t.nfe_traced = sum(traced)
    else:
        for s in shards:
            s.nfe_traced = None
    return t


def build_report(run_url: str, out_dir: str, baseline: str | None = None, price: float = 2.0,
                 storage: StorageConfig | None = None) -> dict:
    """Aggregate a run, write every report file into the local directory `out_dir`; returns the numbers."""
    from report import plots as report_plots

    storage = storage or StorageConfig()
    fs, root = filesystem(run_url, storage)
    manifest, names = load_run(fs, root)
    config, warnings = run_settings(manifest)       # per-shard settings, not the last command's
    decode = config.get("decode", {})
    plots = PlotData()
    shards = []
    for n in names:
        st = ShardStats(n)
        scan_outputs(fs, root, n, st, plots)
        st.errors = count_rows(fs, join(root, "errors", f"{n}.arrow"))
        scan_steps(fs, root, n, st, plots)
        shards.append(st)
    total = _merge(shards)
    if total.nfe_traced is not None and total.nfe_traced != total.nfe_outputs:
        warnings.append(f"step traces hold {total.nfe_traced} rows but outputs sum nfe to {total.nfe_outputs}")
    if not plots.has_margin():
        plots.margin.clear()
        plots.margin_source = "tokens"
        for n in names:
            scan_token_margins(fs, root, n, decode.get("sched", {}).get("progress_mode", "t_over_T"), plots)

    accel, units = accelerator_info(config)
    rates = actor_rates(manifest, shards, units, int(decode.get("max_batch_size", 16)))
    reasons = sorted(total.exits)
    wall = float(manifest.get("wall_s", float("nan")))
    rows = []
    for st in shards:
        a_s = sum(rates.get(a, 0.0) * s for a, s in st.slot_by_actor.items())
        rows.append(summary_row(st.name, st, accel, units, a_s, price, float("nan"), reasons))
    run_accel = sum(r["accelerator_s"] for r in rows)
    rows.append(summary_row(RUN_ROW, total, accel, units, run_accel, price, wall, reasons))
    rows[-1]["sequences_per_s"] = total.sequences / wall if wall and wall == wall else float("nan")
    startup = startup_accelerator_s(manifest, units)
    rows[-1].update(startup_accelerator_s=startup, startup_cost=startup / 3600.0 * price)
    for r in rows[:-1]:
        r.update(sequences_per_s=float("nan"), startup_accelerator_s=float("nan"), startup_cost=float("nan"))

    agreement = None
    if baseline:
        bfs, broot = filesystem(baseline, storage)
        per = compare_baseline(fs, root, names, bfs, broot)
        agreement = Agreement()
        for r in rows[:-1]:
            r.update(per[r["shard"]].columns())
            agreement.add(per[r["shard"]])
        rows[-1].update(agreement.columns())

    os.makedirs(out_dir, exist_ok=True)
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, os.path.join(out_dir, "summary.parquet"))
    pacsv.write_csv(table, os.path.join(out_dir, "summary.csv"))
    plots.curve = cumulative_cost(fs, root, names, rates, price, total.sequences)
    info = {"run": run_url, "baseline": baseline, "config": config, "manifest": manifest, "price": price,
            "accelerator": accel, "units": units, "warnings": warnings, "out_dir": out_dir}
    pngs = report_plots.write_plots(out_dir, plots, decode)
    report_plots.write_html(out_dir, rows, info, pngs)
    return {"rows": rows, "run": rows[-1], "plots": pngs, "files": ["summary.parquet", "summary.csv",
                                                                   *pngs.values(), "report.html"],
            "warnings": warnings, "out_dir": out_dir}


# ----- CLI ---------------------------------------------------------------------------------------------
def _is_local(url: str) -> bool:
    return fsspec.utils.get_protocol(url) in ("file", "local")


def default_out(run_url: str) -> str:
    if _is_local(run_url):
        path = run_url[len("file://"):] if run_url.startswith("file://") else run_url
        return os.path.join(path, "report")
    name = posixpath.basename(run_url.rstrip("/")) or "run"
    return os.path.join(os.getcwd(), f"report-{name}")


def fmt_summary(result: dict) -> str:
    r = result["run"]
    money = lambda x: "-" if x != x else f"${x:,.2f}" if x >= 1 else f"${x:.4g}"  # noqa: E731
    lines = [
        ("shards", len(result["rows"]) - 1), ("sequences", r["sequences"]), ("errors", r["errors"]),
        ("prompt / generated tokens", f"{r['prompt_tokens']} / {r['generated_tokens']}"),
        (f"NFE (from {r['nfe_source']})", r["nfe"]), ("step budget", r["step_budget"]),
        ("steps saved", f"{r['steps_saved']} ({r['steps_saved_frac']:.1%}, {r['step_speedup']:.2f}x fewer steps)"),
        ("exit reasons", ", ".join(f"{k}={v}" for k, v in json.loads(r["exit_reasons"]).items()) or "-"),
        ("wall time", f"{r['wall_s']:.1f} s" if r["wall_s"] == r["wall_s"] else "- (no manifest)"),
        (f"{'GPU' if r['accelerator'] == 'gpu' else 'CPU actor'}-seconds", f"{r['accelerator_s']:.2f}"
         + (f" ({r['accelerators_per_actor']:g} GPU/actor)" if r["accelerator"] == "gpu" else " (actors.num_gpus=0)")),
        (f"cost at ${r['price_per_hour']:g}/h", money(r["cost"])),
        ("cost per 1k generated tokens", money(r["cost_per_1k_generated_tokens"])),
        ("actor start-up (model load)", f"{r['startup_accelerator_s']:.2f} accelerator-s, "
         f"{money(r['startup_cost'])} (not in the cost above)"),
    ]
    if "agreement" in r:
        lines += [("baseline agreement", f"{r['agreement']:.4f} over {r['baseline_matched']} ids"),
                  ("step speedup vs baseline", f"{r['step_speedup_vs_baseline']:.3f}x"),
                  ("QPS_4", f"{r['qps4']:.3f}")]
    lines.append(("report", os.path.join(result["out_dir"], "report.html")))
    width = max(len(k) for k, _ in lines)
    text = "\n".join(f"{k:<{width}}  {v}" for k, v in lines)
    return text + "".join(f"\nwarning: {w}" for w in result["warnings"])


def run_report(args) -> dict:
    """Entry point of `pipeline.py report`: args.run_url, out, baseline, price_per_gpu_hour, config."""
    storage = StorageConfig()
    if getattr(args, "config", None):
        from settings.loader import load_config
        storage = load_config(args.config).storage
    out = args.out or default_out(args.run_url)
    price = float(getattr(args, "price_per_gpu_hour", 2.0))
    if price < 0:
        raise ConfigError("--price-per-gpu-hour must be >= 0")
    if _is_local(out):
        result = build_report(args.run_url, out, args.baseline, price, storage)
    else:  # an object-store --out: build locally, then upload the files
        tmp = tempfile.mkdtemp(prefix="report-")
        try:
            result = build_report(args.run_url, tmp, args.baseline, price, storage)
            ofs, opath = filesystem(out, storage)
            ofs.makedirs(opath, exist_ok=True)
            for f in result["files"]:
                ofs.put(os.path.join(tmp, f), join(opath, f))
            result["out_dir"] = out
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(fmt_summary(result))
    return result
