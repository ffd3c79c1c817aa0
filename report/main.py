"""Cost and step accounting report of a finished run: `python pipeline.py report <run-url> [--out DIR]
[--baseline URL] [--price-per-gpu-hour X] [--config YAML] [storage.key=value ...]`.

Reads the run's `_manifest.json`, `outputs/`, `errors/` and `traces/` through fsspec (local paths or
object storage; S3 settings from `--config`'s storage section and `storage.*=` overrides, else
AWS_ENDPOINT_URL), outputs and errors in whichever format the run wrote (Arrow, Parquet, JSONL: one
reader, stages/write/formats.py), and aggregates them file by file, record batch by record batch, only
the columns it needs: no more than one shard's outputs and one record batch of a trace are in memory.
It is right or refuses: a run without a manifest, or missing a shard's outputs, errors or traces, is
refused (exit 2) with the files named (report/scan.py `locate`).

Accounting (one row per shard plus a `__run__` row):
  NFE            forward passes x rows = step-trace rows (the outputs' `nfe` column for shards decoded with
                 decode.trace=off)
  steps saved    sum(step_budget) - NFE;  step speedup = sum(step_budget) / NFE
  accelerator-s  per shard: each decode actor's busy time (its scheduler's `elapsed_s` in the manifest) x
                 the accelerators it holds (`actors.num_gpus`; with num_gpus = 0 the report counts CPU
                 actor-seconds and says so in the `accelerator` column), attributed to rows by their slot
                 time (`slot_s`); an actor without stats falls back to sum(slot_s) / decode.max_batch_size.
                 Run row: the total over the run ledger's attempts (report/cost.py, driver/ledger.py),
                 work later thrown away included
  cost           accelerator-s / 3600 x --price-per-gpu-hour; per 1k generated tokens as well
  wall time      the ledger's total over attempts; sequences/s = sequences / that
  start-up       the actors' model-load time x accelerators, on the run row, beside the cost
  --baseline     agreement = exact match of `output` over the ids present in both runs;
                 step speedup vs baseline = baseline NFE / run NFE over those ids;
                 QPS_4 = that speedup x (score / baseline score)^4 (report/qps.py) with agreement as
                 the score (no reference answers; the baseline's own agreement is 1); both runs' cost,
                 the money and accelerator-hours saved, and the saving per million prompts projected
                 from each run's cost per prompt (report/cost.py)
Reading and aggregation live in report/scan.py, costs in report/cost.py, the baseline in
report/baseline.py, plots and the HTML page in report/plots.py. Writes summary.parquet, summary.csv,
attempts.csv, four PNG plots and report.html, and prints a short summary.
"""
from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from report.baseline import baseline_figures, compare_baseline, load_baseline
from report.cost import (accelerator_info, actor_rates, baseline_cost_columns, cumulative_cost,
                         outputs_accelerator_s, spent)
from report.scan import (RUN_ROW, Agreement, PlotData, ShardStats, count_rows, load_run, locate, run_settings,
                         scan_outputs, scan_steps, scan_token_margins)
from report.what_if import fmt_what_if, parse_what_if
from report.what_if import what_if as run_what_if
from settings.schema import ConfigError, StorageConfig
from stages.storage import filesystem, join

