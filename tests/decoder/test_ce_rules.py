"""Confidence Extrapolation, rule by rule, on scripted margin trajectories (default `CeConfig`: q 0.05,
r 1, H 2, z 1, fix 6, hold 2, innovation k 3).

Each case replays a few steps of per-position margins and argmaxes through the modifier exactly as the
engine feeds it (trajectory features for the argmax-held count, per-position filter state), then checks
what the last step keeps, holds back and adds. The trajectories sit far from the thresholds: a steady
margin of 12 forecasts a lower bound near 10.7, a steady 4 near 2.7 (neither fix nor hold), a steady 1
near -0.3, and a margin falling 11 -> 4 by one a step near 0.7.
"""
from __future__ import annotations

import torch

from decoder.policies.ce import ConfidenceExtrapolation
from decoder.config import DecodeConfig
from decoder.features import TrajectoryState, trajectory_features
from decoder.policies.base import StepContext
from decoder.signals import StepSignals

STEADY_HIGH, STEADY_MID, STEADY_LOW = [12.0] * 8, [4.0] * 8, [1.0] * 8
FALLING = [11.0, 10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0]  # current margin 4, forecast lower bound < 2
RISING = [-5.0, -3.5, -2.0, -0.5, 1.0, 2.5, 4.0, 5.5]   # current margin 5.5 < 6, forecast lower bound >= 6


def replay(tracks, picked, masked=None, in_block=None, score=None, flips=None):
    """Run CE over one row per track. `tracks[b][j]` is position j's margin trajectory (all the same length);
    the argmax holds except at the last step where `flips[b][j]` is set. Earlier steps pick nothing; at the
    last step the commit policy picked `picked`. Returns (kept, look-ahead, exit allowed) at the last step."""
    b, g, steps = len(tracks), len(tracks[0]), len(tracks[0][0])
    margin = torch.tensor(tracks, dtype=torch.float32).permute(2, 0, 1)          # [S, B, G]
    argmax = torch.full((steps, b, g), 7, dtype=torch.long)
    if flips is not None:
        argmax[-1] = torch.where(torch.tensor(flips), 9, 7)
    ce = ConfidenceExtrapolation(DecodeConfig())
    pos = {k: torch.full((b, g, *shape), fill, dtype=dt) for k, (dt, fill, shape) in ce.position_state.items()}
    state = TrajectoryState.empty((b, g))
    ones = torch.ones(b, g, dtype=torch.bool)
    masked = ones if masked is None else torch.tensor(masked)
    in_block = ones if in_block is None else torch.tensor(in_block)
    conf = torch.full((b, g), 0.5) if score is None else torch.tensor(score)
    for s in range(steps):
        feats, state = trajectory_features(conf, torch.zeros(b, g), margin[s], argmax[s], state, torch.zeros(b, g),
                                           torch.zeros(b, g), torch.zeros(b, 1))
        ctx = StepContext(StepSignals(argmax[s], conf, margin[s], torch.zeros(b, g)), conf, masked, in_block,
                          torch.ones(b, dtype=torch.long), torch.zeros(b), features=feats, pos=pos)
        commit = torch.tensor(picked) if s == steps - 1 else torch.zeros(b, g, dtype=torch.bool)
        kept, lookahead = ce.modify(ctx, commit)
    return kept.tolist(), lookahead.tolist(), ce.modify_exit(ctx, torch.ones(b, dtype=torch.bool)).tolist()


# ---------------------------------------------------------------- (a) look-ahead


def test_lookahead_fixes_an_unpicked_candidate_forecast_above_fix_margin() -> None:
    # position 0 is the commit policy's pick; position 1 (not picked) is the subject
    kept, lookahead, _ = replay([[STEADY_HIGH, STEADY_HIGH], [STEADY_HIGH, RISING]], [[True, False]] * 2)
    assert lookahead == [[False, True], [False, True]]   # steady 12; rising to 5.5 (forecast, not the margin)
    assert kept == [[True, False], [True, False]]


def test_lookahead_does_not_fire_below_fix_margin_on_oscillation_or_outside_the_candidates() -> None:
    jump = STEADY_HIGH[:-1] + [30.0]                                          # innovation 18 > 3 sqrt(S)
    tracks = [[STEADY_HIGH, STEADY_MID], [STEADY_HIGH, STEADY_HIGH], [STEADY_HIGH, jump],
              [STEADY_HIGH, STEADY_HIGH], [STEADY_HIGH, STEADY_HIGH]]
    flips = [[False, False], [False, True], [False, False], [False, False], [False, False]]
    masked = [[True, True]] * 3 + [[True, False], [True, True]]     # row 3: position 1 already committed
    in_block = [[True, True]] * 4 + [[True, False]]                 # row 4: position 1 outside the block
    _, lookahead, _ = replay(tracks, [[True, False]] * 5, masked=masked, in_block=in_block, flips=flips)
    assert lookahead == [[False, False]] * 5


# ---------------------------------------------------------------- (b) stabilisation: hold-backs


def test_hold_back_on_an_argmax_flip() -> None:
    flips = [[False, True], [False, False]]
    kept, lookahead, _ = replay([[STEADY_HIGH, STEADY_HIGH]] * 2, [[True, True]] * 2, flips=flips)
    assert kept == [[True, False], [True, True]]   # same margins; only the flipped pick is held
    assert lookahead == [[False, False]] * 2


def test_hold_back_on_a_large_innovation() -> None:
    jump, nudge = STEADY_HIGH[:-1] + [30.0], STEADY_HIGH[:-1] + [13.5]   # |innovation| 18 vs 1.5; bound 4.2
    kept, _, _ = replay([[STEADY_HIGH, jump], [STEADY_HIGH, nudge]], [[True, True]] * 2)
    assert kept == [[True, False], [True, True]]   # the jump is upward: only the innovation rule can hold it


def test_hold_back_on_a_low_forecast_bound() -> None:
    tracks = [[STEADY_HIGH, STEADY_LOW], [STEADY_HIGH, FALLING], [STEADY_HIGH, STEADY_MID]]
    kept, _, _ = replay(tracks, [[True, True]] * 3)
    # steady 1: bound -0.3; falling to 4: bound 0.7 although the margin is 4; steady 4: bound 2.7, kept
    assert kept == [[True, False], [True, False], [True, True]]


def test_hold_back_keeps_the_best_pick_when_all_would_be_held() -> None:
    score = [[0.2, 0.9, 0.5, 0.95], [0.5, 0.5, 0.5, 0.5]]
    picked = [[True, True, True, False], [False, False, False, False]]
    kept, lookahead, _ = replay([[STEADY_LOW] * 4, [STEADY_LOW] * 4], picked, score=score)
    assert kept == [[False, True, False, False],   # the highest-scoring pick (0.95 was not picked)
                    [False, False, False, False]]  # a row that picked nothing commits nothing
    assert lookahead == [[False] * 4] * 2


# ---------------------------------------------------------------- exit hold


def test_exit_is_held_while_a_masked_position_flips() -> None:
    flips = [[False, True], [False, False], [False, True]]
    masked = [[True, True], [True, True], [True, False]]        # row 2: the flipped position is committed
    _, _, exit_ok = replay([[STEADY_HIGH, STEADY_HIGH]] * 3, [[True, False]] * 3, masked=masked, flips=flips)
    assert exit_ok == [False, True, True]
