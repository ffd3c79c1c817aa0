"""`pipeline.py calibrate`: choose the exit setting for this model and data from a pilot sample.

1. A seeded pilot of N rows from the job's input, stratified over its shards (each shard gives its share,
   in proportion to its rows; rows the read stage rejects are left out).
2. The pilot decoded once, in this process, at the full budget with the job's commit policy alone (its exit
   policies removed), greedy, with token traces.
3. Every exit setting of the grid replayed on those traces (decoder/replay.py: the exit policies' own code on
   the traced signals, no forward; exact for greedy rows, checked against real decodes in
   tests/decoder/test_replay.py), scored by agreement with the full budget (and accuracy against
   `--reference-field` when the input has one), each with its 95 % interval (report/calibration.py).
4. The cheapest setting whose interval's lower bound (`--bound point`: its pilot count, to the pilot's
   resolution; report/calibration.py) meets `--target` is written as a config layer
   (`--out calibrated.yaml`, for `pipeline.py run --config calibrated.yaml`), with the table
   (`calibrated.json`) and the NFE-vs-quality plot (`calibrated.png`) beside it.

5. With `--decode-budget-s S` (default 0: off), settings that change which tokens are committed (Fast-dLLM's
   threshold, CE; the block families' threshold) cannot be replayed: the pilot is decoded once per such
   commit setting (report/calibration.py `default_commit_grid`), on the model already loaded, and the exit
   grid is replayed on each decode's traces where replay is exact (not after CE), until S seconds of this
   (decodes and their replays) are spent; the settings left are listed as skipped. They are scored against the same full-budget
   decode and compete with the exit settings for the choice.

Answers are judged against `--reference-field` by exact match, or by `--verifier module:function` (a
callable (prediction, reference) -> bool, e.g. embedded.reasoning.tasks:correct, where many answers are right).
A job whose own policy has a modifier (CE) is refused: its full budget cannot be replayed.
"""
from __future__ import annotations

import asyncio
import importlib
import json
import math
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pyarrow as pa

from decoder.offline import answer_text
from decoder.policies.registry import POLICIES
from decoder.replay import RowTrace, replay_check, replay_tensors, stored_row_trace, trace_tensors, with_exit
from decoder.families.specs import FAMILY_SPECS
from report.calibration import (CommitSetting, Setting, best_provable, choose, config_layer, default_commit_grid,
                                default_grid, exact, pareto, score)
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


def load_verifier(spec: str | None) -> Callable[[str, str], bool]:
    """`module:function` -> that callable (prediction, reference) -> bool; None -> exact match."""
    if not spec:
        return exact
    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"--verifier {spec!r}: cannot import it ({e}); give module:function") from None
    if not callable(fn):
        raise ConfigError(f"--verifier {spec!r} is not callable")
    return fn


