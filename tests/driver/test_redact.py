"""Credentials never reach what the pipeline writes (driver/redact.py): the manifest, markers' fingerprints,
the failure log and the one-line error."""
from __future__ import annotations

import json

import pipeline
from settings.schema import StorageConfig
from driver.outcome import write_log
from driver.redact import scrub, scrub_text, secret_values
from driver.resume import write_manifest
from stages.storage import filesystem

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEXAMPLEsessionTOKEN0123456789"


def test_secret_environment_values_and_url_userinfo_are_masked(monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false-but-long")   # not a secret: its name only contains TOKEN
    assert set(secret_values()) >= {SECRET, TOKEN} and "false-but-long" not in secret_values()
    text = f"403 for key {SECRET} token={TOKEN} at https://admin:hunter2hunter2@minio:9000/b"
    assert scrub_text(text) == "403 for key *** token=*** at https://***@minio:9000/b"
    cfg = {"storage": {"endpoint_url": "http://u:p@h:1", "key": "AKIAEXAMPLE", "secret": "s"},
           "decode": {"max_batch_tokens": 16384}, "totals": {"prompt_tokens": 3}}
    assert scrub(cfg) == {"storage": {"endpoint_url": "http://***@h:1", "key": "***", "secret": "***"},
                          "decode": {"max_batch_tokens": 16384}, "totals": {"prompt_tokens": 3}}


def test_the_manifest_and_the_failure_log_hold_no_credential(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    fs, root = filesystem(str(tmp_path / "out"), StorageConfig())
    fs.makedirs(root, exist_ok=True)
    config = {"storage": {"endpoint_url": "https://admin:hunter2hunter2@minio:9000"}, "note": f"x{SECRET}y"}
    shard = {"rows": 0, "outputs": 0, "errors": 0, "exit_reasons": {}, "fingerprint": {"config": {}, "input": {}}}
    write_manifest(fs, root, config, ["s"], [], {"s": shard}, 0.0, {})
    text = (tmp_path / "out" / "_manifest.json").read_text()
    assert SECRET not in text and "hunter2" not in text and json.loads(text)["config"]["note"] == "x***y"
    try:
        raise RuntimeError(f"upload to https://admin:hunter2hunter2@minio:9000 failed with key {SECRET}")
    except RuntimeError as e:
        log = open(write_log(e)).read()
    assert "RuntimeError" in log and SECRET not in log and "hunter2" not in log


def test_a_config_error_line_holds_no_credential(monkeypatch, capsys) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    assert pipeline.main([f"model.path=/nonexistent/{SECRET}", "progress=false"]) == 2
    err = capsys.readouterr().err
    assert "model.path" in err and "/nonexistent/***" in err and SECRET not in err
