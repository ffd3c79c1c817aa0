"""`pipeline.py calibrate` (driver/calibrate.py, report/calibration.py): the grid, the intervals and the
choice; and on the task-mix model, what it reports for the chosen setting is what a real decode of the pilot
with that setting gives (NFE and agreement), and its config layer runs."""
from __future__ import annotations

import json
import math

import pytest
import yaml

import dllm
import pipeline
from driver.calibrate import calibrate
from report.calibration import (Setting, best_provable, binomial_median, choose, config_layer, default_grid, meets,
                                pareto, wilson)
from settings.loader import load_config


def test_grid_intervals_and_choice():
    grid = default_grid()
    assert len(grid) >= 200 and len({s.label for s in grid}) == len(grid)
    assert {s.policy for s in grid} == {"sched", "prophet"}
    lo, hi = wilson(200, 200)
    assert lo == pytest.approx(200 / (200 + 1.959964 ** 2)) and hi == pytest.approx(1.0) and best_provable(200) == lo
    assert wilson(50, 100)[0] < 0.5 < wilson(50, 100)[1]
    rows = [{"setting": "full budget", "policy": "none", "mean_nfe": 16, "agreement": 1.0, "agreement_low": 0.98,
             "agreement_count": (200, 200)},
            {"setting": "a", "policy": "sched", "mean_nfe": 2, "agreement": 0.97, "agreement_low": 0.93,
             "agreement_count": (194, 200)},
            {"setting": "b", "policy": "sched", "mean_nfe": 4, "agreement": 0.995, "agreement_low": 0.975,
             "agreement_count": (199, 200)},
            {"setting": "c", "policy": "sched", "mean_nfe": 5, "agreement": 0.99, "agreement_low": 0.97,
             "agreement_count": (198, 200)}]
    assert choose(rows, 0.97)["setting"] == "b"
    assert choose(rows, 0.97, bound="point")["setting"] == "a"
    assert choose(rows, 0.99) is None
    assert [r["setting"] for r in pareto(rows)] == ["a", "b", "full budget"]
    s = Setting("sched", (("schedule", "exp"), ("tau_high_logit", 5.0)))
    assert config_layer(s, ["none"]) == {"decode": {"policy": ["none", "sched"],
                                                    "sched": {"schedule": "exp", "tau_high_logit": 5.0}}}
    assert config_layer(Setting("none"), ["fastdllm"]) == {"decode": {"policy": ["fastdllm"]}}


def test_the_point_rule_judges_counts_to_the_pilots_resolution():
    """0.99 of 186 right answers: 1.86 misses expected of a setting exactly at the target, so 2 misses meet
    it (184 / 186 = 0.989 as a fraction would not) and 3 do not; where n (1 - target) is whole, the fraction."""
    row = lambda hits, n: {"setting": "s", "mean_nfe": 1.0, "kept_count": (hits, n), "kept": hits / n}
    assert meets(row(184, 186), 0.99, "kept", "point") and not meets(row(183, 186), 0.99, "kept", "point")
    assert meets(row(495, 500), 0.99, "kept", "point") and not meets(row(494, 500), 0.99, "kept", "point")
    assert meets(row(10, 10), 0.999, "kept", "point") and not meets(row(9, 10), 0.999, "kept", "point")
    # the median: a setting exactly at the target meets it on at least half of its pilots, and no more misses pass
    for n, p in ((186, 0.01), (200, 0.03), (37, 0.2), (1000, 0.005), (5, 0.5)):
        m = binomial_median(n, p)
        pmf = [math.comb(n, k) * p ** k * (1 - p) ** (n - k) for k in range(n + 1)]
        assert sum(pmf[:m + 1]) >= 0.5 > sum(pmf[:m])


