"""Resume and the run manifest: which committed shards still hold, and the record written last.

A shard is committed when `_done/<name>.json` exists (stages/write/sink.py writes it after the shard's
files, with the shard's fingerprint). A rerun into the same output root skips committed shards whose
fingerprint matches (driver/fingerprint.py). Committed shards made with other settings or another input,
and committed shards that are not in this run's input, stop the run before any work (`ResumeConflict`)
unless `output.redo_changed` (`--redo-changed`): then exactly those are dropped and the changed ones
decoded again. `--overwrite` clears everything first. Of an interrupted run, the parts of shards still to
decode are kept when their recorded fingerprint matches (`keep_parts`): the read stage skips the rows they
hold and the commit merges them with the new ones; every other leftover is cleared.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from importlib.metadata import version

from stages.read.coverage import Coverage
from stages.write.commit import write_json
from stages.write.formats import iter_batches
from stages.write.sink import PART_FINGERPRINT, PARTS
from settings.schema import ConfigError
from driver.fingerprint import changes, recorded
from driver.redact import scrub
from stages.storage import join

#: What a committed shard <name> owns under the output root.
SHARD_FILES = ("outputs/{}.arrow", "outputs/{}.parquet", "outputs/{}.jsonl", "errors/{}.arrow",
               "errors/{}.parquet", "errors/{}.jsonl",
               "traces/{}.steps.arrow", "traces/{}.tokens.arrow", "_done/{}.json")


class ResumeConflict(ConfigError):
    """The output root holds committed shards this command would not have produced."""


@dataclass
class ResumePlan:
    todo: list[str] = field(default_factory=list)                    # shard paths to decode
    skipped: list[str] = field(default_factory=list)                 # committed and matching: kept
    changed: dict[str, list[str]] = field(default_factory=dict)      # name -> differing keys
    stale: list[str] = field(default_factory=list)                   # committed names not in the input

    @property
    def conflicts(self) -> bool:
        return bool(self.changed or self.stale)


def plan_resume(shards: list[str], names: dict[str, str], fingerprints: dict[str, dict],
                done: dict[str, dict]) -> ResumePlan:
    """Sort the input shards into kept / to decode (changed ones included), and find stale output shards."""
    plan = ResumePlan(stale=sorted(set(done) - {names[s] for s in shards}))
    for s in shards:
        n = names[s]
        if n not in done:
            plan.todo.append(s)
            continue
        diff = changes(done[n].get("fingerprint"), fingerprints[n])
        if diff:
            plan.changed[n] = diff
            plan.todo.append(s)
        else:
            plan.skipped.append(s)
    return plan


def _value(v) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


def conflict_message(plan: ResumePlan, out_url: str, done: dict[str, dict], fingerprints: dict[str, dict]) -> str:
    """One line: what differs (keys with old -> new values), in which shards, and the three ways on."""
    parts = []
    keys: dict[str, list[str]] = {}
    for name, diff in plan.changed.items():
        for k in diff:
            keys.setdefault(k, []).append(name)
    for k, shards in sorted(keys.items()):
        old = ((done[shards[0]].get("fingerprint") or {}).get("config") or {})
        new = fingerprints[shards[0]]["config"]
        how = f" {_value(recorded(old, k))} -> {_value(recorded(new, k))}" if k in new or k in old else ""
        parts.append(f"{k}{how} ({_names(shards)})")
    if plan.stale:
        parts.append(f"not in this input: {_names(plan.stale)}")
    return (f"{out_url} holds committed shards this command would not produce: {'; '.join(parts)}. Nothing was "
            f"decoded. Rerun with --redo-changed (re-decode only those shards, drop the ones not in the input), "
            f"--overwrite (redo everything) or a new output.url")


def _names(names: list[str], most: int = 3) -> str:
    shown = ", ".join(names[:most])
    return f"{len(names)} shard(s): {shown}{', ...' if len(names) > most else ''}"


def drop_shards(fs, root: str, names) -> None:
    """Remove every file a committed shard owns (marker first: a half-dropped shard is not committed)."""
    for name in names:
        for pattern in reversed(SHARD_FILES):
            path = join(root, pattern.format(name))
            if fs.exists(path):
                fs.rm(path)


def committed_shards(fs, root: str, known: dict[str, dict] | None = None) -> dict[str, dict]:
    """name -> completion summary of every committed shard under the output root. Markers never change
    once written, so those in `known` (a previous result) are not read again (progress polls this)."""
    done = join(root, "_done")
    if not fs.exists(done):
        return {}
    known = known or {}
    out = {}
    for path in fs.ls(done, detail=False):
        if path.endswith(".json"):
            name = path.rsplit("/", 1)[-1][: -len(".json")]
            if name in known:
                out[name] = known[name]
                continue
            with fs.open(path) as f:
                out[name] = json.load(f)
    return out


def failed_shards(fs, root: str) -> dict[str, str]:
    """name -> reason of every shard this run could not read (`_failed/<name>.json`, stages/write/sink.py)."""
    folder = join(root, "_failed")
    if not fs.exists(folder):
        return {}
    out = {}
    for path in fs.ls(folder, detail=False):
        if path.endswith(".json"):
            with fs.open(path) as f:
                rec = json.load(f)
            out[rec["name"]] = rec["error"]
    return out


#: Suffixes of the files a shard owns in outputs/, errors/ and traces/ (longest first).
SHARD_SUFFIXES = (".steps.arrow", ".tokens.arrow", ".arrow", ".parquet", ".jsonl")


def drop_uncommitted(fs, root: str, committed: set[str]) -> list[str]:
    """Remove what an interrupted commit left: final files of shards without a marker (the shard is redone
    from scratch, so no file of an older attempt, in a format no longer asked for, survives it) and the
    temporary files of writes cut short. Returns the paths removed."""
    removed = []
    for sub in ("outputs", "errors", "traces", "_done"):
        folder = join(root, sub)
        if not fs.exists(folder):
            continue
        for path in fs.ls(folder, detail=False):
            base = path.rstrip("/").rsplit("/", 1)[-1]
            name = next((base[: -len(x)] for x in SHARD_SUFFIXES if base.endswith(x)), None)
            if ".tmp-" in base or (sub != "_done" and name is not None and name not in committed):
                fs.rm(path)
                removed.append(path)
    return removed


def prepare_output(fs, root: str, overwrite: bool) -> None:
    """Drop the last run's failed-shard records (and everything, parts included, with overwrite)."""
    targets = ["_failed"] + ([PARTS] + ["outputs", "errors", "traces", "_done", "_manifest.json"] if overwrite else [])
    for t in targets:
        if fs.exists(join(root, t)):
            fs.rm(join(root, t), recursive=True)
    fs.makedirs(root, exist_ok=True)


