"""Plots (matplotlib, Agg, PNG) and the static HTML page of the cost and step report (report/main.py).

Every function takes already-aggregated, bounded-size data (counts, per-progress sums, a curve of at
most a few thousand points), never raw traces. Figures are drawn without pyplot's global state.
"""
from __future__ import annotations

import html
import json
import math
import os

import matplotlib

matplotlib.use("Agg")
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import numpy as np  # noqa: E402

PLOT_FILES = {
    "exit_steps": ("exit_steps.png", "Exit steps against the step budget"),
    "margin_progress": ("margin_vs_progress.png", "Mean aggregated margin vs progress, with the SchED threshold"),
    "commit_heatmap": ("commit_heatmap.png", "Step at which each answer position was committed"),
    "cumulative_cost": ("cumulative_cost.png", "Cumulative cost vs sequences processed"),
}


def _figure(w: float = 7.0, h: float = 4.2):
    fig = Figure(figsize=(w, h), dpi=110)
    return fig, fig.subplots()


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="0.35")


def _save(fig, out_dir: str, key: str) -> str:
    name = PLOT_FILES[key][0]
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), format="png")
    return name


def plot_exit_steps(out_dir: str, plots) -> str:
    fig, ax = _figure()
    if not plots.exit_hist:
        _empty(ax, "no decoded rows")
    else:
        top = max(max(s for _, s in plots.exit_hist), max(plots.budgets, default=0))
        xs = np.arange(0, top + 1)
        bottom = np.zeros(len(xs))
        for reason in sorted({r for r, _ in plots.exit_hist}):
            counts = np.array([plots.exit_hist.get((reason, int(x)), 0) for x in xs], float)
            ax.bar(xs, counts, bottom=bottom, width=0.85, label=f"exit: {reason}")
            bottom += counts
        for budget, n in sorted(plots.budgets.items()):
            ax.axvline(budget, color="crimson", ls="--", lw=1.5, label=f"budget T={budget} ({n} rows)")
        total = sum(plots.exit_hist.values())
        mean = sum(s * n for (_, s), n in plots.exit_hist.items()) / total
        ax.axvline(mean, color="black", ls=":", lw=1.2, label=f"mean {mean:.2f} steps")
        ax.set_xlim(-0.5, top + 1.5)
        ax.legend(fontsize=8)
    ax.set_xlabel("steps taken (NFE per sequence)")
    ax.set_ylabel("sequences")
    ax.set_title("Exit steps against the step budget")
    return _save(fig, out_dir, "exit_steps")


def tau_curves(decode: dict, p: np.ndarray) -> list[tuple[str, np.ndarray, bool]]:
    """(label, tau(p), active) for the run's SchED schedule and, when used, Prophet's phases."""
    from decoder.policies.schedules import SCHEDULES
    policy = decode.get("policy", []) or []
    s = decode.get("sched", {}) or {}
    out = []
    name = s.get("schedule", "cosine")
    if name in SCHEDULES:
        hi, lo, k = float(s.get("tau_high_logit", 7.5)), float(s.get("tau_low_logit", 2.5)), float(s.get("k", 4.0))
        tau = np.array([SCHEDULES[name](float(x), hi, lo, k) for x in p])
        label = f"SchED tau(p): {name}" + (f", k={k:g}" if name == "exp" else "") + f", {hi:g}->{lo:g}"
        label += f", aggregate={s.get('aggregate', 'mean')}" if "sched" in policy else " (sched not in decode.policy)"
        out.append((label, tau, "sched" in policy))
    if "prophet" in policy:
        pr = decode.get("prophet", {}) or {}
        hi, lo = float(pr.get("tau_high_logit", 7.5)), float(pr.get("tau_low_logit", 2.5))
        out.append((f"Prophet tau(p): {hi:g}/{(hi + lo) / 2:g}/{lo:g}",
                    np.array([SCHEDULES["prophet"](float(x), hi, lo) for x in p]), True))
    return out


