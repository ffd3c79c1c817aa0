"""DiffusionGemma's `generate()` as a commit policy of the canvas engine (`decode.policy: [dgemma]`).

Per row and step it decides, from the step's per-position sample, argmax and entropy: which positions are
accepted (entropy bound), the next canvas (accepted samples, fresh noise elsewhere) and whether the canvas is
done (StableAndConfident, or its last step). Exit policies (`sched`, `prophet`) may end a canvas earlier; the
engine then commits the current argmax, exactly what `generate()` commits at a canvas's end. Settings resolve
per key: `decode.dgemma.*`, else the checkpoint's generation_config.json, else HF's defaults.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from decoder.canvas.sampler import accept_mask, push_history, renoise, stable_and_confident, temperatures
from decoder.config import DecodeConfig
from decoder.types import CommitReason


@dataclass
class DGemmaSettings:
    max_denoising_steps: int
    t_min: float
    t_max: float
    entropy_bound_nats: float
    stability_threshold_steps: int
    confidence_threshold_nats: float
    rng: str = "per_row"


@dataclass
class CanvasDecision:
    """[B, C] accepted bool and next canvas; [B] done (stop rule or last step), stopped (the stop rule);
    history [B, S, C] after this step; entropy_mean [B]."""
    accepted: torch.Tensor
    next_canvas: torch.Tensor
    done: torch.Tensor
    stopped: torch.Tensor
    history: torch.Tensor
    entropy_mean: torch.Tensor


def resolve_settings(cfg: DecodeConfig, checkpoint: dict) -> DGemmaSettings:
    """decode.dgemma.* where set, else the checkpoint's (generation_config.json, HF defaults)."""
    d = cfg.dgemma

    def pick(value, key):
        return checkpoint[key] if value is None else value
    return DGemmaSettings(int(pick(d.max_denoising_steps, "max_denoising_steps")), float(pick(d.t_min, "t_min")),
                          float(pick(d.t_max, "t_max")), float(pick(d.entropy_bound_nats, "entropy_bound")),
                          int(pick(d.stability_threshold_steps, "stability_threshold")),
                          float(pick(d.confidence_threshold_nats, "confidence_threshold")), d.rng)


class DGemmaPolicy:
    """The sampler; `settings` is filled by the canvas engine once the checkpoint's defaults are known."""
    kind, reason, name = "commit", CommitReason.CANVAS, "dgemma"
    canvas_only = True

    def __init__(self, cfg: DecodeConfig) -> None:
        self.cfg = cfg
        self.settings: DGemmaSettings | None = None

    def temperatures(self, canvas_step: torch.Tensor) -> torch.Tensor:
        s = self.settings
        return temperatures(canvas_step, s.max_denoising_steps, s.t_min, s.t_max)

    def decide(self, sample: torch.Tensor, argmax: torch.Tensor, entropy: torch.Tensor, noise: torch.Tensor,
               history: torch.Tensor, last_step: torch.Tensor) -> CanvasDecision:
        """One step's rules for every row; `last_step` [B] marks rows at their canvas's last allowed step."""
        s = self.settings
        accepted = accept_mask(entropy, s.entropy_bound_nats)
        entropy_mean = entropy.mean(-1)
        stopped = stable_and_confident(history, argmax, entropy_mean, s.confidence_threshold_nats)
        return CanvasDecision(accepted, renoise(sample, accepted, noise), stopped | last_step, stopped,
                              push_history(history, argmax), entropy_mean)