def keep_parts(fs, root: str, fingerprints: dict[str, dict], todo: set[str]) -> dict[str, Coverage]:
    """The parts an interrupted run left that this run keeps: shard name -> the rows they hold. A shard's
    folder stays when the shard is to be decoded and the fingerprint its parts recorded matches this run's;
    other folders (committed, changed, no longer in the input, no fingerprint) and files cut short go."""
    folder = join(root, PARTS)
    if not fs.exists(folder):
        return {}
    kept = {}
    for path in fs.ls(folder, detail=False):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        recorded = _read_json(fs, join(path, PART_FINGERPRINT)) if name in todo else None
        if recorded is None or changes(recorded.get("fingerprint"), fingerprints[name]):
            fs.rm(path, recursive=True)
            continue
        keys: list[tuple[int, int]] = []
        for part in fs.ls(path, detail=False):
            if ".tmp-" in part.rsplit("/", 1)[-1]:
                fs.rm(part)
            elif part.endswith(".rows.arrow"):   # written after its traces: a rows file means a whole part
                for b in iter_batches(fs, part, ["line", "sample"]):
                    keys += zip(b.column("line").to_pylist(), b.column("sample").to_pylist())
        kept[name] = Coverage.of(keys)
    return kept


def drop_parts(fs, root: str, names) -> None:
    """Remove the part folders of shards committed from them (and `_parts` itself once it is empty)."""
    folder = join(root, PARTS)
    for name in names:
        if fs.exists(join(folder, name)):
            fs.rm(join(folder, name), recursive=True)
    if fs.exists(folder) and not fs.ls(folder, detail=False):
        fs.rm(folder, recursive=True)


def _read_json(fs, path: str) -> dict | None:
    try:
        with fs.open(path) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


def versions() -> dict[str, str]:
    pkgs = ("torch", "transformers", "ray", "pyarrow", "fsspec", "omegaconf")
    return {"python": platform.python_version(), **{p: version(p) for p in pkgs}}


def totals(summaries: list[dict]) -> dict:
    """Counts summed over shard markers; `refreshes`, `forward_tokens` and `error_reasons` count only the
    markers that record them (markers written before they were added do not)."""
    keys = ("rows", "outputs", "errors", "prompt_tokens", "generated_tokens", "nfe", "step_budget", "blank_lines",
            "refreshes", "forward_tokens")
    t = {k: sum(s.get(k, 0) for s in summaries) for k in keys}
    t["steps_saved"] = t["step_budget"] - t["nfe"]
    t["step_speedup"] = t["step_budget"] / t["nfe"] if t["nfe"] else 0.0
    for key in ("exit_reasons", "error_reasons"):
        merged: dict[str, int] = {}
        for s in summaries:
            for k, v in (s.get(key) or {}).items():
                merged[k] = merged.get(k, 0) + v
        t[key] = merged
    return t


def shared_settings(summaries: dict[str, dict]) -> tuple[dict | None, list[str]]:
    """(decode settings every shard was made with, or None; keys whose values differ between shards)."""
    configs = [(s.get("fingerprint") or {}).get("config") for s in summaries.values()]
    if not configs or any(c is None for c in configs):
        return None, ["fingerprint (none recorded)"] if configs else []
    differ = sorted(k for k in set().union(*configs) if len({json.dumps(c.get(k)) for c in configs}) > 1)
    return (None if differ else configs[0]), differ


def write_manifest(fs, root: str, config: dict, shards: list[str], skipped: list[str],
                   summaries: dict[str, dict], started: float, extra: dict) -> dict:
    """The run record: each shard's own counts and fingerprint (`shards`), the settings they share
    (`settings`, or `settings_differ`), and this command's full config (`config`: actors, Ray, ...).
    `started_at`/`wall_s` are this command's unless `extra` gives them (driver/run.py gives the ledger's
    totals over attempts); `extra`'s keys are written as given."""
    settings, differ = shared_settings(summaries)
    manifest = {
        "config": config, "settings": settings, "settings_differ": differ, "versions": versions(),
        "input_shards": shards, "resumed_shards": skipped,
        "shards": summaries, "totals": totals(list(summaries.values())),
        "started_at": started, "finished_at": time.time(), "wall_s": time.time() - started, **extra,
    }
    manifest = scrub(manifest)   # no credential from the environment or a URL reaches the record
    write_json(fs, join(root, "_manifest.json"), manifest, indent=2)
    return manifest
