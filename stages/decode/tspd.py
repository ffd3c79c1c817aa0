"""The TSPD controller: a ~1.4K-parameter MLP mapping trajectory features to P(token has converged),
and the decode policy that fixes positions with it.

The file it is saved in holds the weights, the feature normalisation, the feature names and its
validation metrics, so a config can point at it and a report can say how good it is.
"""
from __future__ import annotations

import torch
from torch import nn

from stages.decode.config import DecodeConfig
from stages.decode.features import FEATURE_NAMES
from stages.decode.policies import StepContext, topk_mask
from stages.decode.trace_schema import CommitReason


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
                    "hidden": self.net[0].out_features, "metrics": metrics}, path)

    @classmethod
    def load(cls, path: str, device="cpu") -> "TspdController":
        blob = torch.load(path, map_location=device, weights_only=False)
        if blob["features"] != list(FEATURE_NAMES):
            raise ValueError(f"{path}: controller trained on features {blob['features']}, engine has {FEATURE_NAMES}")
        model = cls(len(FEATURE_NAMES), blob["hidden"])
        model.load_state_dict(blob["state_dict"])
        model.metrics = blob.get("metrics", {})
        return model.to(device).eval()


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
