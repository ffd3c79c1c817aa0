"""QPS_gamma, the SchED paper's quality-penalised speedup, the one definition benchmarks and the report use:

    QPS_gamma = speedup x (score / baseline_score) ** gamma,   gamma = 4

`score` is the run's task metric and `baseline_score` the fixed-step baseline's (benchmarks: exact match
on the held-out set). A pipeline run has no reference answers, so the report scores a run by its
agreement with the baseline's outputs; the baseline agrees with itself (score 1). Agreement is reported
beside QPS in both places.
"""
from __future__ import annotations

GAMMA = 4.0


def qps(speedup: float, score: float, baseline_score: float, gamma: float = GAMMA) -> float:
    """speedup x (score / baseline_score)^gamma; NaN when the baseline scored 0."""
    if not baseline_score:
        return float("nan")
    return speedup * (score / baseline_score) ** gamma
