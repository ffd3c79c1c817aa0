"""Choosing an exit setting from a pilot: the grid of settings, each one's figures from its replayed rows,
and the cheapest setting that meets a quality target (pure functions; driver/calibrate.py runs them).

Quality is agreement with the full-budget decode (same answer text), or, when the input has a reference
column, the fraction of the full budget's right answers a setting keeps (paired on the same rows, so the
full budget's own errors do not count against it); each with a 95 % Wilson interval from the pilot size,
and the target is met when the interval's lower bound reaches it, so a small pilot cannot pick an aggressive setting by luck (a pilot of n
rows cannot show more than n / (n + 3.84): 0.981 for 200 rows). `bound="point"` judges the pilot's own count
instead, to its resolution: a setting meets the target when it misses no more of the n rows than a setting
exactly at the target typically would (the median of Binomial(n, 1 - target)). Comparing the fraction
itself would ask for more than the target whenever n (1 - target) is not a whole number: at 0.99 on 186
rows it allows 1 miss where 1.86 are expected, so a setting exactly at the target would fail 56 % of pilots.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Callable

from report.qps import qps

Z95 = 1.959964


@dataclass(frozen=True)
class CommitSetting:
    """A commit setting that replaces the job's: its policy list (commit policy and modifiers) and fields of
    their sections as (section, field, value). It changes which tokens are committed, so the pilot is
    decoded with it (exit settings are then replayed on that decode's traces where they can be)."""
    policy: tuple[str, ...]
    params: tuple[tuple[str, str, object], ...] = ()

    @property
    def label(self) -> str:
        return "+".join(self.policy) + "".join(f" {sec}.{k}={v}" for sec, k, v in self.params)

    def overrides(self) -> dict[str, object]:
        return {"decode.policy": list(self.policy), **{f"decode.{sec}.{k}": v for sec, k, v in self.params}}

    def sections(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for sec, k, v in self.params:
            out.setdefault(sec, {})[k] = v
        return out


@dataclass(frozen=True)
class Setting:
    """One setting of the grid: an exit policy and its section's fields (as `decode.<policy>.<field>` keys),
    on the job's commit policy or, with `commit`, on another commit setting."""
    policy: str                         # sched | prophet | none (no exit: the full budget, or `commit` alone)
    params: tuple[tuple[str, object], ...] = ()
    commit: CommitSetting | None = None

    @property
    def label(self) -> str:
        exit_ = self.policy + " " + " ".join(f"{k}={v}" for k, v in self.params) if self.policy != "none" else ""
        if self.commit is None:
            return exit_ or "full budget"
        return self.commit.label + (f" + {exit_}" if exit_ else "")

    def overrides(self) -> dict[str, object]:
        out = self.commit.overrides() if self.commit else {}
        return {**out, **{f"decode.{self.policy}.{k}": v for k, v in self.params}}


def default_grid() -> list[Setting]:
    """SchED's schedules x thresholds x aggregates (x k for exp), and Prophet's thresholds: 249 settings."""
    grid = []
    his, los = (3.0, 5.0, 7.5, 10.0, 12.0), (0.5, 1.5, 2.5, 4.0)
    for schedule, hi, lo, agg in itertools.product(("linear", "cosine", "exp"), his, los, ("mean", "min", "quantile")):
        if lo > hi:
            continue
        for k in ((4.0, 16.0) if schedule == "exp" else (None,)):
            params = [("schedule", schedule), ("tau_high_logit", hi), ("tau_low_logit", lo), ("aggregate", agg)]
            if agg == "quantile":
                params.append(("quantile", 0.25))
            if k is not None:
                params.append(("k", k))
            grid.append(Setting("sched", tuple(params)))
    for hi, lo in itertools.product((5.0, 7.5, 10.0), (1.5, 2.5, 4.0)):
        grid.append(Setting("prophet", (("tau_high_logit", hi), ("tau_low_logit", lo))))
    return grid


def default_commit_grid(engine: str) -> list[CommitSetting]:
    """Commit settings decoded on the pilot when asked for (`calibrate --decode-budget-s`): Fast-dLLM's
    threshold and CE on the masked engine, the threshold of the block families' rule on the block engine."""
    if engine == "masked":
        return [*(CommitSetting(("fastdllm",), (("fastdllm", "threshold_prob", t),))
                  for t in (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99)),   # denser where 1 - p is small
                CommitSetting(("none", "ce"))]
    if engine == "block":
        return [CommitSetting(("block",), (("block", "threshold_prob", t),)) for t in (0.7, 0.8, 0.9, 0.95)]
    return []


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (0, 1 for n = 0)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def exact(prediction: str, reference: str) -> bool:
    """The default verifier: the answer text equals the reference, surrounding space ignored."""
    return prediction.strip() == reference.strip()


def score(setting: Setting, texts: list[str], nfe: list[int], full_texts: list[str], full_nfe: list[int],
          budget: list[int], references: list[str] | None = None, full_accuracy: float | None = None,
          correct: Callable[[str, str], bool] = exact) -> dict:
    """One setting's figures over the pilot rows: NFE, steps saved, agreement (and accuracy, `correct`
    judging each answer against its reference) with intervals, QPS4 against the full budget (agreement as
    the score, or accuracy when there are references)."""
    n = len(texts)
    agree = sum(a == b for a, b in zip(texts, full_texts))
    lo, hi = wilson(agree, n)
    row = {"setting": setting.label, "policy": setting.policy,
           "commit": setting.commit.label if setting.commit else None, "mean_nfe": sum(nfe) / max(n, 1),
           "steps_saved": 1 - sum(nfe) / max(sum(budget), 1), "speedup": sum(full_nfe) / max(sum(nfe), 1),
           "agreement": agree / max(n, 1), "agreement_low": lo, "agreement_high": hi,
           "agreement_count": (agree, n)}
    quality, base = row["agreement"], 1.0
    if references is not None:
        ok = [correct(t, r) for t, r in zip(texts, references)]
        full_ok = [correct(t, r) for t, r in zip(full_texts, references)]
        row["accuracy"] = sum(ok) / max(n, 1)
        row["accuracy_low"], row["accuracy_high"] = wilson(sum(ok), n)
        # paired: of the rows the full budget answers right, the fraction this setting still answers right
        kept = sum(a and b for a, b in zip(ok, full_ok))
        row["kept"] = kept / max(sum(full_ok), 1)
        row["kept_low"], row["kept_high"] = wilson(kept, sum(full_ok))
        row["kept_count"] = (kept, sum(full_ok))
        quality, base = row["accuracy"], full_accuracy or 0.0
    row["qps4"] = qps(row["speedup"], quality, base) if base else float("nan")
    return row


@functools.lru_cache(maxsize=None)
def binomial_median(n: int, p: float) -> int:
    """The median of Binomial(n, p): the least m with P(X <= m) >= 1/2 (memoised: every setting of a pilot
    asks for the same n)."""
    if p <= 0 or n == 0:
        return 0
    if p >= 1:
        return n
    log_p, log_q, cdf = math.log(p), math.log1p(-p), 0.0
    for m in range(n + 1):
        cdf += math.exp(math.lgamma(n + 1) - math.lgamma(m + 1) - math.lgamma(n - m + 1) + m * log_p + (n - m) * log_q)
        if cdf >= 0.5:
            return m
    return n


def meets(row: dict, target: float, metric: str, bound: str) -> bool:
    """Whether `row`'s `metric` meets `target`: its interval's lower bound (`bound="lower"`), or its pilot
    count to the pilot's resolution (`"point"`, module docstring)."""
    if bound == "lower":
        return row[f"{metric}_low"] >= target - 1e-12
    hits, n = row[f"{metric}_count"]
    return n - hits <= binomial_median(n, 1 - target)


def choose(rows: list[dict], target: float, metric: str = "agreement", bound: str = "lower") -> dict | None:
    """The cheapest row (least mean NFE) whose `metric` meets `target` (`meets`). `metric` "kept" (with
    references): the fraction of the full budget's right answers the setting keeps. None when no row meets it."""
    ok = [r for r in rows if meets(r, target, metric, bound)]
    return min(ok, key=lambda r: (r["mean_nfe"], r["setting"])) if ok else None


def best_provable(n: int) -> float:
    """The highest lower bound a pilot of n rows can show (every row agreeing)."""
    return wilson(n, n)[0]


def pareto(rows: list[dict], metric: str = "agreement") -> list[dict]:
    """Rows no other row beats on both mean NFE (lower) and `metric` (higher)."""
    front, best = [], -1.0
    for r in sorted(rows, key=lambda r: (r["mean_nfe"], -r[metric])):
        if r[metric] > best:
            front.append(r)
            best = r[metric]
    return front


def config_layer(setting: Setting, commit: list[str]) -> dict:
    """The config layer (a nested dict for YAML) selecting `setting` on top of the job's commit policy
    `commit` (or the setting's own commit setting)."""
    base = list(setting.commit.policy) if setting.commit else list(commit)
    decode: dict = {"policy": [*base, setting.policy] if setting.policy != "none" else base}
    if setting.commit:
        decode.update(setting.commit.sections())
    if setting.params:
        decode[setting.policy] = dict(setting.params)
    return {"decode": decode}
