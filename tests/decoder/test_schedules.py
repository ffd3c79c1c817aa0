"""SchED and Prophet thresholds tau(p) against their formulas, and the progress modes."""
from __future__ import annotations

import math

import pytest
import torch

from decoder.policies.schedules import SCHEDULES, progress, tau_cosine, tau_exp, tau_linear, tau_prophet

HIGH, LOW, K = 7.5, 2.5, 4.0
SMOOTH = {"linear": tau_linear, "cosine": tau_cosine, "exp": tau_exp}


def test_registry_names() -> None:
    assert set(SCHEDULES) == {"linear", "cosine", "exp", "prophet"}


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_endpoints_reach_tau_low(name: str) -> None:
    fn = SMOOTH[name]
    assert fn(0.0, HIGH, LOW, K) == pytest.approx(HIGH)
    assert fn(1.0, HIGH, LOW, K) == pytest.approx(LOW)


def test_exp_endpoints_only_approach_tau_low() -> None:
    assert tau_exp(0.0, HIGH, LOW, K) == pytest.approx(HIGH)
    assert tau_exp(1.0, HIGH, LOW, K) == pytest.approx(LOW + (HIGH - LOW) * math.exp(-K))
    assert tau_exp(1.0, HIGH, LOW, K) > LOW


@pytest.mark.parametrize("name", ["linear", "cosine", "exp", "prophet"])
def test_monotonic_non_increasing(name: str) -> None:
    p = torch.linspace(0, 1, 101)
    tau = SCHEDULES[name](p, HIGH, LOW, K)
    assert (tau[1:] <= tau[:-1] + 1e-6).all()
    assert tau[0] > tau[-1]


@pytest.mark.parametrize(("name", "expected"), [
    ("linear", 5.0),                          # 7.5 + (2.5 - 7.5) * 0.5
    ("cosine", 5.0),                          # 2.5 + 5 * 0.5 * (1 + cos(pi/2))
    ("exp", 2.5 + 5.0 * math.exp(-2.0)),      # 2.5 + 5 * e^(-4 * 0.5)
])
def test_midpoint_by_hand(name: str, expected: float) -> None:
    assert SCHEDULES[name](0.5, HIGH, LOW, K) == pytest.approx(expected)


def test_cosine_quarter_by_hand() -> None:
    # 2.5 + 5 * 0.5 * (1 + cos(pi/4)) = 2.5 + 2.5 * (1 + sqrt(2)/2)
    assert tau_cosine(0.25, HIGH, LOW) == pytest.approx(2.5 + 2.5 * (1 + math.sqrt(2) / 2))


@pytest.mark.parametrize("name", ["linear", "cosine", "exp", "prophet"])
def test_float_and_tensor_agree(name: str) -> None:
    grid = [0.0, 0.1, 0.25, 1 / 3 - 1e-3, 0.5, 2 / 3 + 1e-3, 0.9, 1.0]
    fn = SCHEDULES[name]
    as_tensor = fn(torch.tensor(grid, dtype=torch.float32), HIGH, LOW, K)
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.shape == (len(grid),)
    as_float = torch.tensor([float(fn(p, HIGH, LOW, K)) for p in grid])
    torch.testing.assert_close(as_tensor.float(), as_float, atol=1e-5, rtol=0)


def test_prophet_phases() -> None:
    assert tau_prophet(0.0) == 7.5
    assert tau_prophet(0.3) == 7.5
    assert tau_prophet(0.34) == 5.0
    assert tau_prophet(0.6) == 5.0
    assert tau_prophet(0.67) == 2.5
    assert tau_prophet(1.0) == 2.5
    t = tau_prophet(torch.tensor([0.0, 0.5, 0.9]))
    assert t.tolist() == [7.5, 5.0, 2.5]


def test_progress_t_over_T() -> None:
    step, total = torch.tensor([0, 3, 7, 2]), torch.tensor([8, 8, 8, 4])
    assert progress(step, total, "t_over_T").tolist() == [0.0, 0.375, 0.875, 0.5]


def test_progress_t_over_T_minus_1() -> None:
    step, total = torch.tensor([0, 3, 7, 0, 5]), torch.tensor([8, 8, 8, 1, 1])
    p = progress(step, total, "t_over_T_minus_1")
    torch.testing.assert_close(p, torch.tensor([0.0, 3 / 7, 1.0, 0.0, 1.0]))


def test_progress_unknown_mode_raises() -> None:
    with pytest.raises(ValueError, match="unknown progress mode"):
        progress(torch.tensor([0]), torch.tensor([4]), "t_over_t")
