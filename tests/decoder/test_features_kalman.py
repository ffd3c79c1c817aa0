"""Trajectory features against hand-computed values; the Kalman filter against closed-form cases."""
from __future__ import annotations

import pytest
import torch

from decoder.features import FEATURE_NAMES, TrajectoryState, relative_positions, trajectory_features
from decoder.policies.kalman import kalman_forecast, kalman_init, kalman_step


def test_features_by_hand():
    state = TrajectoryState.empty((2,))
    conf, ent = torch.tensor([0.9, 0.5]), torch.tensor([0.3, 1.2])
    ra, rb, prog = torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0]), torch.tensor(0.25)
    f1, state = trajectory_features(conf, ent, torch.tensor([4.0, 1.0]), torch.tensor([7, 8]), state, ra, rb, prog, 0.5)
    assert f1.shape == (2, len(FEATURE_NAMES))
    assert f1[:, 3].tolist() == [0.0, 0.0] and f1[:, 4].tolist() == [0.0, 0.0] and f1[:, 5].tolist() == [0.0, 0.0]
    f2, state = trajectory_features(conf, ent, torch.tensor([6.0, 0.0]), torch.tensor([7, 9]), state, ra, rb, prog, 0.5)
    assert f2[:, 3].tolist() == [2.0, -1.0]                       # margin - previous margin
    assert f2[:, 4].tolist() == [1.0, -0.5]                       # 0.5 * 0 + 0.5 * delta
    assert f2[:, 5].tolist() == [1.0, 0.0]                        # argmax held once / flipped
    f3, _ = trajectory_features(conf, ent, torch.tensor([7.0, 0.0]), torch.tensor([7, 9]), state, ra, rb, prog, 0.5)
    assert f3[:, 4].tolist() == [0.5 * 1.0 + 0.5 * 1.0, 0.5 * -0.5 + 0.5 * 0.0]
    assert f3[:, 5].tolist() == [2.0, 1.0]
    assert f3[:, 0].tolist() == conf.tolist() and f3[:, 1].tolist() == ent.tolist()
    assert f3[:, 2].tolist() == [7.0, 0.0] and f3[:, 8].tolist() == [0.25, 0.25]


def test_relative_positions_right_aligned():
    ra, rb = relative_positions(torch.tensor([4, 8]), 8, 4)
    assert ra[1].tolist() == pytest.approx([i / 7 for i in range(8)])
    assert [round(v, 4) for v in ra[0, 4:].tolist()] == [0.0, round(1 / 3, 4), round(2 / 3, 4), 1.0]
    assert [round(v, 4) for v in rb[1].tolist()] == [round(v, 4) for v in [0, 1 / 3, 2 / 3, 1, 0, 1 / 3, 2 / 3, 1]]


def test_kalman_exact_on_noise_free_line():
    slope, start = 0.5, 2.0
    z = torch.tensor([start + slope * t for t in range(6)])
    x, p = kalman_init(z[:1], r=0.0)
    for t in range(1, 6):
        x, p, innovation, _ = kalman_step(x, p, z[t:t + 1], q=0.0, r=0.0)
    assert torch.allclose(x, torch.tensor([[start + slope * 5, slope]]))
    for h in (1, 3, 10):
        mean, var = kalman_forecast(x, p, h, q=0.0)
        assert abs(mean.item() - (start + slope * (5 + h))) < 1e-5
        assert abs(var.item()) < 1e-5
    assert abs(innovation.item()) < 1e-5


def test_kalman_variance_grows_with_horizon():
    z = torch.tensor([1.0, 1.5, 1.7, 2.4, 2.6])
    x, p = kalman_init(z[:1], r=0.5)
    for t in range(1, 5):
        x, p, _, s = kalman_step(x, p, z[t:t + 1], q=0.1, r=0.5)
        assert s.item() > 0.5
    variances = [kalman_forecast(x, p, h, q=0.1)[1].item() for h in range(1, 6)]
    assert all(b > a for a, b in zip(variances, variances[1:]))
