"""A shard that vanishes between listing and reading fails alone: the rest of the job commits, the exit
code (4) and the summary say so, the manifest names it with its reason, and a rerun decodes it."""
from __future__ import annotations

import json
import re

import pytest

import pipeline
import driver.run as run_module


def _shard(path, tag: str) -> None:
    path.write_text("".join(json.dumps({"id": f"{tag}{i}", "prompt": f"copy:{'abc'[: i + 1]}="}) + "\n"
                            for i in range(3)))


@pytest.mark.slow   # two pipeline runs, ~25 s here; tests/stages cover each piece in the default run
def test_a_vanished_shard_is_a_failed_shard_and_the_rerun_decodes_it(ray_cluster, tmp_path, monkeypatch, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    for s in range(3):
        _shard(inp / f"s{s}.jsonl", f"s{s}-")
    build = run_module.build_dataset

    def vanish_then_build(*args, **kwargs):   # listed and fingerprinted; gone before any read task opens it
        (inp / "s1.jsonl").rename(tmp_path / "s1.jsonl")
        return build(*args, **kwargs)

    monkeypatch.setattr(run_module, "build_dataset", vanish_then_build)
    args = [f"input.url={inp}/*.jsonl", f"output.url={out}", "decode.trace=off"]
    assert pipeline.main(args) == 4
    captured = capsys.readouterr()
    assert "1 FAILED (unreadable, not committed)" in captured.out
    assert re.search(r"failed shard +s1: shard failed: FileNotFoundError", captured.out)
    err = captured.err.strip().splitlines()[-1]
    assert err.startswith("error: 1 shard(s) could not be read and were not committed (s1: shard failed: "
                          "FileNotFoundError") and "rerun the same command" in err
    manifest = json.loads((out / "_manifest.json").read_text())
    assert list(manifest["failed_shards"]) == ["s1"] and "FileNotFoundError" in manifest["failed_shards"]["s1"]
    assert sorted(manifest["shards"]) == ["s0", "s2"] and manifest["totals"]["outputs"] == 6
    assert sorted(p.stem for p in (out / "_done").iterdir()) == ["s0", "s2"]
    assert not (out / "outputs" / "s1.arrow").exists()

    monkeypatch.setattr(run_module, "build_dataset", build)
    (tmp_path / "s1.jsonl").rename(inp / "s1.jsonl")           # back: the same command finishes the job
    assert pipeline.main(args) == 0
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["failed_shards"] == {} and sorted(manifest["resumed_shards"]) == [str(inp / "s0.jsonl"), str(inp / "s2.jsonl")]
    assert manifest["totals"]["outputs"] == 9 and not (out / "_failed").exists()
