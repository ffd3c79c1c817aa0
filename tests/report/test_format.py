"""Numbers on the report page are for people: percentages, 4 significant digits, mappings as text."""
from __future__ import annotations

from report.plots import _cell, fmt_mapping, fmt_number


def test_fmt_number():
    assert fmt_number(3.98366) == "3.984" and fmt_number(0.0012345) == "0.001234"
    assert fmt_number(12.5) == "12.50" and fmt_number(123456.7) == "123,457" and fmt_number(0.0) == "0"
    assert fmt_number(float("nan")) == "–"


def test_cells():
    assert _cell(0.742, "steps_saved_frac") == "74.2%" and _cell(1, "agreement") == "100.0%"
    assert _cell('{"sched": 120, "steps": 8}', "exit_reasons") == "sched 120 · steps 8"
    assert _cell(2048) == "2,048" and _cell(3.14159) == "3.142" and _cell("<b>") == "&lt;b&gt;"
    assert fmt_mapping({"schedule": "exp", "k": 16.0}) == "schedule exp · k 16.00"