def _margin_series(plots, max_points: int = 100):
    """(p, mean, std, n, recorded mean tau) per progress value, re-binned when there are many values."""
    keys = np.array(sorted(plots.margin))
    acc = np.array([plots.margin[k] for k in keys]).reshape(-1, 5)
    if len(keys) > max_points:
        bins = np.minimum((keys * max_points).astype(int), max_points - 1)
        acc = np.array([acc[bins == b].sum(0) for b in range(max_points)])
        keys = (np.arange(max_points) + 0.5) / max_points
    n = acc[:, 2]
    ok = n > 0
    mean = np.where(ok, acc[:, 0] / np.maximum(n, 1), np.nan)
    var = np.where(ok, acc[:, 1] / np.maximum(n, 1) - mean ** 2, np.nan)
    tau = np.where(acc[:, 4] > 0, acc[:, 3] / np.maximum(acc[:, 4], 1), np.nan)
    return keys[ok], mean[ok], np.sqrt(np.maximum(var[ok], 0)), n[ok], tau[ok]


def plot_margin(out_dir: str, plots, decode: dict) -> str:
    fig, ax = _figure()
    p_line = np.linspace(0, 1, 201)
    for label, tau, active in tau_curves(decode, p_line):
        ax.plot(p_line, tau, color="crimson" if active else "0.5", ls="-" if active else "--", lw=2, label=label)
    if plots.has_margin():
        p, mean, std, n, tau_rec = _margin_series(plots)
        what = ("mean gbar (aggregated margin, step traces)" if plots.margin_source == "gbar"
                else "mean top-2 margin over masked positions (token traces; no exit policy recorded gbar)")
        ax.plot(p, mean, "o-", color="tab:blue", ms=3.5, lw=1.5, label=what)
        ax.fill_between(p, mean - std, mean + std, color="tab:blue", alpha=0.15, label="±1 std")
        if np.isfinite(tau_rec).any():
            ax.plot(p, tau_rec, "x", color="black", ms=4, label="tau recorded in traces (mean)")
    else:
        _empty(ax, "no margins recorded (decode.trace=off?)")
    ax.set_xlim(0, 1)
    ax.set_xlabel("progress p")
    ax.set_ylabel("top-2 logit margin (logits)")
    ax.set_title("Mean margin vs progress, exit threshold tau(p)")
    ax.legend(fontsize=7, loc="best")
    return _save(fig, out_dir, "margin_progress")


def plot_commit_heatmap(out_dir: str, plots) -> str:
    fig, ax = _figure(7.0, 4.8)
    grid = plots.commit
    if grid.size == 0 or grid.sum() == 0:
        _empty(ax, "no commit_step column in outputs")
    else:
        masked = np.ma.masked_equal(grid, 0)
        im = ax.imshow(masked, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest",
                       norm=LogNorm(vmin=1, vmax=int(grid.max())) if grid.max() >= 50 else None,
                       vmin=None if grid.max() >= 50 else 0.5, vmax=None if grid.max() >= 50 else grid.max(),
                       extent=(-0.5, grid.shape[1] - 0.5, -0.5, grid.shape[0] - 0.5))
        fig.colorbar(im, ax=ax, label="tokens committed" + (" (log scale)" if grid.max() >= 50 else ""))
        per_pos = grid.sum(0)
        mean_step = (grid * np.arange(grid.shape[0])[:, None]).sum(0) / np.maximum(per_pos, 1)
        ax.plot(np.arange(grid.shape[1]), np.where(per_pos > 0, mean_step, np.nan), color="white", lw=1.5,
                label="mean commit step")
        ax.set_facecolor("0.93")  # cells where nothing was committed
        ax.legend(fontsize=8, loc="upper right", facecolor="0.35", labelcolor="white")
    ax.set_xlabel("answer position")
    ax.set_ylabel("step at which the token was committed")
    ax.set_title("Commit step per answer position")
    return _save(fig, out_dir, "commit_heatmap")


def plot_cumulative_cost(out_dir: str, plots, currency: str = "$") -> str:
    fig, ax = _figure()
    c = plots.curve
    if not c or len(c["sequences"]) < 2:
        _empty(ax, "no decoded rows")
    else:
        ax.plot(c["sequences"], c["cost"], color="tab:green", lw=2, label="this run")
        ax.plot(c["sequences"], c["cost_full_budget"], color="0.4", ls="--", lw=1.5,
                label="at the full step budget (estimate: cost x budget / steps)")
        ax.legend(fontsize=8)
    ax.set_xlabel("sequences processed (row order: shard, line)")
    ax.set_ylabel(f"cumulative cost ({currency})")
    ax.set_title("Cumulative cost vs sequences processed")
    return _save(fig, out_dir, "cumulative_cost")


