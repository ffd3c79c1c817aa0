"""Resume and the run manifest: which shards are already committed, and the record written last.

A shard is committed when `_done/<name>.json` exists (stages/write.py writes it after the shard's
files). Re-running the same command skips committed shards and clears partial leftovers of the rest;
`--overwrite` clears everything first.
"""
from __future__ import annotations

import json
import platform
import time
from importlib.metadata import version

from stages.storage import join


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


def prepare_output(fs, root: str, overwrite: bool) -> None:
    """Drop partial parts of an interrupted run (and everything, with overwrite)."""
    targets = ["_parts"] + (["outputs", "errors", "traces", "_done", "_manifest.json"] if overwrite else [])
    for t in targets:
        if fs.exists(join(root, t)):
            fs.rm(join(root, t), recursive=True)
    fs.makedirs(root, exist_ok=True)


def versions() -> dict[str, str]:
    pkgs = ("torch", "transformers", "ray", "pyarrow", "fsspec", "omegaconf")
    return {"python": platform.python_version(), **{p: version(p) for p in pkgs}}


def totals(summaries: list[dict]) -> dict:
    keys = ("rows", "outputs", "errors", "prompt_tokens", "generated_tokens", "nfe", "step_budget")
    t = {k: sum(s[k] for s in summaries) for k in keys}
    t["steps_saved"] = t["step_budget"] - t["nfe"]
    t["step_speedup"] = t["step_budget"] / t["nfe"] if t["nfe"] else 0.0
    exits: dict[str, int] = {}
    for s in summaries:
        for k, v in s["exit_reasons"].items():
            exits[k] = exits.get(k, 0) + v
    t["exit_reasons"] = exits
    return t


def write_manifest(fs, root: str, config: dict, shards: list[str], skipped: list[str],
                   summaries: dict[str, dict], started: float, extra: dict) -> dict:
    manifest = {
        "config": config, "versions": versions(), "input_shards": shards, "resumed_shards": skipped,
        "shards": summaries, "totals": totals(list(summaries.values())),
        "started_at": started, "finished_at": time.time(), "wall_s": time.time() - started, **extra,
    }
    with fs.open(join(root, "_manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest
