"""`pipeline.py calibrate`: choose the exit setting for this model and data from a pilot sample.

1. A seeded pilot of N rows from the job's input, stratified over its shards (each shard gives its share,
   in proportion to its rows; rows the read stage rejects are left out).
2. The pilot decoded once, in this process, at the full budget with the job's commit policy alone (its exit
   policies removed), greedy, with token traces.
3. Every exit setting of the grid replayed on those traces (decoder/replay.py: the exit policies' own code on
   the traced signals, no forward; exact for greedy rows, checked against real decodes in
   tests/decoder/test_replay.py), scored by agreement with the full budget (and accuracy against
   `--reference-field` when the input has one), each with its 95 % interval (report/calibration.py).
4. The cheapest setting whose interval's lower bound (`--bound point`: its pilot figure) meets `--target` is
   written as a config layer
   (`--out calibrated.yaml`, for `pipeline.py run --config calibrated.yaml`), with the table
   (`calibrated.json`) and the NFE-vs-quality plot (`calibrated.png`) beside it.

Settings that change which tokens are committed (Fast-dLLM or TSPD thresholds, CE, Dream's algorithms) are
not replayed: calibrate refuses a job whose policy has a modifier, and its grid is exit settings only.
"""
from __future__ import annotations

import asyncio
import json
import math
import random
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa

from decoder.offline import answer_text
from decoder.policies.registry import POLICIES
from decoder.replay import RowTrace, replay_check, replay_tensors, stored_row_trace, trace_tensors, with_exit
from report.calibration import Setting, best_provable, choose, config_layer, default_grid, pareto, score
from settings.schema import ConfigError, PipelineConfig
from stages.preprocess import preprocess_batch
from stages.read.stage import ReadOptions, read_shards
from stages.storage import filesystem, list_shards, shard_name


def sample_pilot(cfg: PipelineConfig, n: int, seed: int) -> tuple[pa.Table, int]:
    """(n rows of the input, stratified over shards and seeded; rows in the whole input)."""
    fs, path = filesystem(cfg.input.url, cfg.storage)
    shards, root = list_shards(fs, path)
    names = {s: shard_name(s, root) for s in shards}
    opts = ReadOptions.from_config(cfg)
    per_shard = []
    for s in shards:
        tables = [t for t in read_shards(pa.table({"path": [s]}), fs, names, opts) if t.num_rows]
        rows = pa.concat_tables(tables, promote_options="default").to_pylist() if tables else []
        per_shard.append([r for r in rows if not r.get("error")])
    total = sum(len(rows) for rows in per_shard)
    if total == 0:
        raise ConfigError(f"input.url: no readable rows in {cfg.input.url}")
    rng, picked = random.Random(seed), []
    quotas = [math.floor(n * len(rows) / total) for rows in per_shard]
    for i in sorted(range(len(per_shard)), key=lambda i: -len(per_shard[i]))[:max(0, min(n, total) - sum(quotas))]:
        quotas[i] += 1   # the remainder to the largest shards
    for rows, quota in zip(per_shard, quotas):
        picked += rng.sample(rows, min(quota, len(rows)))
    return pa.Table.from_pylist(picked), total


def full_budget(cfg: PipelineConfig) -> PipelineConfig:
    """The job's config with its exit policies removed and token traces on: the pilot's decode."""
    d = cfg.decode
    names = [d.policy] if isinstance(d.policy, str) else list(d.policy)
    why = replay_check(d)
    if why:
        raise ConfigError(f"decode.policy: calibrate cannot replay this job's settings: {why}")
    commit = [n for n in names if POLICIES[n].kind != "exit"] or ["none"]
    return replace(cfg, decode=replace(d, policy=commit, trace="tokens"))


def row_traces(decoded: pa.Table, block_length: int) -> list[RowTrace]:
    """A RowTrace per decoded row, from the decode stage's columns (token traces as Arrow IPC bytes)."""
    out = []
    for row in decoded.to_pylist():
        t = pa.ipc.open_stream(row["trace_tokens"]).read_all()
        out.append(stored_row_trace({**row, "prompt_tokens": len(row["prompt_ids"])}, block_length,
                                    *(t[c].to_numpy() for c in ("step", "position", "argmax", "margin")),
                                    t["reason"].combine_chunks().indices.to_numpy()))
    return out


