"""Progress-dependent exit thresholds tau(p), in logit-margin units (SchED and Prophet).

Pure functions of progress p in [0, 1] (a float or a tensor) returning the threshold the aggregated
top-2 logit margin must reach for a row to exit. SchED's three smooth schedules are non-increasing from
tau_high at p = 0 to tau_low at p = 1 (the exponential one only approaches tau_low, as in the paper);
Prophet's is a three-phase step function. Torch loads only when a tensor comes in: config checks read
SCHEDULES on the driver without it.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Union

if TYPE_CHECKING:
    import torch

Progress = Union[float, "torch.Tensor"]


def _scalar(p: Progress) -> bool:
    return isinstance(p, (int, float))


def tau_linear(p: Progress, tau_high: float, tau_low: float, k: float = 0.0) -> Progress:
    return tau_high + (tau_low - tau_high) * p


def tau_cosine(p: Progress, tau_high: float, tau_low: float, k: float = 0.0) -> Progress:
    cos = math.cos(math.pi * p) if _scalar(p) else (math.pi * p).cos()
    return tau_low + (tau_high - tau_low) * 0.5 * (1 + cos)


def tau_exp(p: Progress, tau_high: float, tau_low: float, k: float = 4.0) -> Progress:
    decay = math.exp(-k * p) if _scalar(p) else (-k * p).exp()
    return tau_low + (tau_high - tau_low) * decay


def tau_prophet(p: Progress, tau_high: float = 7.5, tau_low: float = 2.5, k: float = 0.0) -> Progress:
    """Prophet's phases: tau_high before p = 1/3, their midpoint (5.0 by default) before 2/3, then tau_low."""
    mid = 0.5 * (tau_high + tau_low)
    if not _scalar(p):
        import torch
        return torch.where(p < 1 / 3, tau_high, torch.where(p < 2 / 3, mid, tau_low)).to(torch.float32)
    return tau_high if p < 1 / 3 else mid if p < 2 / 3 else tau_low


SCHEDULES: dict[str, Callable[..., Progress]] = {
    "linear": tau_linear, "cosine": tau_cosine, "exp": tau_exp, "prophet": tau_prophet,
}


def progress(step: "torch.Tensor", total: "torch.Tensor", mode: str = "t_over_T") -> "torch.Tensor":
    """p for 0-based global step `step` of `total`: t/T (paper) or t/(T-1) (released SchED code)."""
    step, total = step.float(), total.float()
    if mode == "t_over_T":
        return step / total
    if mode == "t_over_T_minus_1":
        return (step / (total - 1).clamp(min=1)).clamp(max=1.0)
    raise ValueError(f"unknown progress mode {mode!r}; use 't_over_T' or 't_over_T_minus_1'")
