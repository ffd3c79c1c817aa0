"""`pipeline.py report RUN --what-if 'decode.sched.tau_high_logit=6,decode.sched.schedule=exp'`: what a
finished run would have cost, and how many of its outputs would have changed, under another exit setting.

The run's token traces are replayed under the setting (decoder/replay.py: the exit policies' own code on the
traced signals, no forward), shard by shard. Exact for what replay is exact for: a run decoded greedily at
the full budget (no exit policy) with `decode.trace=tokens`; a run that is not is refused with the reason.
An output counts as changed when its answer (the tokens before the first end-of-text) differs. The
accelerator time and cost are the run's outputs' own scaled by NFE (a forward's cost per row taken as the
run's average: an estimate, said so in the table).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from decoder.families import end_token_ids
from decoder.replay import RowTrace, replay_check, replay_tensors, stored_row_trace, trace_tensors, with_exit
from report.calibration import Setting
from report.scan import read_columns
from settings.loader import load_config
from settings.schema import ConfigError
from stages.write.sink import read_ipc

OUTPUT_COLUMNS = ["id", "output_ids", "prompt_tokens", "steps_taken", "step_budget", "exit_reason"]


def parse_what_if(text: str) -> Setting:
    """'decode.sched.tau_high_logit=6,decode.sched.schedule=exp' -> Setting("sched", ...): one exit policy's
    keys (decode.sched.* or decode.prophet.*), comma-separated, values as in YAML."""
    pairs = [p.strip() for p in text.split(",") if p.strip()]
    policies, params = set(), []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 3 or parts[0] != "decode" or parts[1] not in ("sched", "prophet"):
            raise ConfigError(f"--what-if {pair!r}: use decode.sched.<key>=<value> or decode.prophet.<key>=<value>")
        policies.add(parts[1])
        params.append((parts[2], yaml.safe_load(value)))
    if len(policies) != 1:
        raise ConfigError(f"--what-if {text!r}: name the keys of one exit policy (sched or prophet)")
    return Setting(policies.pop(), tuple(params))


def _answer(ids: list[int], ends: set[int]) -> list[int]:
    n = next((i for i, t in enumerate(ids) if t in ends), len(ids))
    return list(ids[:n])


def shard_rows(fs, outputs: str, tokens: str, block_length: int) -> list[RowTrace]:
    """One shard's decoded rows as RowTraces (its outputs and its token trace)."""
    table = read_columns(fs, outputs, OUTPUT_COLUMNS)
    trace = read_ipc(fs, tokens).select(["id", "step", "position", "argmax", "margin", "reason"])
    trace = trace.sort_by([("id", "ascending"), ("step", "ascending")])
    ids = trace["id"].to_numpy(zero_copy_only=False)
    starts = {}
    if len(ids):
        cut = np.flatnonzero(ids[1:] != ids[:-1]) + 1
        for a, b in zip(np.r_[0, cut], np.r_[cut, len(ids)]):
            starts[ids[a]] = (a, b)
    cols = {c: trace[c].to_numpy() for c in ("step", "position", "argmax", "margin")}
    reason = pc.cast(trace["reason"].combine_chunks().indices, pa.int8()).to_numpy()
    rows = []
    for r in table.to_pylist():
        a, b = starts.get(r["id"], (0, 0))
        rows.append(stored_row_trace(r, block_length, *(cols[c][a:b] for c in ("step", "position", "argmax", "margin")),
                                     reason[a:b]))
    return rows


def what_if(fs, files: dict, config: dict, settings: list[Setting], run_accelerator_s: float,
            price: float) -> list[dict]:
    """Each setting's totals over the run (see the module docstring)."""
    decode_cfg = load_config(None, [], mappings=[{"decode": config.get("decode") or {}}]).decode
    if decode_cfg.trace != "tokens":
        raise ConfigError("--what-if needs a run decoded with decode.trace=tokens (its token traces)")
    names = [decode_cfg.policy] if isinstance(decode_cfg.policy, str) else list(decode_cfg.policy)
    if any(n in ("sched", "prophet") for n in names):
        raise ConfigError(f"--what-if needs a run decoded at the full budget (no exit policy); this one used "
                          f"decode.policy={names}: its traces stop where it exited")
    why = replay_check(decode_cfg)
    if why:
        raise ConfigError(f"--what-if cannot replay this run: {why}")
    model = config.get("model") or {}
    ends = set(end_token_ids(model.get("path", ""), model.get("family", "auto")))
    totals = [{"setting": s.label, "rows": 0, "nfe": 0, "run_nfe": 0, "step_budget": 0, "changed": 0}
              for s in settings]
    cfgs = [with_exit(decode_cfg, [s.policy], **{s.policy: dict(s.params)}) for s in settings]
    for name, f in files.items():
        if not f.tokens:
            raise ConfigError(f"--what-if: shard {name} has no token trace (decoded with decode.trace != tokens)")
        rows = shard_rows(fs, f.outputs, f.tokens, decode_cfg.block_length)
        groups: dict[int, list[RowTrace]] = {}
        for r in rows:
            groups.setdefault(r.gen_length, []).append(r)
        for group in groups.values():
            tt = trace_tensors(group)
            for total, cfg in zip(totals, cfgs):
                for r, res in zip(group, replay_tensors(tt, cfg)):
                    total["rows"] += 1
                    total["nfe"] += res.nfe
                    total["run_nfe"] += r.steps_taken
                    total["step_budget"] += r.step_budget
                    total["changed"] += _answer(res.output_ids, ends) != _answer(r.output_ids, ends)
    for t in totals:
        t["steps_saved"] = 1 - t["nfe"] / max(t["step_budget"], 1)
        t["changed_fraction"] = t["changed"] / max(t["rows"], 1)
        t["est_accelerator_s"] = run_accelerator_s * t["nfe"] / max(t["run_nfe"], 1)
        t["est_cost"] = t["est_accelerator_s"] / 3600 * price
    return totals


def fmt_what_if(rows: list[dict]) -> str:
    lines = ["what if (replayed on the run's token traces; accelerator-s and cost estimated in proportion to NFE):"]
    for r in rows:
        lines.append(f"  {r['setting']}: NFE {r['nfe']} (run {r['run_nfe']}), {r['steps_saved']:.1%} steps saved, "
                     f"{r['changed']} of {r['rows']} outputs changed ({r['changed_fraction']:.1%}), "
                     f"~{r['est_accelerator_s']:.1f} accelerator-s, ~{r['est_cost']:.4f} cost")
    return "\n".join(lines)
