"""End to end through Ray Data, moto S3 -> moto S3, with bad rows, an injected row failure and a
decode actor that dies mid-run: rows in == outputs + errors, every id exactly once."""
from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from settings.loader import load_config
from driver.run import run_pipeline
from tests.support import EMBEDDED_MODEL
from tests.support.files import read_arrow

GOOD = [{"id": f"a{i}", "prompt": p} for i, p in enumerate(
    ["copy:abc=", "rev:hello=", "sort:dcba=", "next:abz=", "find:b|a1,b22=", "copy:zz=", "rev:ab="])]


def _shard_a() -> bytes:
    lines = [json.dumps(r) for r in GOOD]
    lines += [
        '{"id": "bad-json", "prompt": "copy:ab=',                       # malformed JSON
        json.dumps({"id": "empty", "prompt": "   "}),                   # empty prompt
        json.dumps({"id": "a1", "prompt": "copy:dup="}),                # duplicate id
        json.dumps({"id": "long", "prompt": "copy:" + "a" * 80 + "="}), # longer than context - gen_length
        json.dumps({"id": "mnt", "prompt": "copy:x=", "max_new_tokens": 7}),  # not a multiple: decodes 7 tokens
        json.dumps({"id": "big", "prompt": "copy:x=", "max_new_tokens": 32}), # above gen_length
        json.dumps({"id": "num", "prompt": 42}),                        # non-string prompt
        json.dumps({"prompt": "copy:noid="}),                           # missing id
        json.dumps({"id": "crash-me", "prompt": "copy:crash="}),        # decode actor dies on this once
        json.dumps({"id": "poison", "prompt": "rev:poison="}),          # decode raises for this row
    ]
    return ("\n".join(lines) + "\n").encode()


def _shard_b() -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([{"id": f"b{i}", "prompt": f"copy:{'xyz'[: i % 3 + 1]}="} for i in range(6)]), buf)
    return buf.getvalue()


@pytest.fixture
def bucket(s3fs_client):
    name = "e2e"
    if not s3fs_client.exists(name):
        s3fs_client.mkdir(name)
    s3fs_client.pipe(f"{name}/in/part-a.jsonl", _shard_a())
    s3fs_client.pipe(f"{name}/in/sub/part-b.parquet", _shard_b())
    yield name
    s3fs_client.rm(name, recursive=True)


def test_s3_end_to_end(ray_cluster, s3_server, s3fs_client, bucket, tmp_path):
    cfg = load_config("configs/s3.yaml", [
        f"input.url=s3://{bucket}/in/", f"output.url=s3://{bucket}/out", f"storage.endpoint_url={s3_server}",
        f"model.path={EMBEDDED_MODEL}", "actors.num_gpus=1", "actors.num_cpus=0", "actors.batch_rows=4",
        "testing.crash_on_id=crash-me", f"testing.crash_marker={tmp_path / 'crashed'}",
        "testing.fail_on_id=poison", "progress=false", "output.parquet=true"])
    manifest = run_pipeline(cfg)
    fs = s3fs_client
    assert (tmp_path / "crashed").exists(), "the injected actor crash did not happen"
    names = {"part-a": 17, "sub__part-b": 6}
    for name, n_rows in names.items():
        out = read_arrow(f"{bucket}/out/outputs/{name}.arrow", fs)
        err = read_arrow(f"{bucket}/out/errors/{name}.arrow", fs)
        assert out.num_rows + err.num_rows == n_rows
        assert sorted(out["line"].to_pylist() + err["line"].to_pylist()) == list(range(1, n_rows + 1))  # 1-based
        assert fs.exists(f"{bucket}/out/outputs/{name}.parquet")
        steps = read_arrow(f"{bucket}/out/traces/{name}.steps.arrow", fs)
        tokens = read_arrow(f"{bucket}/out/traces/{name}.tokens.arrow", fs)
        assert steps.num_rows == sum(out["steps_taken"].to_pylist())  # one step row per forward per sequence
        assert tokens.num_rows == sum(s * g for s, g in zip(out["steps_taken"].to_pylist(),
                                                             map(len, out["output_ids"].to_pylist())))
    err = read_arrow(f"{bucket}/out/errors/part-a.arrow", fs).to_pylist()
    reasons = {e["id"] or f"line{e['line']}": e["error"] for e in err}
    assert reasons["line8"].startswith("line 8: malformed JSON")       # the 8th line of the file
    assert reasons["empty"] == "empty prompt"
    assert "duplicate id" in reasons["a1"]
    assert "prompt too long" in reasons["long"]
    assert reasons["big"].startswith("max_new_tokens 32 > decode.gen_length 16")
    assert "must be a string" in reasons["num"]
    assert reasons["line15"] == "missing id"
    assert "injected failure" in reasons["poison"]
    out_a = read_arrow(f"{bucket}/out/outputs/part-a.arrow", fs)
    assert sorted(out_a["id"].to_pylist()) == sorted([r["id"] for r in GOOD] + ["crash-me", "mnt"])
    mnt = out_a.filter(pa.compute.equal(out_a["id"], "mnt")).to_pylist()[0]
    assert len(mnt["output_ids"]) == 7 and mnt["generated_tokens"] <= 7
    decoded = dict(zip(out_a["prompt"].to_pylist(), out_a["output"].to_pylist()))
    assert decoded["copy:abc="] == "abc" and decoded["rev:hello="] == "olleh"  # the embedded model works
    m = json.loads(fs.cat(f"{bucket}/out/_manifest.json"))
    assert m["totals"]["rows"] == 23 and m["totals"]["errors"] == 8 and m["totals"]["outputs"] == 15
    assert m["totals"]["nfe"] == manifest["totals"]["nfe"] > 0
    assert m["actors"] and all(0 < a["slot_utilisation"] <= 1 for a in m["actors"].values())