def write_plots(out_dir: str, plots, decode: dict) -> dict[str, str]:
    return {
        "exit_steps": plot_exit_steps(out_dir, plots),
        "margin_progress": plot_margin(out_dir, plots, decode),
        "commit_heatmap": plot_commit_heatmap(out_dir, plots),
        "cumulative_cost": plot_cumulative_cost(out_dir, plots),
    }


# ----- HTML -------------------------------------------------------------------------------------------
#: Columns that hold a fraction (shown as a percentage).
PERCENT_COLS = {"steps_saved_frac", "agreement", "forward_tokens_frac"}


def fmt_number(v: float) -> str:
    """A number for people: 4 significant digits, thousands separators, no exponent below 1e15."""
    if v != v:
        return "–"
    if v == 0 or abs(v) >= 1000:
        return f"{v:,.0f}"
    digits = max(0, 3 - int(math.floor(math.log10(abs(v)))))
    return f"{v:,.{digits}f}"


def fmt_mapping(value) -> str:
    """A dict (or its JSON text) as `key value · key value`, never raw JSON."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if not isinstance(value, dict):
        return str(value)
    return " · ".join(f"{k} {fmt_mapping(v) if isinstance(v, dict) else _plain(v)}" for k, v in value.items()) or "–"


def _plain(v) -> str:
    return fmt_number(v) if isinstance(v, float) else f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def _cell(v, col: str = "") -> str:
    if v is None:
        return "–"
    if col in PERCENT_COLS and isinstance(v, (int, float)):
        return _pct(float(v))
    if col == "exit_reasons" or isinstance(v, dict):
        return html.escape(fmt_mapping(v))
    if isinstance(v, float):
        return fmt_number(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return html.escape(str(v))


def _pct(v: float) -> str:
    return "–" if v != v else f"{v:.1%}"


def _table(rows: list[dict], cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c).replace('_', '_<wbr>')}</th>" for c in cols)  # headers may wrap
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c, ''), c)}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right;white-space:nowrap}th{background:#f2f2f2;white-space:normal;max-width:9em}
td:first-child,th:first-child{text-align:left}table.kv td{text-align:left;white-space:normal}
.plots{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}img{max-width:560px;border:1px solid #ddd}
code{background:#f4f4f4;padding:1px 4px}.note{color:#555;font-size:13px}"""


