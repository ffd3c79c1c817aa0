"""Reruns into an existing output root, exit codes and Ray-side failures, as users run pipeline.py."""
from __future__ import annotations

import pytest

import hashlib
import json
import re

from tests.support import EMBEDDED_MODEL, ROOT
from tests.support.cli import run_cli
from tests.support.files import read_arrow as _table


def _shard(path, rows, blank_tail: int = 0) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n" * blank_tail)


def _good(tag: str, n: int = 3) -> list[dict]:
    return [{"id": f"{tag}{i}", "prompt": f"copy:{'abcde'[: i + 2]}="} for i in range(n)]


def _run(ray_cluster, inp, out, *extra, cwd=ROOT):
    address = ray_cluster.get_runtime_context().gcs_address
    return run_cli(f"input.url={inp}", f"output.url={out}", f"ray.address={address}", "progress=false", *extra,
                   cwd=cwd, timeout=300)


def _stamps(out, sub="outputs") -> dict[str, int]:
    return {p.stem: p.stat().st_mtime_ns for p in sorted((out / sub).glob("*.arrow"))}


@pytest.mark.slow   # the default run's time budget; resume conflicts without Ray: tests/driver/test_resume_plan.py
def test_rerun_refuses_changes_and_redo_changed_redoes_exactly_them(ray_cluster, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    for s in range(3):
        _shard(inp / f"s{s}.jsonl", _good(f"s{s}-"))
    first = _run(ray_cluster, f"{inp}/*.jsonl", out)
    assert first.returncode == 0, first.stderr[-2000:]
    markers = {n: (out / "_done" / f"{n}.json").read_text() for n in ("s0", "s1", "s2")}
    stamps = _stamps(out)

    same = _run(ray_cluster, f"{inp}/*.jsonl", out)                     # same command: everything kept
    assert same.returncode == 0 and _stamps(out) == stamps
    assert len(json.loads((out / "_manifest.json").read_text())["resumed_shards"]) == 3

    changed = _run(ray_cluster, f"{inp}/*.jsonl", out, "decode.steps=8")
    assert changed.returncode == 2
    msg = changed.stderr.strip().splitlines()
    assert len(msg) == 1 and "decode.steps 16 -> 8 (3 shard(s): s0, s1, s2)" in msg[0]
    assert "--redo-changed" in msg[0] and "--overwrite" in msg[0] and "output.url" in msg[0]
    assert _stamps(out) == stamps and {n: (out / "_done" / f"{n}.json").read_text() for n in markers} == markers

    _shard(inp / "s1.jsonl", _good("s1-", 4))                           # an input shard fixed in place
    refused = _run(ray_cluster, f"{inp}/*.jsonl", out)
    assert refused.returncode == 2 and "input (1 shard(s): s1)" in refused.stderr
    redo = _run(ray_cluster, f"{inp}/*.jsonl", out, "--redo-changed")
    assert redo.returncode == 0, redo.stderr[-2000:]
    now = _stamps(out)
    assert [n for n in stamps if now[n] != stamps[n]] == ["s1"]         # exactly the changed shard
    assert _table(out / "outputs" / "s1.arrow").num_rows == 4

    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["redone_shards"] == ["s1"] and len(manifest["resumed_shards"]) == 2
    for n in ("s0", "s1", "s2"):                                        # each shard's own fingerprint
        fp = manifest["shards"][n]["fingerprint"]
        assert fp["input"]["sha256"] == hashlib.sha256((inp / f"{n}.jsonl").read_bytes()).hexdigest()
        assert fp["config"]["decode.steps"] == 16 and fp["config"]["decode.policy"] == ["sched"]
    for n in ("s0", "s2"):                                              # kept shards: their markers untouched
        assert json.loads(markers[n])["fingerprint"] == manifest["shards"][n]["fingerprint"]
    assert manifest["settings"] == manifest["shards"]["s0"]["fingerprint"]["config"]

    other = _run(ray_cluster, f"{inp}/s0.jsonl", out)                   # another input into this output
    assert other.returncode == 2 and "not in this input: 2 shard(s): s1, s2" in other.stderr
    dropped = _run(ray_cluster, f"{inp}/s0.jsonl", out, "--redo-changed")
    assert dropped.returncode == 0, dropped.stderr[-2000:]
    manifest = json.loads((out / "_manifest.json").read_text())
    assert sorted(manifest["shards"]) == ["s0"] and manifest["dropped_shards"] == ["s1", "s2"]
    assert sorted(p.name for p in (out / "outputs").iterdir()) == ["s0.arrow"]


@pytest.mark.slow   # the default run's time budget: the read stage's error rows and line numbers are unit-tested
def test_exit_codes_error_rows_blank_lines_and_line_numbers(ray_cluster, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    bad = [{"prompt": "copy:ab="}, {"id": "e", "prompt": " "}, {}]      # missing id; empty; missing id and prompt
    _shard(inp / "all-bad.jsonl", bad, blank_tail=2)
    res = _run(ray_cluster, f"{inp}/all-bad.jsonl", out / "a")
    assert res.returncode == 3, res.stderr[-2000:]
    assert "3 of 3 rows went to errors/" in res.stderr and "run.max_error_fraction=0" in res.stderr
    err = _table(out / "a" / "errors" / "all-bad.arrow").to_pylist()
    assert [(e["line"], e["error"]) for e in err] == [
        (1, "missing id"), (2, "empty prompt"), (3, "missing id; missing prompt (need 'prompt' or 'messages')")]
    manifest = json.loads((out / "a" / "_manifest.json").read_text())
    assert manifest["totals"]["blank_lines"] == 2 and manifest["totals"]["rows"] == 3

    (inp / "some.jsonl").write_text("\n".join([json.dumps(r) for r in _good("g", 3)[:2]] + ["", "{broken",
                                                                                           json.dumps(_good("g", 3)[2])]) + "\n")
    tolerant = _run(ray_cluster, f"{inp}/some.jsonl", out / "b", "run.max_error_fraction=0.5")
    assert tolerant.returncode == 0, tolerant.stderr[-2000:]
    outputs = _table(out / "b" / "outputs" / "some.arrow")
    assert dict(zip(outputs["id"].to_pylist(), outputs["line"].to_pylist())) == {"g0": 1, "g1": 2, "g2": 5}
    err = _table(out / "b" / "errors" / "some.arrow").to_pylist()
    assert [(e["line"], e["error"][:24]) for e in err] == [(4, "line 4: malformed JSON: ")]
    strict = _run(ray_cluster, f"{inp}/some.jsonl", out / "b")          # same outputs, kept; default fraction 0
    assert strict.returncode == 3 and "1 of 4 rows went to errors/ (25.0% > run.max_error_fraction=0)" in strict.stderr


@pytest.mark.slow
def test_model_that_fails_inside_ray_is_one_line_with_a_log(ray_cluster, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for f in EMBEDDED_MODEL.iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    from safetensors.numpy import load_file, save_file
    weights = load_file(str(model / "model.safetensors"))                # whole files, the pre-flight passes;
    weights["model.norm_renamed.weight"] = weights.pop("model.norm.weight")   # the actor's load then fails
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    _shard(tmp_path / "in.jsonl", _good("m", 2))
    res = _run(ray_cluster, tmp_path / "in.jsonl", tmp_path / "out", f"model.path={model}")
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert "\x1b" not in last
    m = re.fullmatch(r"error: ValueError: .*checkpoint lacks weights \['model\.norm\.weight'\] "
                     r"\(traceback: (\S+)\)", last)
    assert m, last
    assert "Traceback" in open(m.group(1)).read()
