"""Fingerprints (driver/fingerprint.py), the resume plan (driver/resume.py), failure lines
(driver/outcome.py) and the end-of-run examples (driver/summary.py), without Ray."""
from __future__ import annotations

import pyarrow as pa

from settings.schema import StorageConfig
from settings.loader import load_config
from driver.fingerprint import changes, config_fingerprint, shard_fingerprint
from driver.outcome import EXIT_OK, EXIT_ROW_ERRORS, root_cause, row_error_exit
from driver.resume import conflict_message, plan_resume, shared_settings
from stages.storage import filesystem
from driver.summary import print_examples
from stages.write.sink import write_ipc


def test_config_fingerprint_holds_decode_settings_and_only_active_policy_parameters() -> None:
    fp = config_fingerprint(load_config(None, ["decode.policy=[fastdllm,sched]"]))
    assert fp["decode.policy"] == ["fastdllm", "sched"] and "decode.fastdllm.threshold_prob" in fp
    assert "decode.sched.tau_high_logit" in fp and not any(k.startswith("decode.prophet.") for k in fp)
    assert fp["model.config_sha256"] and fp["model.dtype"] == "float32"
    assert "decode.max_batch_size" not in fp and not any(k.startswith(("actors.", "ray.")) for k in fp)
    tspd = config_fingerprint(load_config(None, ["decode.policy=[tspd]"]))
    assert len(tspd["decode.tspd.controller_sha256"]) == 64
    batching = config_fingerprint(load_config(None, ["decode.policy=[fastdllm,sched]", "decode.max_batch_size=4"]))
    assert batching == fp                                       # speed settings do not change the outputs
    bound = config_fingerprint(load_config(None, ["decode.policy=[fastdllm,sched]", "decode.max_logits_mb=8"]))
    assert bound == fp and "decode.cache" not in fp             # the logits bound does not either
    cached = config_fingerprint(load_config(None, ["decode.policy=[fastdllm,sched]", "decode.cache=dual"]))
    assert changes({"config": fp, "input": {}}, {"config": cached, "input": {}}) and cached["decode.cache"] == "dual"


def test_changes_name_keys_and_input(tmp_path) -> None:
    fs, _ = filesystem(str(tmp_path), StorageConfig())
    shard = tmp_path / "a.jsonl"
    shard.write_text('{"id": "a", "prompt": "p"}\n')
    cfg = load_config(None)
    old = shard_fingerprint(cfg, fs, str(shard))
    assert changes(old, shard_fingerprint(cfg, fs, str(shard))) == []
    assert changes(old, shard_fingerprint(load_config(None, ["decode.steps=8", "decode.seed=1"]), fs, str(shard))) == \
        ["decode.seed", "decode.steps"]
    shard.write_text('{"id": "a", "prompt": "q"}\n')           # same size, new content
    assert changes(old, shard_fingerprint(cfg, fs, str(shard))) == ["input"]
    assert changes(None, old) == ["fingerprint (none recorded: made by an older version)"]


def test_plan_sorts_shards_and_the_message_names_keys_and_choices() -> None:
    fp = {"config": {"decode.steps": 16}, "input": {"sha256": "x"}}
    new = {"config": {"decode.steps": 8}, "input": {"sha256": "x"}}
    names = {"/in/a.jsonl": "a", "/in/b.jsonl": "b", "/in/c.jsonl": "c"}
    done = {"a": {"fingerprint": fp}, "b": {"fingerprint": {**fp, "config": {"decode.steps": 8}}}, "z": {}}
    fps = {"a": new, "b": new, "c": new}
    plan = plan_resume(list(names), names, fps, done)
    assert plan.skipped == ["/in/b.jsonl"] and plan.todo == ["/in/a.jsonl", "/in/c.jsonl"]
    assert plan.changed == {"a": ["decode.steps"]} and plan.stale == ["z"] and plan.conflicts
    msg = conflict_message(plan, "out/x", done, fps)
    assert "decode.steps 16 -> 8 (1 shard(s): a)" in msg and "not in this input: 1 shard(s): z" in msg
    assert all(choice in msg for choice in ("--redo-changed", "--overwrite", "output.url")) and "\n" not in msg
    assert shared_settings({"a": {"fingerprint": fp}, "b": {"fingerprint": new}}) == (None, ["decode.steps"])
    assert shared_settings({"a": {"fingerprint": fp}}) == ({"decode.steps": 16}, [])


def test_exit_code_from_error_rows() -> None:
    assert row_error_exit({"rows": 10, "errors": 0}, 0.0) == (EXIT_OK, "")
    assert row_error_exit({"rows": 10, "errors": 1}, 0.0)[0] == EXIT_ROW_ERRORS
    assert row_error_exit({"rows": 10, "errors": 1}, 0.1) == (EXIT_OK, "")
    assert row_error_exit({"rows": 10, "errors": 2}, 0.1)[0] == EXIT_ROW_ERRORS


def test_root_cause_strips_ray_wrapping_and_ansi() -> None:
    class ActorDiedError(Exception):
        pass
    text = ("The actor died because of an error raised in its creation task, \x1b[36mray::MapWorker\x1b[39m\n"
            "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
            "ValueError: /m: config has no mask_token_id\n")
    try:
        try:
            raise ActorDiedError(text)
        except ActorDiedError as inner:
            raise RuntimeError("\x1b[31mexecution failed\x1b[0m") from inner
    except RuntimeError as e:
        assert root_cause(e) == "ValueError: /m: config has no mask_token_id"
    assert root_cause(OSError("\x1b[1mboom\x1b[0m")) == "OSError: boom"


def test_examples_come_from_the_first_shard_with_outputs(tmp_path, capsys) -> None:
    fs, root = filesystem(str(tmp_path), StorageConfig())
    (tmp_path / "outputs").mkdir()
    row = {"prompt": "copy:ab=", "output": "ab", "steps_taken": 2, "step_budget": 16, "exit_reason": "sched"}
    write_ipc(fs, f"{root}/outputs/a.arrow", pa.Table.from_pylist([row]).slice(0, 0))   # all rows were errors
    write_ipc(fs, f"{root}/outputs/b.arrow", pa.Table.from_pylist([row]))
    print_examples(fs, root, ["missing", "a", "b"])
    out = capsys.readouterr().out
    assert out.startswith("examples from b:") and "'copy:ab='" in out


def test_failed_shards_exit_4_and_the_summary_names_them(capsys) -> None:
    from driver.outcome import EXIT_FAILED_SHARDS, run_exit
    from driver.summary import print_summary
    totals = {"rows": 6, "outputs": 5, "errors": 1, "prompt_tokens": 1, "generated_tokens": 1, "nfe": 2,
              "step_budget": 4, "steps_saved": 2, "step_speedup": 2.0, "exit_reasons": {"sched": 5}}
    manifest = {"totals": totals, "wall_s": 1.0, "input_shards": ["a", "b", "c"], "resumed_shards": [],
                "failed_shards": {"b": "shard failed: PermissionError: denied"}}
    code, messages = run_exit(manifest, 0.0)
    assert code == EXIT_FAILED_SHARDS and len(messages) == 2          # error rows too: both said, 4 wins
    assert messages[1].startswith("1 shard(s) could not be read and were not committed (b: shard failed: "
                                  "PermissionError: denied; all in the manifest's failed_shards)")
    assert run_exit({**manifest, "failed_shards": {}}, 0.5) == (EXIT_OK, [])
    print_summary(manifest)
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("3 (0 already done, 1 FAILED (unreadable, not committed))")
    assert out[1].split() == ["failed", "shard", "b:", "shard", "failed:", "PermissionError:", "denied"]