def calibrate(cfg: PipelineConfig, pilot: int = 200, seed: int = 0, target: float = 0.99,
              out: str = "calibrated.yaml", reference_field: str | None = None, price: float = 2.0,
              grid: list[Setting] | None = None, bound: str = "lower") -> dict:
    """Run the calibration (module docstring); returns what calibrated.json holds."""
    from stages.decode import DecodeStage
    full_cfg = full_budget(cfg)
    started = time.perf_counter()
    sample, total_rows = sample_pilot(cfg, pilot, seed)
    batch = preprocess_batch(sample, cfg.model.path, full_cfg.decode, cfg.model.chat_template)
    ok = batch.filter(pa.compute.equal(batch["error"], ""))
    stage = DecodeStage(full_cfg)
    t0 = time.perf_counter()
    decoded = asyncio.run(stage(ok)) if ok.num_rows else ok
    decode_s = time.perf_counter() - t0
    decoded = decoded.filter(pa.compute.equal(decoded["error"], ""))
    if decoded.num_rows == 0:
        raise ConfigError("calibrate: no pilot row decoded (every sampled row was rejected)")
    traces = row_traces(decoded, full_cfg.decode.block_length)
    full_texts, full_nfe = decoded["output"].to_pylist(), [t.steps_taken for t in traces]
    budget = [t.step_budget for t in traces]
    refs = None
    if reference_field:
        if reference_field not in decoded.column_names:
            raise ConfigError(f"--reference-field: the input has no column {reference_field!r}")
        refs = [str(v) for v in decoded[reference_field].to_pylist()]
    groups: dict[int, list[int]] = {}
    for i, t in enumerate(traces):
        groups.setdefault(t.gen_length, []).append(i)
    tensors = [(idx, trace_tensors([traces[i] for i in idx])) for idx in groups.values()]
    eos = stage.adapter.eos_token_ids

    def texts_of(setting: Setting) -> tuple[list[str], list[int]]:
        if setting.policy == "none":
            return full_texts, full_nfe
        d = with_exit(full_cfg.decode, [setting.policy], **{setting.policy: dict(setting.params)})
        texts, nfe = [""] * len(traces), [0] * len(traces)
        for idx, tt in tensors:
            for i, r in zip(idx, replay_tensors(tt, d)):
                texts[i], nfe[i] = answer_text(stage.tokenizer, r.output_ids, eos)[0], r.nfe
        return texts, nfe

    full_acc = (sum(a.strip() == b.strip() for a, b in zip(full_texts, refs)) / len(refs)) if refs else None
    per_row_step_s = decode_s / max(sum(full_nfe), 1)
    rows = []
    t1 = time.perf_counter()
    for setting in [Setting("none"), *(grid if grid is not None else default_grid())]:
        texts, nfe = texts_of(setting)
        row = score(setting, texts, nfe, full_texts, full_nfe, budget, refs, full_acc)
        row["est_job_cost"] = total_rows * row["mean_nfe"] * per_row_step_s / 3600 * price
        row["overrides"] = setting.overrides()
        rows.append(row)
    replay_s = time.perf_counter() - t1
    metric = "kept" if refs else "agreement"
    best = choose(rows, target, metric, bound)
    commit = list(full_cfg.decode.policy)
    chosen = next((s for s in [Setting("none"), *(grid if grid is not None else default_grid())]
                   if best and s.label == best["setting"]), None)
    result = {"pilot_rows": decoded.num_rows, "input_rows": total_rows, "seed": seed, "target": target,
              "bound": bound, "best_provable": best_provable(decoded.num_rows), "metric": metric,
              "full_budget_accuracy": full_acc, "decode_s": decode_s, "replay_s": replay_s,
              "wall_s": time.perf_counter() - started, "seconds_per_row_step": per_row_step_s,
              "price_per_hour": price, "chosen": best, "rows": rows,
              "pilot": [{k: r[k] for k in ("id", "prompt", "messages") if r.get(k) is not None}
                        for r in decoded.select([c for c in ("id", "prompt", "messages")
                                                 if c in decoded.column_names]).to_pylist()],
              "pareto": [r["setting"] for r in pareto(rows, metric)]}
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if chosen is not None:
        write_layer(out_path, config_layer(chosen, commit), best, result)
    out_path.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    plot(out_path.with_suffix(".png"), rows, metric, best)
    return result


def write_layer(path: Path, layer: dict, best: dict, result: dict) -> None:
    from omegaconf import OmegaConf
    m = result["metric"]
    head = (f"# pipeline.py calibrate: the cheapest exit setting whose {m} on a {result['pilot_rows']}-row pilot "
            f"({best[m]:.3f}, 95 % interval [{best[m + '_low']:.3f}, {best[m + '_high']:.3f}]; the "
            f"{'lower bound' if result['bound'] == 'lower' else 'pilot figure'} compared) meets "
            f"{result['target']}; mean NFE {best['mean_nfe']:.2f}, {best['steps_saved']:.0%} steps saved.\n"
            f"# Use: pipeline.py run --config <job config> --config {path.name}\n")
    path.write_text(head + OmegaConf.to_yaml(OmegaConf.create(layer)))


def plot(path: Path, rows: list[dict], metric: str, best: dict | None) -> None:
    """Mean NFE vs quality of every setting, the Pareto front joined, the chosen one ringed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for policy, colour in (("sched", "tab:blue"), ("prophet", "tab:orange"), ("none", "black")):
        pts = [r for r in rows if r["policy"] == policy]
        ax.scatter([r["mean_nfe"] for r in pts], [r[metric] for r in pts], s=12, c=colour, label=policy, alpha=0.7)
    front = pareto(rows, metric)
    ax.plot([r["mean_nfe"] for r in front], [r[metric] for r in front], c="grey", lw=1, label="Pareto front")
    if best:
        ax.scatter([best["mean_nfe"]], [best[metric]], s=120, facecolors="none", edgecolors="red", label="chosen")
    ax.set_xlabel("mean NFE (forwards per row)")
    ax.set_ylabel(metric)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(result: dict, most: int = 12) -> None:
    """The full budget, the chosen setting and the Pareto front, cheapest first."""
    metric = result["metric"]
    keep = set(result["pareto"]) | {"full budget"} | ({result["chosen"]["setting"]} if result["chosen"] else set())
    rows = sorted((r for r in result["rows"] if r["setting"] in keep), key=lambda r: r["mean_nfe"])[:most]
    print(f"{'setting':<72} {'NFE':>6} {'saved':>6} {metric:>18} {'QPS4':>6} {'est. cost':>10}")
    for r in rows:
        mark = " *" if result["chosen"] and r["setting"] == result["chosen"]["setting"] else ""
        print(f"{r['setting'][:72]:<72} {r['mean_nfe']:>6.2f} {r['steps_saved']:>6.0%} "
              f"{r[metric]:>6.3f} [{r[metric + '_low']:.3f},{r[metric + '_high']:.3f}] {r['qps4']:>6.2f} "
              f"{r['est_job_cost']:>10.4f}{mark}")
