"""QPS_4, one definition (report/qps.py): the SchED paper's speedup x (score / baseline score)^4; the report
uses it with agreement as the score; benchmarks fail on a broken invariant."""
from __future__ import annotations

import math

import pytest

from report.qps import qps
from report.scan import Agreement


def test_qps_is_the_sched_papers_definition() -> None:
    assert qps(4.48, 57.59, 58.20) == pytest.approx(4.30, abs=0.005)   # the paper's worked example
    assert qps(2.0, 0.5, 0.5) == 2.0
    assert qps(3.0, 1.0, 0.5) == 48.0                                 # a better score than the baseline's
    assert math.isnan(qps(2.0, 0.5, 0.0))


def test_report_qps_scores_by_agreement() -> None:
    cols = Agreement(matched=10, agree=9, nfe_run=40, nfe_baseline=160).columns()
    assert cols["agreement"] == 0.9 and cols["step_speedup_vs_baseline"] == 4.0
    assert cols["qps4"] == pytest.approx(qps(4.0, 0.9, 1.0)) == pytest.approx(4.0 * 0.9 ** 4)


def test_benchmark_invariant_check_exits_non_zero() -> None:
    from bench.common import check_invariant
    check_invariant(True, "fine")
    with pytest.raises(SystemExit) as err:
        check_invariant(False, "outputs differ")
    assert err.value.code != 0 and "outputs differ" in str(err.value.code)
