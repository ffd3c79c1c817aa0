"""TSPD label semantics on a hand-built run: for every step and every position still masked when that
step's logits were read (commit step >= step), label = (that step's argmax == the final output token);
positions committed earlier give no row. Features are replayed from the same token trace."""
from __future__ import annotations

import json
import random

import fsspec
import pyarrow as pa

from stages.write.trace_tables import TOKEN_SCHEMA
from training.labels import collect_labels
from stages.write.formats import write_formats
from stages.write.sink import write_ipc
from tests.support.files import read_arrow

# seq "a": 3 positions, final tokens [5, 6, 2], committed at steps [1, 0, 2], budget 4.
# Position 1 changes its argmax after its commit (step 1: 3, step 2: 3) and position 0's last argmax is
# not the committed token's (commit at step 1): neither may count. seq "b": both positions at step 0.
ARGMAX = {"a": [[4, 6, 9], [5, 3, 8], [7, 3, 2]], "b": [[2, 2]]}
OUTPUTS = [{"id": "a", "output_ids": [5, 6, 2], "commit_step": [1, 0, 2], "step_budget": 4},
           {"id": "b", "output_ids": [2, 2], "commit_step": [0, 0], "step_budget": 4}]
EXPECTED = {("a", 0, 0): False, ("a", 0, 1): True, ("a", 0, 2): False,   # step 0: every position open
            ("a", 1, 0): True, ("a", 1, 2): False,                       # step 1: position 1 committed at 0
            ("a", 2, 2): True,                                           # step 2: only position 2 open
            ("b", 0, 0): True, ("b", 0, 1): True}


def _run_dir(tmp_path):
    rows = [{"id": i, "step": s, "position": p, "argmax": tok, "confidence": 0.5, "margin": 10.0 * s + p,
             "entropy": 0.1, "committed": False, "reason": "none"}
            for i, steps in ARGMAX.items() for s, toks in enumerate(steps) for p, tok in enumerate(toks)]
    random.Random(0).shuffle(rows)  # trace files carry no row order; labels must not depend on it
    tokens = pa.Table.from_pylist(rows, schema=TOKEN_SCHEMA)
    outputs = pa.Table.from_pylist(OUTPUTS)
    fs = fsspec.filesystem("file")
    for sub in ("outputs", "traces"):
        (tmp_path / sub).mkdir()
    write_ipc(fs, str(tmp_path / "outputs" / "s.arrow"), outputs)
    write_ipc(fs, str(tmp_path / "traces" / "s.tokens.arrow"), tokens)
    manifest = {"config": {"decode": {"block_length": 4, "tspd": {"ema_decay": 0.5}}},
                "shards": {"in/s.jsonl": {"name": "s"}}}
    (tmp_path / "_manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def _labels(tmp_path) -> tuple[dict, pa.Table]:
    counts = collect_labels(str(_run_dir(tmp_path)), str(tmp_path / "labels.arrow"))
    return counts, read_arrow(tmp_path / "labels.arrow")


def test_labels_positive_iff_step_argmax_is_final_token_on_open_positions(tmp_path) -> None:
    counts, table = _labels(tmp_path)
    got = {(r["id"], r["step"], r["position"]): r["label"] for r in table.to_pylist()}
    assert got == EXPECTED
    assert counts == {"rows": len(EXPECTED), "positives": sum(EXPECTED.values()), "shards": 1}


def test_label_features_are_replayed_from_the_trace(tmp_path) -> None:
    _, table = _labels(tmp_path)
    row = {(r["id"], r["step"], r["position"]): r for r in table.to_pylist()}
    a22, a12, a00 = row[("a", 2, 2)], row[("a", 1, 2)], row[("a", 0, 0)]
    assert (a22["margin"], a22["margin_delta"], a22["progress"]) == (22.0, 10.0, 0.5)   # step 2 of budget 4
    assert a22["stable_steps"] == 0 and a00["stable_steps"] == 0                       # argmax 8 -> 2; first
    assert a12["margin"] == 12.0 and a12["rel_pos_answer"] == 1.0 and row[("b", 0, 1)]["rel_pos_answer"] == 1.0


def test_labels_read_outputs_in_every_format_the_pipeline_writes(tmp_path) -> None:
    """A run written as Parquet or JSONL gives the same labels as one written as Arrow (stages/write/formats.py)."""
    for sub in ("arrow", "parquet", "jsonl"):
        (tmp_path / sub).mkdir()
    _, arrow = _labels(tmp_path / "arrow")
    fs = fsspec.filesystem("file")
    for fmt in ("parquet", "jsonl"):
        run = _run_dir(tmp_path / fmt)
        outputs = read_arrow(run / "outputs" / "s.arrow")
        (run / "outputs" / "s.arrow").unlink()
        write_formats(fs, str(run / "outputs" / "s"), outputs, [fmt])
        collect_labels(str(run), str(tmp_path / f"{fmt}.arrow"))
        assert read_arrow(tmp_path / f"{fmt}.arrow").equals(arrow), fmt
