"""Per-position step signals and per-row aggregation against hand computation; LLaDA's transfer schedule."""
from __future__ import annotations

import math

import pytest
import torch

from decoder.signals import aggregate, gumbel_argmax, step_signals
from decoder.transfer import num_transfer_tokens, validate_schedule


def hand_logits() -> torch.Tensor:
    """[2, 2, 4] logits with known top-2 values."""
    return torch.tensor([
        [[3.0, 1.0, 0.0, -1.0], [0.0, 0.0, 2.0, 0.5]],
        [[1.0, 1.0, 1.0, 1.0], [-2.0, 5.0, 4.0, 0.0]],
    ])


def test_step_signals_by_hand() -> None:
    logits = hand_logits()
    sig = step_signals(logits)
    assert sig.x0.dtype == torch.long and sig.x0.shape == (2, 2)
    assert sig.x0[0].tolist() == [0, 2] and sig.x0[1, 1].item() == 1
    torch.testing.assert_close(sig.margin, torch.tensor([[2.0, 1.5], [0.0, 1.0]]))
    for b in range(2):
        for g in range(2):
            row = logits[b, g].tolist()
            z = sum(math.exp(v) for v in row)
            probs = [math.exp(v) / z for v in row]
            assert sig.confidence[b, g].item() == pytest.approx(max(probs), rel=1e-5)
            assert sig.entropy[b, g].item() == pytest.approx(-sum(p * math.log(p) for p in probs), rel=1e-5)
    assert sig.entropy[1, 0].item() == pytest.approx(math.log(4), rel=1e-6)  # uniform: log V nats
    assert sig.confidence[1, 0].item() == pytest.approx(0.25)


def test_step_signals_any_float_dtype() -> None:
    logits = hand_logits()
    sig16 = step_signals(logits.to(torch.bfloat16))
    assert sig16.margin.dtype == torch.float32 and sig16.confidence.dtype == torch.float32
    torch.testing.assert_close(sig16.margin, step_signals(logits).margin)


def test_gumbel_argmax_greedy_and_seeded() -> None:
    logits = torch.randn(2, 3, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(gumbel_argmax(logits, 0.0, [None, None]), logits.argmax(-1))
    a = gumbel_argmax(logits, 1.0, [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)])
    b = gumbel_argmax(logits, 1.0, [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)])
    assert torch.equal(a, b)


def test_step_signals_temperature_confidence_is_prob_of_sample() -> None:
    logits = torch.randn(1, 8, 16, generator=torch.Generator().manual_seed(1))
    sig = step_signals(logits, temperature=5.0, generators=[torch.Generator().manual_seed(3)])
    probs = logits.softmax(-1)
    torch.testing.assert_close(sig.confidence, probs.gather(-1, sig.x0[..., None])[..., 0])


VALUES = torch.tensor([[1.0, 100.0, 3.0, 5.0], [2.0, 4.0, 6.0, 8.0], [9.0, 9.0, 9.0, 9.0]])
MASK = torch.tensor([[True, False, True, True], [False, True, True, False], [False, False, False, False]])


def test_aggregate_mean() -> None:
    out = aggregate(VALUES, MASK, "mean")
    assert out[:2].tolist() == [3.0, 5.0]      # (1+3+5)/3 ignores the 100 outside the mask; (4+6)/2
    assert out[2].item() == math.inf


def test_aggregate_min_and_median() -> None:
    assert aggregate(VALUES, MASK, "min").tolist() == [1.0, 4.0, math.inf]
    assert aggregate(VALUES, MASK, "median").tolist() == [3.0, 4.0, math.inf]  # "lower" interpolation


def test_aggregate_quantile_lower_and_interpolated() -> None:
    """quantile takes the lower order statistic; quantile_linear interpolates like torch.quantile (SchED's `q`)."""
    assert aggregate(VALUES, MASK, "quantile", 0.75).tolist() == [3.0, 4.0, math.inf]
    lin = aggregate(VALUES, MASK, "quantile_linear", 0.75)
    assert lin[:2].tolist() == [torch.quantile(torch.tensor([1.0, 3.0, 5.0]), 0.75).item(),
                                torch.quantile(torch.tensor([4.0, 6.0]), 0.75).item()] == [4.0, 5.5]
    assert lin[2].item() == math.inf


def test_aggregate_unknown_raises() -> None:
    with pytest.raises(ValueError, match="unknown aggregate"):
        aggregate(VALUES, MASK, "max")


@pytest.mark.parametrize(("masked", "steps", "expected"), [
    (10, 4, [3, 3, 2, 2]),
    (8, 4, [2, 2, 2, 2]),
    (3, 5, [1, 1, 1, 0, 0]),
    (32, 1, [32]),
])
def test_num_transfer_tokens(masked: int, steps: int, expected: list[int]) -> None:
    plan = num_transfer_tokens(masked, steps)
    assert plan == expected and sum(plan) == masked


def test_num_transfer_tokens_rejects_zero_steps() -> None:
    with pytest.raises(ValueError, match="steps must be positive"):
        num_transfer_tokens(4, 0)


def test_validate_schedule_steps_per_block() -> None:
    assert validate_schedule(32, 8, 16) == 4
    assert validate_schedule(16, 16, 16) == 16


def test_validate_schedule_errors() -> None:
    assert validate_schedule(30, 8, 16) == 4          # 30 tokens occupy 4 whole blocks (the last partly EOS)
    with pytest.raises(ValueError, match=r"steps \(6\) must be a multiple of the number of blocks \(4"):
        validate_schedule(30, 8, 6)
    with pytest.raises(ValueError, match=r"steps \(6\) must be a multiple of the number of blocks \(4"):
        validate_schedule(32, 8, 6)
    with pytest.raises(ValueError, match="must be positive"):
        validate_schedule(0, 8, 8)


def test_dream_transfer_tokens() -> None:
    from decoder.transfer import dream_transfer_tokens
    # 16 masks over 8 steps, eps 1e-3: the per-step counts Dream's own loop committed on the tiny parity
    # checkpoint (its output_history, tests/decoder/parity/make_dream_golden.py)
    assert dream_transfer_tokens(16, 8, 1e-3) == [1, 2, 2, 2, 2, 2, 2, 3]
    for masked, steps in ((13, 5), (1, 4), (100, 7), (0, 3)):
        plan = dream_transfer_tokens(masked, steps, 1e-3)
        assert len(plan) == steps and sum(plan) == masked and min(plan) >= 0
        ts = torch.linspace(1, 1e-3, steps + 1)
        left = masked
        for i, k in enumerate(plan[:-1]):          # int(n (1 - s/t)) of the n still masked
            assert k == int(left * (1 - ts[i + 1] / ts[i]))
            left -= k