class PilotDecoder:
    """The pilot's decodes in this process, on one loaded model: the full budget, then each commit setting."""

    def __init__(self, cfg: PipelineConfig, rows: pa.Table) -> None:
        from stages.decode import DecodeStage
        self.rows = rows
        self.stage = DecodeStage(cfg)
        self._texts: dict[tuple, str] = {}
        self._tensors_of: tuple = (None, [])

    def decode(self, decode_cfg) -> tuple[pa.Table, list[RowTrace], float]:
        """(decoded rows, their traces, seconds) under `decode_cfg` (token traces on)."""
        self.stage.use_decode(decode_cfg)
        t0 = time.perf_counter()
        out = asyncio.run(self.stage(self.rows)) if self.rows.num_rows else self.rows
        seconds = time.perf_counter() - t0
        out = out.filter(pa.compute.equal(out["error"], ""))
        return out, row_traces(out, decode_cfg.block_length), seconds

    def text(self, output_ids) -> str:
        """Answer text of output ids (memoised: most replayed settings repeat most rows' outputs)."""
        key = tuple(output_ids)
        if key not in self._texts:
            self._texts[key] = answer_text(self.stage.tokenizer, output_ids, self.stage.adapter.eos_token_ids)[0]
        return self._texts[key]

    def tensors(self, traces: list[RowTrace]) -> list[tuple[list[int], object]]:
        """The traces stacked once per answer length, for every setting replayed on them."""
        if self._tensors_of[0] is not traces:
            groups: dict[int, list[int]] = {}
            for i, t in enumerate(traces):
                groups.setdefault(t.gen_length, []).append(i)
            self._tensors_of = (traces, [(idx, trace_tensors([traces[i] for i in idx])) for idx in groups.values()])
        return self._tensors_of[1]

    def replayed(self, traces: list[RowTrace], decode_cfg, setting: Setting) -> tuple[list[str], list[int]]:
        """Texts and NFE of `setting`'s exit policy replayed on `traces` (decoded under `decode_cfg`)."""
        d = with_exit(decode_cfg, [setting.policy], **{setting.policy: dict(setting.params)})
        texts, nfe = [""] * len(traces), [0] * len(traces)
        for idx, tensors in self.tensors(traces):
            for i, r in zip(idx, replay_tensors(tensors, d)):
                texts[i], nfe[i] = self.text(r.output_ids), r.nfe
        return texts, nfe


def commit_config(decode_cfg, commit: CommitSetting):
    """The full-budget decode config with `commit` in place of the job's commit policy."""
    changes = {sec: replace(getattr(decode_cfg, sec), **fields) for sec, fields in commit.sections().items()}
    return replace(decode_cfg, policy=list(commit.policy), **changes)


