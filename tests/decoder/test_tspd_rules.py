"""TspdPolicy with a stubbed controller of known probabilities: which candidates are fixed at several
thresholds (P(converged) >= threshold_prob, inclusive), never a non-candidate, and the at-least-one rule
(the most probable candidate by the controller, not by the remasking score)."""
from __future__ import annotations

import pytest
import torch

from decoder.config import DecodeConfig
from decoder.policies.base import StepContext
from decoder.signals import StepSignals
from decoder.policies.tspd import TspdController, TspdPolicy

# Row 0: every position a candidate. Row 1: position 0 already committed, position 3 outside the block
# (both with a high P that must never be fixed). Row 2: nothing reaches 0.5; the remasking score prefers
# position 0, the controller position 2.
PROB = torch.tensor([[0.95, 0.7, 0.5, 0.3],
                     [0.99, 0.6, 0.2, 0.97],
                     [0.45, 0.1, 0.48, 0.2]])
MASKED = torch.tensor([[True, True, True, True], [False, True, True, True], [True, True, True, True]])
IN_BLOCK = torch.tensor([[True, True, True, True], [True, True, True, False], [True, True, True, True]])
SCORE = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.9, 0.1, 0.8, 0.9], [0.9, 0.5, 0.1, 0.3]])


class KnownProbabilities(torch.nn.Module):
    """Stands in for the MLP: returns logit(PROB) for features of PROB's shape."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        assert features.shape[:2] == PROB.shape
        return torch.logit(PROB.double()).float()


def policy(tmp_path, threshold: float) -> TspdPolicy:
    path = str(tmp_path / "tspd.pt")
    TspdController().save(path, {})
    cfg = DecodeConfig(policy=["tspd"])
    cfg.tspd.controller_path, cfg.tspd.threshold_prob = path, threshold
    pol = TspdPolicy(cfg)
    pol.controller = KnownProbabilities()
    return pol


def ctx(masked=MASKED, in_block=IN_BLOCK) -> StepContext:
    b, g = PROB.shape
    sig = StepSignals(torch.zeros(b, g, dtype=torch.long), SCORE, torch.zeros(b, g), torch.zeros(b, g))
    return StepContext(sig, SCORE, masked, in_block, torch.ones(b, dtype=torch.long), torch.zeros(b),
                       features=torch.zeros(b, g, 9))


@pytest.mark.parametrize("threshold, expected", [
    (0.9, [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]),    # row 1: only the forced best (0.6)
    (0.6, [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]),
    (0.5, [[1, 1, 1, 0], [0, 1, 0, 0], [0, 0, 1, 0]]),    # inclusive: P = 0.5 is fixed at 0.5
    (0.25, [[1, 1, 1, 1], [0, 1, 0, 0], [1, 0, 1, 0]]),
    (0.15, [[1, 1, 1, 1], [0, 1, 1, 0], [1, 0, 1, 1]]),
    (0.05, [[1, 1, 1, 1], [0, 1, 1, 0], [1, 1, 1, 1]]),
])
def test_fixes_exactly_the_candidates_at_or_above_the_threshold(tmp_path, threshold, expected) -> None:
    assert policy(tmp_path, threshold).select(ctx()).int().tolist() == expected


def test_at_least_one_per_row_is_the_most_probable_candidate(tmp_path) -> None:
    out = policy(tmp_path, 0.99).select(ctx())
    # row 0: 0.95; row 1: 0.6 (0.99 is committed, 0.97 outside the block); row 2: 0.48, though the
    # remasking score ranks position 0 first
    assert out.int().tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]


def test_a_row_without_candidates_fixes_nothing(tmp_path) -> None:
    masked = MASKED.clone()
    masked[1] = False
    out = policy(tmp_path, 0.5).select(ctx(masked=masked))
    assert out[1].tolist() == [False] * 4 and out[0].any() and out[2].any()