def test_the_chosen_setting_decodes_as_calibrate_said(tmp_path):
    cfg = load_config(None, ["decode.policy=[sched]"])   # the job's exit policy is replaced by the grid's
    out = tmp_path / "calibrated.yaml"
    result = calibrate(cfg, pilot=60, seed=3, target=0.95, out=str(out), bound="point")
    chosen = result["chosen"]
    assert chosen is not None and chosen["policy"] != "none" and chosen["mean_nfe"] < 16
    assert result["replay_s"] < 10 * result["decode_s"] + 5       # replay is cheap next to decoding
    assert json.loads(out.with_suffix(".json").read_text())["chosen"]["setting"] == chosen["setting"]
    assert out.with_suffix(".png").stat().st_size > 1024
    layer = yaml.safe_load(out.read_text())
    assert layer["decode"]["policy"] == ["none", chosen["policy"]]

    # the pilot decoded for real with the chosen layer: the same NFE and agreement calibrate reported
    pilot = result["pilot"]
    full = {r["id"]: r for r in dllm.decode(pilot, cfg, overrides=["decode.policy=[none]"])}
    real = dllm.decode(pilot, load_config(None, [], mappings=[layer]))
    assert sum(r["nfe"] for r in real) / len(real) == pytest.approx(chosen["mean_nfe"])
    agree = sum(r["output"] == full[r["id"]]["output"] for r in real) / len(real)
    assert agree == pytest.approx(chosen["agreement"])


def test_cli_says_when_the_pilot_is_too_small_for_the_target(tmp_path, capsys):
    code = pipeline.main(["calibrate", "--pilot", "40", "--out", str(tmp_path / "c.yaml")])
    err = capsys.readouterr().err
    assert code == 1 and "a 40-row pilot shows at most 0.912 at 95 % confidence" in err
    assert (tmp_path / "c.json").exists() and not (tmp_path / "c.yaml").exists()


def test_commit_settings_are_decoded_and_judged_by_the_verifier(tmp_path):
    """On the reasoning model (many right answers, judged by the task's verifier): commit settings that
    cannot be replayed are decoded on the pilot within the budget, exits are replayed on them where exact,
    each figure is what a real decode of the pilot with that layer gives, and the budget skips the rest."""
    from embedded.evaluate import WORKLOADS, load_heldout
    from embedded.reasoning.tasks import correct
    from report.calibration import CommitSetting

    rows = load_heldout(48, "reasoning")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(WORKLOADS["reasoning"].config, [f"input.url={tmp_path / 'in'}", "decode.policy=[none]"])
    grid = [Setting("sched", (("schedule", "exp"), ("tau_high_logit", 7.5), ("tau_low_logit", 2.5),
                              ("aggregate", "min"), ("k", 16.0)))]
    commits = [CommitSetting(("fastdllm",), (("fastdllm", "threshold_prob", 0.95),)), CommitSetting(("none", "ce"))]
    out = tmp_path / "c.yaml"
    result = calibrate(cfg, pilot=48, target=0.9, out=str(out), reference_field="answer", bound="point",
                       verifier="embedded.reasoning.tasks:correct", grid=grid, decode_budget_s=600,
                       commit_grid=commits)
    labels = [r["setting"] for r in result["rows"]]
    assert labels == ["full budget", grid[0].label, "fastdllm fastdllm.threshold_prob=0.95",
                      "fastdllm fastdllm.threshold_prob=0.95 + " + grid[0].label, "none+ce"]   # no replay after CE
    assert [c["commit"] for c in result["commit_decodes"]] == ["fastdllm fastdllm.threshold_prob=0.95", "none+ce"]
    full = {r["id"]: r for r in dllm.decode(result["pilot"], cfg)}
    refs = {r["id"]: r["answer"] for r in rows}
    full_right = {i for i, r in full.items() if correct(r["output"], refs[i])}
    assert result["full_budget_accuracy"] == pytest.approx(len(full_right) / len(full))
    assert len(full_right) > sum(r["output"] == refs[i] for i, r in full.items())   # the verifier, not exact match
    for row in result["rows"][1:]:   # each setting's config layer, decoded for real on the pilot
        real = dllm.decode(result["pilot"], load_config(WORKLOADS["reasoning"].config, [], mappings=[row["layer"]]))
        assert sum(r["nfe"] for r in real) / len(real) == pytest.approx(row["mean_nfe"]), row["setting"]
        kept = sum(r["id"] in full_right and correct(r["output"], refs[r["id"]]) for r in real)
        assert kept / len(full_right) == pytest.approx(row["kept"]), row["setting"]

    skipped = calibrate(cfg, pilot=48, target=0.9, out=str(tmp_path / "s.yaml"), reference_field="answer",
                        bound="point", verifier="embedded.reasoning.tasks:correct", grid=grid,
                        decode_budget_s=1e-6, commit_grid=commits)
    assert skipped["commit_decodes"] == [] and skipped["commit_skipped"] == [c.label for c in commits]
