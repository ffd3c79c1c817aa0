"""`report RUN --what-if SETTING` (report/what_if.py): on a traced full-budget run, each setting's NFE and
changed outputs equal those of a real rerun of the job with that setting; the section is on the page; runs
it cannot replay are refused with the reason."""
from __future__ import annotations

import argparse
import json

import pytest

from driver.run import run_pipeline
from report.main import run_report
from report.what_if import parse_what_if
from settings.loader import load_config
from settings.schema import ConfigError
from tests.support import EMBEDDED_MODEL, ROOT
from tests.support.files import read_arrow

SETTINGS = ["decode.sched.schedule=exp,decode.sched.k=4,decode.sched.tau_high_logit=10,decode.sched.tau_low_logit=0.5",
            "decode.prophet.tau_high_logit=7.5,decode.prophet.tau_low_logit=4"]


def _outputs(root) -> dict[str, dict]:
    return {r["id"]: r for p in sorted((root / "outputs").glob("*.arrow")) for r in read_arrow(p).to_pylist()}


@pytest.fixture(scope="module")
def runs(ray_cluster, tmp_path_factory):
    base = tmp_path_factory.mktemp("what-if")
    (base / "in").mkdir()
    for i, name in enumerate(("shard-000.jsonl", "shard-001.jsonl")):
        lines = (ROOT / "embedded" / "taskmix" / "prompts" / name).read_text().splitlines()[:24]
        (base / "in" / f"part-{i}.jsonl").write_text("\n".join(lines) + "\n")
    common = [f"input.url={base / 'in'}", f"model.path={EMBEDDED_MODEL}", "progress=false"]
    run_pipeline(load_config("configs/default.yaml", common + [f"output.url={base / 'full'}", "decode.policy=[none]",
                                                               "decode.trace=tokens"]))
    for i, setting in enumerate(SETTINGS):
        policy = parse_what_if(setting).policy
        run_pipeline(load_config("configs/default.yaml", common + [
            f"output.url={base / f'rerun-{i}'}", f"decode.policy=[none,{policy}]", "decode.trace=off",
            *setting.split(",")]))
    return base


def test_what_if_equals_a_real_rerun(runs):
    args = argparse.Namespace(run_url=str(runs / "full"), out=str(runs / "report"), baseline=None,
                              price_per_gpu_hour=2.0, config=None, overrides=[], what_if=SETTINGS)
    result = run_report(args)
    full = _outputs(runs / "full")
    assert len(result["what_if"]) == len(SETTINGS)
    for i, row in enumerate(result["what_if"]):
        rerun = _outputs(runs / f"rerun-{i}")
        assert row["rows"] == len(full) == len(rerun) == 48
        assert row["nfe"] == sum(r["nfe"] for r in rerun.values()), SETTINGS[i]
        assert row["changed"] == sum(rerun[k]["output"] != full[k]["output"] for k in full), SETTINGS[i]
        assert row["nfe"] < row["run_nfe"]
    page = (runs / "report" / "report.html").read_text()
    assert "<h2>What if</h2>" in page and "tau_high_logit=10" in page


def test_runs_it_cannot_replay_are_refused(runs):
    args = argparse.Namespace(run_url=str(runs / "rerun-0"), out=str(runs / "report-x"), baseline=None,
                              price_per_gpu_hour=2.0, config=None, overrides=[], what_if=[SETTINGS[0]])
    with pytest.raises(ConfigError, match="decode.trace=tokens"):
        run_report(args)
    with pytest.raises(ConfigError, match="one exit policy"):
        parse_what_if("decode.sched.k=4,decode.prophet.tau_high_logit=3")
    with pytest.raises(ConfigError, match="decode.sched.<key>"):
        parse_what_if("decode.steps=8")
    assert json.dumps(parse_what_if("decode.sched.k=4").params) == '[["k", 4]]'
