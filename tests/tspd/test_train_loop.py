"""The train-from-traces loop as documented in README: run the pipeline at the full budget, collect
labels from its traces, train the controller, decode with it (embedded model, CPU)."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from conftest import EMBEDDED_MODEL
from pipeline import main as cli
from stages.config import load_config
from stages.decode.adapters import load_model
from stages.decode.features import FEATURE_NAMES
from stages.decode.offline import decode_prompts
from stages.decode.tspd import TspdController
from stages.decode.tspd_train import auc
from stages.labels import collect_labels
from stages.preprocess import load_tokenizer
from stages.run import run_pipeline


def _jsonl(path, rows):
    path.write_text("".join(json.dumps({"id": r["id"], "prompt": r["prompt"]}) + "\n" for r in rows))


def test_collect_train_decode(ray_cluster, tmp_path):
    train = [json.loads(line) for line in open("embedded/tspd/prompts.jsonl")][:64]
    test = [json.loads(line) for line in open("embedded/eval/heldout.jsonl")][:64]
    (tmp_path / "in").mkdir()
    _jsonl(tmp_path / "in" / "train.jsonl", train)
    _jsonl(tmp_path / "in" / "test.jsonl", test)
    run_pipeline(load_config("configs/default.yaml", [
        f"input.url={tmp_path}/in/*.jsonl", f"output.url={tmp_path}/run", f"model.path={EMBEDDED_MODEL}",
        "decode.policy=[none]", "decode.trace=tokens", "progress=false"]))
    counts = collect_labels(str(tmp_path / "run"), str(tmp_path / "labels.arrow"))
    assert counts["rows"] == 128 * sum(range(1, 17))      # still-masked positions over 16 one-token steps

    with pa.memory_map(str(tmp_path / "labels.arrow")) as f:
        labels = pa.ipc.open_file(f).read_all()
    is_test = pc.starts_with(labels["id"], "eval-")
    with pa.OSFile(str(tmp_path / "train.arrow"), "wb") as sink, pa.ipc.new_file(sink, labels.schema) as w:
        w.write_table(labels.filter(pc.invert(is_test)))
    assert cli(["train-tspd", str(tmp_path / "train.arrow"), "--out", str(tmp_path / "tspd.pt")]) == 0

    held = labels.filter(is_test)
    x = torch.from_numpy(np.stack([held[f].to_numpy() for f in FEATURE_NAMES], 1))
    y = held["label"].to_numpy(zero_copy_only=False).astype(np.float32)
    assert 0 < y.sum() < len(y), "held-out prompts need both classes for an AUC"
    with torch.no_grad():
        scores = TspdController.load(str(tmp_path / "tspd.pt"))(x).numpy()
    assert auc(scores, y) > auc(np.zeros_like(scores), y) + 0.1    # beats a constant predictor (0.5)

    cfg = load_config(None, ["decode.policy=[tspd,ce]", f"decode.tspd.controller_path={tmp_path / 'tspd.pt'}",
                             "decode.trace=off"]).decode
    run = decode_prompts(load_model(str(EMBEDDED_MODEL)), load_tokenizer(str(EMBEDDED_MODEL)),
                         [r["prompt"] for r in test[:32]], cfg)
    assert sum(r.steps_taken for r in run.results) < 16 * 32    # fewer NFE than the fixed-step baseline
