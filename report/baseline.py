"""A run against a baseline run (`pipeline.py report --baseline URL`): output agreement and step speedup
over the ids in both (report/scan.py `Agreement`), and what the baseline cost (report/cost.py).

The baseline is read like the run (report/scan.py: manifest, every shard's files in any output format),
and refused the same way when something it needs is missing.
"""
from __future__ import annotations

import pyarrow as pa

from report.cost import accelerator_info, outputs_accelerator_s, spent
from report.scan import Agreement, ShardFiles, compare, count_prompts, load_run, locate, read_columns, run_settings

COLUMNS = ["id", "output", "nfe"]


def load_baseline(fs, root: str) -> tuple[dict, dict[str, ShardFiles]]:
    """(manifest, shard name -> files) of the baseline run."""
    manifest, names = load_run(fs, root)
    return manifest, locate(fs, root, manifest, names)


def compare_baseline(fs, files: dict[str, ShardFiles], bfs, bfiles: dict[str, ShardFiles]) -> dict[str, Agreement]:
    """Per shard name, agreement with the baseline over the ids in both. Shards are matched by name
    (one shard of each run in memory); when no name matches, all baseline outputs (id, output, nfe) are
    loaded once and joined on id."""
    common = set(files) & set(bfiles)
    whole = None
    if not common:
        parts = [read_columns(bfs, f.outputs, COLUMNS) for f in bfiles.values()]
        whole = pa.concat_tables(parts) if parts else None
    out = {}
    for n, f in files.items():
        base = read_columns(bfs, bfiles[n].outputs, COLUMNS) if n in common else whole
        out[n] = compare(read_columns(fs, f.outputs, COLUMNS), base) if base is not None else Agreement()
    return out


def baseline_figures(bfs, manifest: dict, bfiles: dict[str, ShardFiles]) -> dict:
    """The baseline's accelerator, spent and outputs accelerator-seconds, and prompts (for report/cost.py)."""
    config, _ = run_settings(manifest)
    accel, per_actor = accelerator_info(config)
    return {"accelerator": accel, "accelerator_s": spent(manifest, per_actor)["accelerator_s"],
            "outputs_accelerator_s": outputs_accelerator_s(manifest, per_actor),
            "prompts": count_prompts(bfs, bfiles)}
