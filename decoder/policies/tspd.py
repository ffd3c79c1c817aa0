"""The TSPD controller: a ~1.4K-parameter MLP mapping trajectory features to P(token has converged),
and the decode policy that fixes positions with it.

The file it is saved in holds the weights, the feature normalisation, the feature names and its
validation metrics, so a config can point at it and a report can say how good it is. It loads with
`torch.load(weights_only=True)`: tensors and plain values only, so a controller file cannot run code (a
pickle that tries is refused with a clear error). Metrics are saved as plain numbers; controllers saved
before that hold numpy scalars, the only extra types the loader allows.
"""
from __future__ import annotations

import pickle

import numpy as np
import torch
from torch import nn

from decoder.config import DecodeConfig
from decoder.features import FEATURE_NAMES
from decoder.policies.base import StepContext, topk_mask
from decoder.types import CommitReason


class TspdController(nn.Module):
    def __init__(self, n_features: int = len(FEATURE_NAMES), hidden: int = 32) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logit of P(converged) for features [..., F] -> [...]."""
        return self.net((features - self.mean) / self.std).squeeze(-1)

    def save(self, path: str, metrics: dict) -> None:
        torch.save({"state_dict": self.state_dict(), "features": list(FEATURE_NAMES),
                    "hidden": self.net[0].out_features, "metrics": plain(metrics)}, path)

    @classmethod
    def load(cls, path: str, device="cpu") -> "TspdController":
        blob = load_blob(path, device)
        if blob["features"] != list(FEATURE_NAMES):
            raise ValueError(f"{path}: controller trained on features {blob['features']}, engine has {FEATURE_NAMES}")
        model = cls(len(FEATURE_NAMES), blob["hidden"])
        model.load_state_dict(blob["state_dict"])
        model.metrics = blob.get("metrics", {})
        return model.to(device).eval()


#: Types beyond torch's weights-only set that older controller files hold (numpy scalars in their metrics).
LEGACY_GLOBALS = [np._core.multiarray.scalar, np.dtype, np.dtypes.Float64DType, np.dtypes.Float32DType,
                  np.dtypes.Int64DType]


def plain(value):
    """`value` with numpy scalars as Python numbers (what a weights-only load accepts without allowances)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def load_blob(path: str, device="cpu") -> dict:
    """A controller file's contents, loaded without running code; ValueError for anything else."""
    try:
        with torch.serialization.safe_globals(LEGACY_GLOBALS):
            blob = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [x.strip() for x in str(e).splitlines() if "WeightsUnpickler error" in x]
        first = lines[0].removeprefix("WeightsUnpickler error: ") if lines else type(e).__name__
        raise ValueError(f"{path}: refused: not a TSPD controller that loads without running code "
                         f"(weights-only load failed: {first})") from None
    if not isinstance(blob, dict) or not {"state_dict", "features", "hidden"} <= set(blob):
        raise ValueError(f"{path}: not a TSPD controller file (train one with `pipeline.py train-tspd`)")
    return blob


class TspdPolicy:
    """Fix every candidate whose predicted P(converged) >= threshold_prob; at least one per step."""
    kind, reason, needs_features = "commit", CommitReason.TSPD, True
    reads, reads_span = frozenset(), True   # features (added by needs_features) over the still-masked span

    def __init__(self, cfg: DecodeConfig) -> None:
        self.threshold_prob = cfg.tspd.threshold_prob
        self.controller = TspdController.load(cfg.tspd.controller_path)

    def select(self, ctx: StepContext) -> torch.Tensor:
        ctl = self.controller.to(ctx.features.device)
        with torch.inference_mode():
            prob = torch.sigmoid(ctl(ctx.features))
        best = topk_mask(prob, ctx.candidates, torch.ones_like(ctx.k))
        return (ctx.candidates & (prob >= self.threshold_prob)) | best