def write_html(out_dir: str, rows: list[dict], info: dict, pngs: dict[str, str]) -> str:
    run = rows[-1]
    cfg = info.get("config", {}) or {}
    decode = cfg.get("decode", {}) or {}
    kv = [("run", info["run"]), ("baseline", info.get("baseline") or "–"),
          ("policy", ", ".join(decode.get("policy", []) or []) or "–"),
          ("SchED", fmt_mapping(decode.get("sched", {}))),
          ("gen_length / steps / block", f"{decode.get('gen_length', '–')} / {decode.get('steps', '–')} / "
                                         f"{decode.get('block_length', '–')}"),
          ("model", (cfg.get("model", {}) or {}).get("path", "–")),
          ("actors", fmt_mapping({k: (cfg.get("actors", {}) or {}).get(k) for k in
                                  ("min_actors", "max_actors", "num_gpus", "num_cpus")})),
          ("accelerator", "GPU-seconds" if info["accelerator"] == "gpu"
           else "CPU actor-seconds (actors.num_gpus = 0: each decode actor counts as one unit)"),
          ("price", f"${info['price']:g} per accelerator-hour")]
    main_cols = ["shard", "sequences", "errors", "prompt_tokens", "generated_tokens", "nfe", "step_budget",
                 "steps_saved", "steps_saved_frac", "step_speedup", "mean_steps", "exit_reasons",
                 "forward_tokens_per_generated"]
    cost_cols = ["shard", "wall_s", "sequences_per_s", "slot_s", "accelerator", "accelerators_per_actor",
                 "accelerator_s", "outputs_accelerator_s", "cost", "cost_per_1k_generated_tokens",
                 "startup_accelerator_s", "startup_cost"]
    base_cols = ["shard", "baseline_matched", "agreement", "nfe_matched", "baseline_nfe",
                 "step_speedup_vs_baseline", "qps4"]
    saving_cols = ["accelerator_s", "baseline_accelerator_s", "accelerator_h_saved", "cost", "baseline_cost",
                   "cost_saved", "prompts", "baseline_prompts", "cost_per_prompt", "baseline_cost_per_prompt",
                   "saving_per_million_prompts"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Cost and step report</title>"
             f"<style>{CSS}</style></head><body><h1>Cost and step report</h1>",
             "<table class='kv'>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in kv)
             + "</table>",
             f"<p><b>{run['sequences']:,}</b> sequences, <b>{run['nfe']:,}</b> forward passes × rows of a "
             f"<b>{run['step_budget']:,}</b> budget: <b>{_pct(run['steps_saved_frac'])}</b> of steps saved "
             f"(<b>{fmt_number(run['step_speedup'])}×</b> fewer); cost <b>${fmt_number(run['cost'])}</b>, "
             f"${fmt_number(run['cost_per_1k_generated_tokens'])} per 1k generated tokens.</p>",
             "<h2>Steps</h2>", _table(rows, main_cols), "<h2>Time and cost</h2>", _table(rows, cost_cols)]
    attempts = info.get("attempts") or []
    if attempts:
        parts += [f"<h3>Attempts</h3><p class='note'>Every command that worked on this output (the run ledger, "
                  f"_attempts/): the run row's wall time and accelerator-seconds are their totals, work later "
                  f"thrown away included; outputs_accelerator_s is the part behind the outputs kept.</p>",
                  _table(attempts, list(attempts[0]))]
    if "agreement" in run:
        parts += ["<h2>Against the baseline</h2>",
                  "<p class='note'>agreement = exact match of <code>output</code> over the ids in both runs; "
                  "step speedup = baseline NFE / run NFE over those ids; QPS<sub>4</sub> = speedup × "
                  "(score / baseline score)<sup>4</sup> with agreement as the score (the baseline's is 1).</p>", _table(rows, base_cols),
                  "<p class='note'>Cost: each run's accelerator-seconds over all its attempts; saved = baseline − "
                  "run. The saving per million prompts projects each run's cost per prompt (the accelerator time "
                  "behind its outputs / prompts decoded).</p>", _table([run], saving_cols)]
    what_if = info.get("what_if") or []
    if what_if:
        parts += ["<h2>What if</h2>",
                  "<p class='note'>Other exit settings replayed on this run's token traces (no forward; exact for "
                  "a greedy full-budget run): NFE, outputs whose answer would change, and the accelerator time "
                  "and cost estimated in proportion to NFE.</p>",
                  _table(what_if, ["setting", "rows", "nfe", "run_nfe", "steps_saved", "changed",
                                   "changed_fraction", "est_accelerator_s", "est_cost"])]
    parts.append("<h2>Plots</h2><div class='plots'>")
    for key, name in pngs.items():
        parts.append(f"<figure><img src='{html.escape(name)}' alt='{html.escape(PLOT_FILES[key][1])}'>"
                     f"<figcaption>{html.escape(PLOT_FILES[key][1])}</figcaption></figure>")
    parts.append("</div>")
    notes = ["NFE = forward passes × rows = step-trace rows (the outputs' nfe column when traces are off).",
             "Accelerator-seconds: each decode actor's busy time (manifest actors.*.elapsed_s) × accelerators "
             "per actor, shared among its rows by slot time (slot_s); the run row totals the attempts.",
             "Start-up: the decode actors' tokenizer and model load time (manifest actors.*.load_s) × "
             "accelerators per actor; paid for but not decoding, so shown beside the cost, not in it.",
             "The full-budget cost curve scales each row's cost by step_budget / steps_taken (an estimate).",
             "Files: summary.parquet, summary.csv (same table), the PNGs above."]
    notes += [f"Warning: {w}" for w in info.get("warnings", [])]
    parts.append("<h2>Notes</h2><ul class='note'>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>")
    path = os.path.join(out_dir, "report.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    return path
