"""The run fingerprint is read from the schema: every model/input/decode setting is in it unless the schema marks
it speed only, so a new setting cannot be forgotten (driver/fingerprint.py, settings/schema.py)."""
from __future__ import annotations

import pytest

import copy
import json
import subprocess
import sys
from pathlib import Path

from decoder.policies.registry import POLICIES
from driver.fingerprint import changes, config_fingerprint, schema_fields
from settings.loader import load_config

ROOT = Path(__file__).resolve().parents[2]


def other_value(value):
    """A different value of the same type (the fingerprint reads values; it does not validate them)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "-other"
    if isinstance(value, list):
        return [*value, "other"]
    if value is None:
        return 1
    raise TypeError(f"no other value for {value!r}")


def with_value(cfg, key: str, value):
    """A copy of `cfg` with the dotted `key` set to `value` (no value checks run)."""
    out = copy.deepcopy(cfg)
    *parents, leaf = key.split(".")
    node = out
    for name in parents:
        node = getattr(node, name)
    setattr(node, leaf, value)
    return out


def test_every_setting_changes_the_fingerprint_unless_the_schema_marks_it_speed_only() -> None:
    base = load_config(None)
    walked = list(schema_fields(base))
    assert len(walked) > 60 and any(k == "decode.exit_fill" for k, *_ in walked)
    for key, value, f, policy in walked:
        cfg = base
        if policy is not None:   # a policy's parameters count while that policy runs
            running = [policy] if POLICIES[policy].kind != "exit" else ["none", policy]
            cfg = with_value(base, "decode.policy", running)
        before = config_fingerprint(cfg)
        after = config_fingerprint(with_value(cfg, key, other_value(value)))
        if f.metadata.get("fingerprint") in ("speed", "identity"):
            assert after == before, f"{key} is speed only, yet it changed the fingerprint"
        else:
            assert after != before and after.get(key) != before.get(key), f"{key} is not in the fingerprint"
            assert changes({"config": before, "input": {}}, {"config": after, "input": {}}), key


def test_an_unused_policys_parameters_do_not_count() -> None:
    base = load_config(None, ["decode.policy=[none]"])
    moved = with_value(base, "decode.prophet.tau_high_logit", 99.0)
    assert config_fingerprint(moved) == config_fingerprint(base)


def test_a_fingerprint_made_before_a_later_setting_existed_still_matches() -> None:
    """`when_set` settings are absent from older markers; absent reads as the default they decode as."""
    fp = config_fingerprint(load_config(None))
    assert "decode.exit_fill" not in fp
    old = {k: v for k, v in fp.items() if not k.startswith("decode.sched.region")}
    assert changes({"config": old, "input": {}}, {"config": fp, "input": {}}) == []
    argmax = config_fingerprint(load_config(None, ["decode.exit_fill=argmax"]))
    assert changes({"config": fp, "input": {}}, {"config": argmax, "input": {}}) == ["decode.exit_fill"]


@pytest.mark.slow
def test_a_rerun_with_exit_fill_changed_stops_naming_the_key(tmp_path) -> None:
    prompts = tmp_path / "in.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"copy:ab{i}="}) + "\n" for i in range(3)))
    common = [sys.executable, str(ROOT / "pipeline.py"), f"input.url={prompts}", f"output.url={tmp_path / 'out'}",
              "decode.temperature=0.5", "progress=false"]
    first = subprocess.run(common, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert first.returncode == 0, first.stderr
    assert "core_worker" not in first.stderr      # Ray's harmless C++ line is filtered (driver/stderr_filter.py)
    again = subprocess.run([*common, "decode.exit_fill=argmax"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 2
    assert "decode.exit_fill sample -> argmax" in again.stderr and len(again.stderr.strip().splitlines()) == 1
