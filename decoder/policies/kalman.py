"""Constant-velocity Kalman filter over each position's margin trajectory (Confidence Extrapolation).

State x = [delta, delta_dot] (margin and its per-step change), transition F = [[1, 1], [0, 1]],
process noise q * [[1/4, 1/2], [1/2, 1]] (white acceleration, dt = 1), observation H = [1, 0] with
noise r. Pure tensor functions over any leading shape [...]: x [..., 2], P [..., 2, 2].
"""
from __future__ import annotations

import torch

F = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
Q_UNIT = torch.tensor([[0.25, 0.5], [0.5, 1.0]])


def kalman_init(z: torch.Tensor, r: float, velocity_var: float = 100.0) -> tuple[torch.Tensor, torch.Tensor]:
    """State after the first observation: margin z (variance r), unknown velocity (variance velocity_var)."""
    x = torch.stack([z.float(), torch.zeros_like(z, dtype=torch.float32)], -1)
    P = torch.zeros(*z.shape, 2, 2, device=z.device)
    P[..., 0, 0], P[..., 1, 1] = r, velocity_var
    return x, P


def kalman_step(x: torch.Tensor, P: torch.Tensor, z: torch.Tensor, q: float, r: float):
    """Predict one step, then update with observation z. Returns (x, P, innovation, innovation variance)."""
    f, qm = F.to(x.device), Q_UNIT.to(x.device) * q
    x = x @ f.T
    P = f @ P @ f.T + qm
    s = P[..., 0, 0] + r
    innovation = z.float() - x[..., 0]
    k = P[..., :, 0] / s.unsqueeze(-1).clamp(min=1e-12)
    x = x + k * innovation.unsqueeze(-1)
    P = P - k.unsqueeze(-1) * P[..., 0:1, :]
    return x, P, innovation, s


def kalman_forecast(x: torch.Tensor, P: torch.Tensor, horizon: int, q: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Margin forecast `horizon` steps ahead: (mean, variance), variance including the process noise."""
    fh = torch.tensor([[1.0, float(horizon)], [0.0, 1.0]], device=x.device)
    mean = x[..., 0] + horizon * x[..., 1]
    cov = fh @ P @ fh.T
    f, qm = F.to(x.device), Q_UNIT.to(x.device) * q
    acc = torch.zeros(2, 2, device=x.device)
    for _ in range(horizon):
        acc = f @ acc @ f.T + qm
    return mean, cov[..., 0, 0] + acc[0, 0]