def calibrate(cfg: PipelineConfig, pilot: int = 200, seed: int = 0, target: float = 0.99,
              out: str = "calibrated.yaml", reference_field: str | None = None, price: float = 2.0,
              grid: list[Setting] | None = None, bound: str = "lower", verifier: str | None = None,
              decode_budget_s: float = 0.0, commit_grid: list[CommitSetting] | None = None) -> dict:
    """Run the calibration (module docstring); returns what calibrated.json holds."""
    full_cfg = full_budget(cfg)
    correct = load_verifier(verifier)
    started = time.perf_counter()
    sample, total_rows = sample_pilot(cfg, pilot, seed)
    batch = preprocess_batch(sample, cfg.model.path, full_cfg.decode, cfg.model.chat_template)
    pilot_dec = PilotDecoder(full_cfg, batch.filter(pa.compute.equal(batch["error"], "")))
    decoded, traces, decode_s = pilot_dec.decode(full_cfg.decode)
    if decoded.num_rows == 0:
        raise ConfigError("calibrate: no pilot row decoded (every sampled row was rejected)")
    full_texts, full_nfe = decoded["output"].to_pylist(), [t.steps_taken for t in traces]
    budget = [t.step_budget for t in traces]
    refs = None
    if reference_field:
        if reference_field not in decoded.column_names:
            raise ConfigError(f"--reference-field: the input has no column {reference_field!r}")
        refs = [str(v) for v in decoded[reference_field].to_pylist()]
    elif verifier:
        raise ConfigError("--verifier needs --reference-field (the column it judges answers against)")
    full_acc = (sum(correct(a, b) for a, b in zip(full_texts, refs)) / len(refs)) if refs else None
    per_row_step_s = decode_s / max(sum(full_nfe), 1)
    exits = grid if grid is not None else default_grid()
    rows = []

    def add(setting: Setting, texts: list[str], nfe: list[int]) -> None:
        row = score(setting, texts, nfe, full_texts, full_nfe, budget, refs, full_acc, correct)
        row["est_job_cost"] = total_rows * row["mean_nfe"] * per_row_step_s / 3600 * price
        row["overrides"] = setting.overrides()
        row["layer"] = config_layer(setting, list(full_cfg.decode.policy))   # what --out would hold
        rows.append(row)

    t1 = time.perf_counter()
    add(Setting("none"), full_texts, full_nfe)
    for setting in exits:
        add(setting, *pilot_dec.replayed(traces, full_cfg.decode, setting))
    replay_s = time.perf_counter() - t1

    commit_s, decoded_commits, skipped = 0.0, [], []   # commit_s: their decodes and the replays on them
    ids = decoded["id"].to_pylist()
    if decode_budget_s > 0:
        engine = FAMILY_SPECS[pilot_dec.stage.adapter.family].engine
        for commit in (commit_grid if commit_grid is not None else default_commit_grid(engine)):
            last = decoded_commits[-1]["seconds"] if decoded_commits else decode_s
            if commit_s + last > decode_budget_s:
                skipped.append(commit.label)
                continue
            t2 = time.perf_counter()
            d = commit_config(full_cfg.decode, commit)
            out_c, traces_c, seconds = pilot_dec.decode(d)
            decoded_commits.append({"commit": commit.label, "decode_s": seconds})
            order = {i: k for k, i in enumerate(out_c["id"].to_pylist())}
            pick = [order[i] for i in ids]                      # this decode's rows in the full budget's order
            outputs, aligned = out_c["output"].to_pylist(), [traces_c[k] for k in pick]
            add(Setting("none", commit=commit), [outputs[k] for k in pick], [t.steps_taken for t in aligned])
            if replay_check(d) is None:
                for setting in exits:
                    add(replace(setting, commit=commit), *pilot_dec.replayed(aligned, d, setting))
            decoded_commits[-1]["seconds"] = time.perf_counter() - t2
            commit_s += decoded_commits[-1]["seconds"]
    metric = "kept" if refs else "agreement"
    best = choose(rows, target, metric, bound)
    result = {"pilot_rows": decoded.num_rows, "input_rows": total_rows, "seed": seed, "target": target,
              "bound": bound, "best_provable": best_provable(decoded.num_rows), "metric": metric,
              "verifier": verifier or "exact", "full_budget_accuracy": full_acc, "decode_s": decode_s,
              "replay_s": replay_s, "commit_decodes": decoded_commits, "commit_s": commit_s,
              "commit_skipped": skipped, "wall_s": time.perf_counter() - started,
              "seconds_per_row_step": per_row_step_s, "price_per_hour": price, "chosen": best, "rows": rows,
              "pilot": [{k: r[k] for k in ("id", "prompt", "messages") if r.get(k) is not None}
                        for r in decoded.select([c for c in ("id", "prompt", "messages")
                                                 if c in decoded.column_names]).to_pylist()],
              "pareto": [r["setting"] for r in pareto(rows, metric)]}
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if best is not None:
        write_layer(out_path, best["layer"], best, result)
    out_path.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    plot(out_path.with_suffix(".png"), rows, metric, best)
    return result


def write_layer(path: Path, layer: dict, best: dict, result: dict) -> None:
    from omegaconf import OmegaConf
    m = result["metric"]
    head = (f"# pipeline.py calibrate: the cheapest exit setting whose {m} on a {result['pilot_rows']}-row pilot "
            f"({best[m]:.3f}, 95 % interval [{best[m + '_low']:.3f}, {best[m + '_high']:.3f}]; the "
            f"{'lower bound' if result['bound'] == 'lower' else 'pilot count'} compared) meets "
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
        pts = [r for r in rows if r["policy"] == policy and not r.get("commit")]
        ax.scatter([r["mean_nfe"] for r in pts], [r[metric] for r in pts], s=12, c=colour, label=policy, alpha=0.7)
    commits = [r for r in rows if r.get("commit")]
    if commits:   # decoded commit settings (and exits replayed on them)
        ax.scatter([r["mean_nfe"] for r in commits], [r[metric] for r in commits], s=12, c="tab:green",
                   marker="^", label="commit settings", alpha=0.7)
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
