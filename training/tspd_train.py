"""Train the TSPD controller from collected labels (training/labels.py).

Weighted binary cross-entropy with inverse-frequency class weights, AdamW (lr 1e-3, weight decay 1e-2),
a held-out split by sequence id, early stopping on the held-out loss. Saves the controller file the
config points to (decode.tspd.controller_path) with its validation precision / recall / AUC, and the
same metrics for a linear model on the same features (the measurement behind choosing the MLP).
"""
from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from decoder.features import FEATURE_NAMES
from decoder.policies.tspd import TspdController
from settings.schema import ConfigError


def load_labels(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with pa.memory_map(path) as f:
        t = pa.ipc.open_file(f).read_all()
    x = np.stack([t[f].to_numpy() for f in FEATURE_NAMES], 1).astype(np.float32)
    held_out = np.array([zlib.crc32(i.encode()) % 5 == 0 for i in t["id"].to_pylist()])
    return x, t["label"].to_numpy(zero_copy_only=False).astype(np.float32), held_out


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve via the rank statistic (ties averaged)."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inv, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.bincount(inv, ranks) / counts)[inv]
    pos = labels > 0.5
    n_pos, n_neg = pos.sum(), (~pos).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")  # undefined with one class
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / max(n_pos * n_neg, 1))


def metrics(logits: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict:
    pred = 1 / (1 + np.exp(-logits)) >= threshold
    pos = labels > 0.5
    tp = float((pred & pos).sum())
    return {"auc": auc(logits, labels), "precision": tp / max(pred.sum(), 1), "recall": tp / max(pos.sum(), 1),
            "positive_rate": float(pos.mean())}


def class_weights(y: torch.Tensor, pos_rate: float) -> torch.Tensor:
    """Per-row loss weights: inverse class frequency, so each class carries half the loss. Uniform when the
    labels hold one class (a model whose argmax is already final at every step: nothing to balance)."""
    if not 0.0 < pos_rate < 1.0:
        return torch.ones_like(y)
    return torch.where(y > 0.5, 0.5 / pos_rate, 0.5 / (1 - pos_rate))


def fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor,
        epochs: int = 60, patience: int = 5, batch: int = 4096, seed: int = 0) -> int:
    torch.manual_seed(seed)
    pos_rate = float(y.mean())
    weight = lambda t: class_weights(t, pos_rate)  # noqa: E731
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    best, best_state, bad, best_epoch = float("inf"), None, 0, 0
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(batch):
            loss = F.binary_cross_entropy_with_logits(model(x[idx]), y[idx], weight=weight(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val = F.binary_cross_entropy_with_logits(model(xv), yv, weight=weight(yv)).item()
        if val < best - 1e-4:
            best, best_state, bad, best_epoch = val, {k: v.clone() for k, v in model.state_dict().items()}, 0, epoch
        else:
            bad += 1
            if bad >= patience:
                break
    model.load_state_dict(best_state)
    return best_epoch + 1


class Linear(torch.nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.mean, self.std, self.lin = mean, std, torch.nn.Linear(len(FEATURE_NAMES), 1)

    def forward(self, x):
        return self.lin((x - self.mean) / self.std).squeeze(-1)


def train_controller(labels_path: str, out_path: str, hidden: int = 32, seed: int = 0) -> dict:
    x, y, held = load_labels(labels_path)
    if len(y) == 0:
        raise ConfigError(f"{labels_path} holds no label rows: run the pipeline with decode.trace=tokens "
                         "at the full budget (decode.policy=[none]) before `labels`")
    if held.all() or not held.any():   # tiny label sets: split by row instead of by sequence id
        held = np.arange(len(y)) % 5 == 0
    xt, yt = torch.from_numpy(x[~held]), torch.from_numpy(y[~held])
    xv, yv = torch.from_numpy(x[held]), torch.from_numpy(y[held])
    torch.manual_seed(seed)
    model = TspdController(len(FEATURE_NAMES), hidden)
    model.mean.copy_(xt.mean(0))
    model.std.copy_(xt.std(0).clamp(min=1e-6))
    epochs = fit(model, xt, yt, xv, yv, seed=seed)
    linear = Linear(model.mean, model.std)
    fit(linear, xt, yt, xv, yv, seed=seed)
    with torch.no_grad():
        result = {"validation": metrics(model(xv).numpy(), yv.numpy()),
                  "linear_validation": metrics(linear(xv).numpy(), yv.numpy()),
                  "constant_auc": 0.5, "epochs": epochs,
                  # one class (e.g. every argmax already final at every step): the controller learns a
                  # constant, so TSPD commits every position at once; AUC is undefined (nan)
                  "single_class": bool(y.min() == y.max()), "train_rows": len(xt), "validation_rows": len(xv),
                  "parameters": sum(p.numel() for p in model.net.parameters())}
    model.save(out_path, result)
    return result
