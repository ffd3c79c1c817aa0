"""Label collection for the TSPD controller, from the trace files a pipeline run wrote.

Run the pipeline at the full step budget (`decode.policy=[none]`, `decode.trace=tokens`): every position
then has a long trajectory. The "extremely greedy parallel" label of the TSPD paper is, per step and
still-masked position, whether the current argmax already equals the token of the final decode (it could
have been fixed there). Features are replayed from the token traces with the same function the engine
uses at decode time (decoder/features.py). Streams shard by shard into one Arrow file.
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import torch

from settings.schema import MissingInputError, StorageConfig
from decoder.features import FEATURE_NAMES, TrajectoryState, relative_positions, trajectory_features
from stages.storage import filesystem, join
from stages.write.formats import find_file, iter_batches
from stages.write.sink import read_ipc

LABEL_SCHEMA = pa.schema([("id", pa.string()), ("step", pa.int32()), ("position", pa.int32()),
                          *[(f, pa.float32()) for f in FEATURE_NAMES], ("label", pa.bool_())])


def sequence_rows(tokens: dict[str, np.ndarray], output_ids: list[int], commit_step: list[int], budget: int,
                  block_length: int, ema_decay: float) -> dict[str, np.ndarray]:
    """Feature/label rows of one sequence. `tokens` holds [N] arrays step, position, argmax, confidence,
    margin, entropy: the token trace's rows (sorted by step). The engine records each still-masked
    position at every step up to its commit; rows of positions already committed (traces of older runs
    recorded every position) give no label. Features are replayed step by step on a [G] state, so a
    position's running state is exactly the one the engine had."""
    g = len(output_ids)
    rel_answer, rel_block = relative_positions(torch.tensor([g]), g, block_length)
    state = TrajectoryState.empty((g,))
    final = torch.tensor(output_ids)
    open_now = tokens["step"] <= np.asarray(commit_step)[tokens["position"]]  # masked when the step read it
    tokens = {k: v[open_now] for k, v in tokens.items()}
    step_of = tokens["step"]
    feats, labels, steps, positions = [], [], [], []
    for s in np.unique(step_of):
        sel = step_of == s
        pos = torch.from_numpy(tokens["position"][sel].astype(np.int64))
        dense = {k: torch.zeros(g, dtype=torch.float32) for k in ("confidence", "entropy", "margin")}
        for k in dense:
            dense[k][pos] = torch.from_numpy(tokens[k][sel].astype(np.float32))
        argmax = torch.full((g,), -1, dtype=torch.long)
        argmax[pos] = torch.from_numpy(tokens["argmax"][sel].astype(np.int64))
        f, state = trajectory_features(dense["confidence"], dense["entropy"], dense["margin"], argmax, state,
                                       rel_answer[0], rel_block[0], torch.tensor(min(s / budget, 1.0)), ema_decay)
        feats.append(f[pos])
        labels.append(argmax[pos] == final[pos])
        positions.append(pos)
        steps.append(torch.full((len(pos),), int(s)))
    if not feats:
        return {"features": np.zeros((0, len(FEATURE_NAMES)), np.float32), "label": np.zeros(0, bool),
                "step": np.zeros(0, np.int64), "position": np.zeros(0, np.int64)}
    return {"features": torch.cat(feats).numpy(), "label": torch.cat(labels).numpy(),
            "step": torch.cat(steps).numpy(), "position": torch.cat(positions).numpy()}


def shard_labels(fs, root: str, name: str, block_length: int, ema_decay: float) -> pa.Table:
    path = find_file(fs, join(root, "outputs", name))   # the run's outputs in whichever format it wrote
    if path is None:
        raise MissingInputError(f"no outputs of shard {name} under {root}/outputs")
    outputs = [row for batch in iter_batches(fs, path) for row in batch.to_pylist()]
    tokens = read_ipc(fs, join(root, "traces", f"{name}.tokens.arrow")).sort_by([("id", "ascending"),
                                                                                ("step", "ascending"),
                                                                                ("position", "ascending")])
    ids = tokens["id"].to_numpy(zero_copy_only=False)
    cols = {k: tokens[k].to_numpy() for k in ("step", "position", "argmax", "confidence", "margin", "entropy")}
    parts = []
    for row in outputs:
        sel = np.nonzero(ids == row["id"])[0]
        if not len(sel):
            continue
        r = sequence_rows({k: v[sel] for k, v in cols.items()}, row["output_ids"], row["commit_step"],
                          row["step_budget"], block_length, ema_decay)
        out = {"id": pa.array([row["id"]] * len(r["label"]), pa.string()), "step": r["step"].astype(np.int32),
               "position": r["position"].astype(np.int32)}
        out.update({f: r["features"][:, i].astype(np.float32) for i, f in enumerate(FEATURE_NAMES)})
        out["label"] = r["label"]
        parts.append(pa.table(out, schema=LABEL_SCHEMA))
    return pa.concat_tables(parts) if parts else LABEL_SCHEMA.empty_table()


def collect_labels(run_url: str, out_path: str, storage: StorageConfig | None = None) -> dict:
    """Write (features, label) rows of every shard of a run to `out_path` (Arrow IPC); returns counts."""
    fs, root = filesystem(run_url, storage or StorageConfig())
    with fs.open(join(root, "_manifest.json")) as f:
        manifest = json.load(f)
    decode = manifest["config"]["decode"]
    names = sorted(s["name"] for s in manifest["shards"].values())
    rows = positives = 0
    with pa.OSFile(out_path, "wb") as sink, pa.ipc.new_file(sink, LABEL_SCHEMA) as writer:
        for name in names:
            table = shard_labels(fs, root, name, decode["block_length"], decode["tspd"]["ema_decay"])
            writer.write_table(table)
            rows += table.num_rows
            positives += int(table["label"].to_numpy().sum()) if table.num_rows else 0
    return {"rows": rows, "positives": positives, "shards": len(names)}
