"""The driver (pipeline.py run) plans and pre-flights a job without torch or transformers' modelling stack:
those load in the decode actors (stages/processor.py `LazyDecodeStage`) and in the checkpoint check's child
process (driver/preflight.py), not in the process that lives for the whole job (~280 MB less on a soak's
driver)."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torch._dynamo", "sympy", "accelerate", "transformers.models.llama.configuration_llama")

PLAN = """
import json, sys
import pipeline
from driver.preflight import preflight
from driver.run import build_dataset
from settings.loader import load_config
from settings.schema import ConfigError
cfg = load_config(None, sys.argv[1:])
try:
    preflight(cfg)
    outcome = "ok"
except ConfigError as e:
    outcome = str(e)
print(json.dumps({"outcome": outcome, "loaded": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def _plan(*overrides: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PLAN, *overrides], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_driver_checks_a_job_without_loading_torch(tmp_path):
    got = _plan(f"output.url={tmp_path / 'out'}")
    assert got == {"outcome": "ok", "loaded": []}


def test_a_checkpoint_refused_in_the_child_is_the_same_one_line(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    cfg = json.loads((ROOT / "embedded" / "taskmix" / "model" / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "mask_token_id": None}))
    got = _plan(f"model.path={model}", f"output.url={tmp_path / 'out'}")
    assert got["loaded"] == []
    assert got["outcome"].startswith("config error at model.path:") and "config has no mask_token_id" in got["outcome"]


def test_a_child_that_cannot_run_is_an_error_not_a_pass(monkeypatch):
    from driver import preflight
    monkeypatch.setattr(preflight, "_CHILD", "raise SystemExit(3)")
    with pytest.raises(RuntimeError, match="checking the checkpoint .* failed: exit 3"):
        preflight.loadable_in_child(str(ROOT / "embedded" / "taskmix" / "model"), "auto", False)


def test_a_process_with_torch_checks_in_place(tmp_path, monkeypatch):
    """A library caller or benchmark has torch already: no child (it would only cost seconds), same refusal."""
    import torch  # noqa: F401
    from driver import preflight
    monkeypatch.setattr(preflight, "loadable_in_child", lambda *a: pytest.fail("started a child"))
    preflight.checkpoint_loadable(str(ROOT / "embedded" / "taskmix" / "model"), "auto", False)
    model = tmp_path / "model"
    model.mkdir()
    cfg = json.loads((ROOT / "embedded" / "taskmix" / "model" / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "mask_token_id": None}))
    with pytest.raises(ValueError, match="config has no mask_token_id"):
        preflight.checkpoint_loadable(str(model), "auto", False)