#: The per-attempt table's columns (attempts.csv, the page), from the manifest's `attempts`.
ATTEMPT_COLS = ["attempt", "status", "reason", "wall_s", "shards_committed", "rows_decoded", "accelerator",
                "accelerator_s", "load_s"]


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
        "blocks": st.blocks, "blocks_exited": st.blocks_exited,
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
        for k in ("sequences", "prompts", "errors", "prompt_tokens", "generated_tokens", "nfe_outputs", "step_budget",
                  "steps_taken", "slot_s", "refreshes", "forward_tokens", "encoder_passes", "blocks",
                  "blocks_exited"):
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
                 storage: StorageConfig | None = None, what_if: list[str] | None = None) -> dict:
    """Aggregate a run, write every report file into the local directory `out_dir`; returns the numbers."""
    from report import plots as report_plots

    storage = storage or StorageConfig()
    fs, root = filesystem(run_url, storage)
    manifest, names = load_run(fs, root)
    files = locate(fs, root, manifest, names)       # refuses a run missing a file it needs
    settings = [parse_what_if(w) for w in what_if or []]   # refused before any work too
    if baseline:   # read (and refused) before any work
        bfs, broot = filesystem(baseline, storage)
        bmanifest, bfiles = load_baseline(bfs, broot)
    config, warnings = run_settings(manifest)       # per-shard settings, not the last command's
    decode = config.get("decode", {})
    plots = PlotData()
    shards = []
    for n, f in files.items():
        st = ShardStats(n)
        scan_outputs(fs, f, st, plots)
        st.errors = count_rows(fs, f.errors)
        scan_steps(fs, f, st, plots)
        shards.append(st)
    total = _merge(shards)
    if total.nfe_traced is not None and total.nfe_traced != total.nfe_outputs:
        warnings.append(f"step traces hold {total.nfe_traced} rows but outputs sum nfe to {total.nfe_outputs}")
    if not plots.has_margin():
        plots.margin.clear()
        plots.margin_source = "tokens"
        for f in files.values():
            scan_token_margins(fs, f, decode.get("sched", {}).get("progress_mode", "t_over_T"), plots)

    accel, units = accelerator_info(config)
    rates = actor_rates(manifest, shards, units, int(decode.get("max_batch_size", 16)))
    reasons = sorted(total.exits)
    paid = spent(manifest, units)
    wall = paid["wall_s"]
    rows = []
    for st in shards:
        a_s = sum(rates.get(a, 0.0) * s for a, s in st.slot_by_actor.items())
        rows.append(summary_row(st.name, st, accel, units, a_s, price, float("nan"), reasons))
    outputs_s = sum(r["accelerator_s"] for r in rows)
    rows.append(summary_row(RUN_ROW, total, accel, units, paid["accelerator_s"] if paid["ledger"] else outputs_s,
                            price, wall, reasons))
    rows[-1].update(sequences_per_s=total.sequences / wall if wall and wall == wall else float("nan"),
                    startup_accelerator_s=paid["startup_accelerator_s"],
                    startup_cost=paid["startup_accelerator_s"] / 3600.0 * price, outputs_accelerator_s=outputs_s,
                    attempts=paid["attempts"], rows_decoded=paid["rows_decoded"], prompts=total.prompts)
    for r in rows[:-1]:
        r.update(sequences_per_s=float("nan"), startup_accelerator_s=float("nan"), startup_cost=float("nan"),
                 outputs_accelerator_s=r["accelerator_s"], attempts=None, rows_decoded=None, prompts=None)

    if baseline:
        per = compare_baseline(fs, files, bfs, bfiles)
        agreement = Agreement()
        for r in rows[:-1]:
            r.update(per[r["shard"]].columns())
            agreement.add(per[r["shard"]])
        rows[-1].update(agreement.columns())
        base = baseline_figures(bfs, bmanifest, bfiles)
        if base["accelerator"] != accel:
            warnings.append(f"the run counts {accel} seconds and the baseline {base['accelerator']} seconds: "
                            f"their cost difference compares different accelerators")
        mine = {"accelerator_s": rows[-1]["accelerator_s"], "outputs_accelerator_s": outputs_accelerator_s(manifest, units),
                "prompts": total.prompts}
        rows[-1].update(baseline_cost_columns(mine, base, price))

    what_if_rows = run_what_if(fs, files, config, settings, outputs_s, price) if settings else []

    for key in dict.fromkeys(k for r in rows for k in r):   # run-row-only columns: empty on shard rows
        for r in rows:
            r.setdefault(key, None)
    os.makedirs(out_dir, exist_ok=True)
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, os.path.join(out_dir, "summary.parquet"))
    pacsv.write_csv(table, os.path.join(out_dir, "summary.csv"))
    attempts = [{k: a.get(k) for k in ATTEMPT_COLS} for a in manifest.get("attempts") or []]
    pacsv.write_csv(pa.Table.from_pylist(attempts) if attempts else pa.table({c: pa.array([], pa.string())
                                                                               for c in ATTEMPT_COLS}),
                    os.path.join(out_dir, "attempts.csv"))
    plots.curve = cumulative_cost(fs, files, rates, price, total.sequences)
    info = {"run": run_url, "baseline": baseline, "config": config, "manifest": manifest, "price": price,
            "accelerator": accel, "units": units, "warnings": warnings, "out_dir": out_dir, "attempts": attempts,
            "what_if": what_if_rows}
    pngs = report_plots.write_plots(out_dir, plots, decode)
    report_plots.write_html(out_dir, rows, info, pngs)
    return {"rows": rows, "run": rows[-1], "plots": pngs, "attempts": attempts, "what_if": what_if_rows,
            "files": ["summary.parquet", "summary.csv", "attempts.csv", *pngs.values(), "report.html"],
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


def _money(x: float) -> str:
    if x != x:
        return "-"
    sign = "-" if x < 0 else ""
    return f"{sign}${abs(x):,.2f}" if abs(x) >= 1 else f"{sign}${abs(x):.4g}"


def fmt_summary(result: dict) -> str:
    r = result["run"]
    unit = "GPU" if r["accelerator"] == "gpu" else "CPU actor"
    attempts = result.get("attempts") or []
    statuses = {}
    for a in attempts:
        statuses[a["status"]] = statuses.get(a["status"], 0) + 1
    lines = [
        ("shards", len(result["rows"]) - 1), ("sequences", r["sequences"]), ("errors", r["errors"]),
        ("prompt / generated tokens", f"{r['prompt_tokens']} / {r['generated_tokens']}"),
        (f"NFE (from {r['nfe_source']})", r["nfe"]), ("step budget", r["step_budget"]),
        ("steps saved", f"{r['steps_saved']} ({r['steps_saved_frac']:.1%}, {r['step_speedup']:.2f}x fewer steps)"),
        ("exit reasons", ", ".join(f"{k}={v}" for k, v in json.loads(r["exit_reasons"]).items()) or "-"),
        *([("blocks", f"{r['blocks']} decoded, {r['blocks_exited']} closed early by an exit policy")]
          if r.get("blocks") else []),
        ("KV cache", f"{r['refresh_row_steps']} of {r['nfe']} row-steps ran the full sequence, "
                     f"{r['forward_tokens']} forward tokens ({r['forward_tokens_per_generated']:.1f} per generated)"),
        ("attempts", f"{r['attempts']}" + (f" ({', '.join(f'{v} {k}' for k, v in sorted(statuses.items()))}), "
                                           f"{r['rows_decoded']} rows decoded in all" if attempts else "")),
        ("wall time", f"{r['wall_s']:.1f} s" + (" over all attempts" if r["attempts"] > 1 else "")),
        (f"{unit}-seconds", f"{r['accelerator_s']:.2f}"
         + (f" ({r['accelerators_per_actor']:g} GPU/actor)" if r["accelerator"] == "gpu" else " (actors.num_gpus=0)")
         + (f"; {r['outputs_accelerator_s']:.2f} behind the outputs kept" if r["attempts"] > 1 else "")),
        (f"cost at ${r['price_per_hour']:g}/h", _money(r["cost"])),
        ("cost per 1k generated tokens", _money(r["cost_per_1k_generated_tokens"])),
        ("actor start-up (model load)", f"{r['startup_accelerator_s']:.2f} accelerator-s, "
         f"{_money(r['startup_cost'])} (not in the cost above)"),
    ]
    if "agreement" in r:
        lines += [("baseline agreement", f"{r['agreement']:.4f} over {r['baseline_matched']} ids"),
                  ("step speedup vs baseline", f"{r['step_speedup_vs_baseline']:.3f}x"),
                  ("QPS_4", f"{r['qps4']:.3f}"),
                  ("baseline cost", f"{_money(r['baseline_cost'])} ({r['baseline_accelerator_s'] / 3600:.4g} "
                                    f"accelerator-h) vs {_money(r['cost'])} ({r['accelerator_s'] / 3600:.4g})"),
                  ("saved vs baseline", f"{_money(r['cost_saved'])}, {r['accelerator_h_saved']:.4g} accelerator-h"),
                  ("saving per 1M prompts", f"{_money(r['saving_per_million_prompts'])} (cost per prompt "
                                            f"{_money(r['baseline_cost_per_prompt'])} -> {_money(r['cost_per_prompt'])})")]
    lines.append(("report", os.path.join(result["out_dir"], "report.html")))
    width = max(len(k) for k, _ in lines)
    text = "\n".join(f"{k:<{width}}  {v}" for k, v in lines)
    if result.get("what_if"):
        text += "\n" + fmt_what_if(result["what_if"])
    return text + "".join(f"\nwarning: {w}" for w in result["warnings"])


def report_storage(config: str | None, overrides: list[str]) -> StorageConfig:
    """Storage settings of `report`: `--config`'s storage section, then `storage.key=value` overrides
    (checked as `run` checks them); any other key is refused."""
    other = [o for o in overrides if not o.split("=", 1)[0].startswith("storage.")]
    if other:
        raise ConfigError(f"report takes only storage.* settings (the run's own settings are in its manifest): "
                          f"{other[0]!r}")
    if not config and not overrides:
        return StorageConfig()
    from settings.loader import load_config
    return load_config(config, overrides).storage


def run_report(args) -> dict:
    """Entry point of `pipeline.py report`: args.run_url, out, baseline, price_per_gpu_hour, config, overrides."""
    storage = report_storage(getattr(args, "config", None), list(getattr(args, "overrides", None) or []))
    out = args.out or default_out(args.run_url)
    price = float(getattr(args, "price_per_gpu_hour", 2.0))
    what_if = list(getattr(args, "what_if", None) or [])
    if price < 0:
        raise ConfigError("--price-per-gpu-hour must be >= 0")
    if _is_local(out):
        result = build_report(args.run_url, out, args.baseline, price, storage, what_if)
    else:  # an object-store --out: build locally, then upload the files
        tmp = tempfile.mkdtemp(prefix="report-")
        try:
            result = build_report(args.run_url, tmp, args.baseline, price, storage, what_if)
            ofs, opath = filesystem(out, storage)
            ofs.makedirs(opath, exist_ok=True)
            for f in result["files"]:
                ofs.put(os.path.join(tmp, f), join(opath, f))
            result["out_dir"] = out
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(fmt_summary(result))
    return result
