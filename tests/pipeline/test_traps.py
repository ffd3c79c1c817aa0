"""The traps a user fell into, one test each: relative paths given to ./run.sh from the user's own folder,
several --config files, a typo in the output bucket, an empty input file, and trying object storage locally
with the one command the README gives."""
from __future__ import annotations

import json
import pathlib
import re
import shutil
import socket
import subprocess
import time

import pytest

import pipeline
from driver.preflight import check_output_bucket
from settings.loader import load_config
from settings.schema import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[2]
EMBEDDED_MODEL = ROOT / "embedded" / "taskmix" / "model"
PROMPTS = ROOT / "embedded" / "taskmix" / "prompts" / "shard-000.jsonl"


def run_sh_copy(tmp_path: pathlib.Path) -> pathlib.Path:
    """./run.sh as it is, in a folder whose .venv and pipeline.py are this checkout's and whose scripts/env.sh
    does nothing: a test never installs into .venv (the real env.sh would, were its stamp stale)."""
    proj = tmp_path / "project"
    (proj / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "run.sh", proj / "run.sh")
    (proj / "scripts" / "env.sh").write_text("exit 0\n")
    (proj / ".venv").symlink_to(ROOT / ".venv")
    (proj / "pipeline.py").symlink_to(ROOT / "pipeline.py")      # Python imports from the file's real folder
    return proj / "run.sh"


def _run_sh(run_sh, cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(run_sh), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_run_sh_resolves_relative_paths_against_the_callers_folder(tmp_path) -> None:
    """`cd work && run.sh --config cfg/my.yaml model.path=./m`: the config file and model.path are the
    caller's; the input path inside the config file is relative to that file."""
    work = tmp_path / "work"
    (work / "cfg").mkdir(parents=True)
    (work / "data").mkdir()
    (work / "data" / "p.jsonl").write_text(json.dumps({"doc": "a", "text": "copy:ab="}) + "\n")
    (work / "cfg" / "my.yaml").write_text("input:\n  url: ../data/p.jsonl\n  id_field: doc\n")
    run_sh = run_sh_copy(tmp_path)
    out = _run_sh(run_sh, work, "--config", "cfg/my.yaml", "model.path=./m", "output.url=./out")
    assert out.returncode == 2
    assert out.stderr.strip() == (f"error: config error at model.path: {work}/m is not a directory (a relative path "
                                  f"is resolved against the folder of the config file that sets it, the project root "
                                  f"for configs/, or on the command line against the folder the command was started "
                                  f"from)")
    shutil.copytree(EMBEDDED_MODEL, work / "m")
    out = _run_sh(run_sh, work, "--config", "cfg/my.yaml", "model.path=./m", "output.url=./out",
                  "input.prompt_field=txt")
    assert out.returncode == 2                       # got past the model; the input is the config file's
    assert out.stderr.startswith(f"error: config error at input.prompt_field: the first input shard "
                                 f"{work}/data/p.jsonl has no field 'txt'")
    assert not (work / "out").exists() and not (run_sh.parent / "out").exists()


def test_several_configs_layer_in_order(tmp_path, capsys) -> None:
    base, site = tmp_path / "base.yaml", tmp_path / "site.yaml"
    base.write_text("decode:\n  steps: 8\n  sched:\n    k: 3.0\n")
    site.write_text("decode:\n  steps: 4\n")
    for order, steps in (((base, site), 4), ((site, base), 8)):
        args = pipeline.parse_args([a for f in order for a in ("--config", str(f))] + ["decode.sched.tau_low_logit=2"])
        cfg = load_config(args.config, args.overrides, defaults=not args.no_defaults)
        assert (cfg.decode.steps, cfg.decode.sched.k, cfg.decode.sched.tau_low_logit) == (steps, 3.0, 2.0)
    bad_first, bad_second = tmp_path / "bad1.yaml", tmp_path / "bad2.yaml"
    bad_first.write_text("decode:\n  sched:\n    schedule: weird\n")
    bad_second.write_text("model:\n  dtype: float8\n")
    for files, key in (((bad_first, site), "decode.sched.schedule"), ((base, bad_second), "model.dtype")):
        assert pipeline.main([a for f in files for a in ("--config", str(f))]) == 2
        assert capsys.readouterr().err.startswith(f"error: config error at {key}:")   # neither file was dropped


def test_a_missing_output_bucket_is_an_error_unless_asked_for(tmp_path, s3_server, s3fs_client, capsys) -> None:
    s3fs_client.mkdir("results")
    code = pipeline.main([f"input.url={PROMPTS}", "output.url=s3://resluts/run-1", f"storage.endpoint_url={s3_server}"])
    assert code == 2
    assert capsys.readouterr().err == ("error: config error at output.url: bucket 'resluts' does not exist (did you "
                                       "mean 'results'?); create it, or set output.create_bucket=true to let the run "
                                       "create it\n")
    assert not s3fs_client.exists("resluts")                        # no bucket made by the typo
    for url, create in (("s3://results/run-1", False), ("s3://fresh/run-1", True)):
        check_output_bucket(load_config(None, [f"output.url={url}", f"storage.endpoint_url={s3_server}",
                                               f"output.create_bucket={str(create).lower()}"]))
    with pytest.raises(ConfigError, match="bucket 'fresh' does not exist;"):
        check_output_bucket(load_config(None, ["output.url=s3://fresh/run-1", f"storage.endpoint_url={s3_server}"]))
    s3fs_client.rm("results", recursive=True)


def test_an_empty_input_file_is_a_skipped_shard_with_a_note(ray_cluster, tmp_path, capsys) -> None:
    data = tmp_path / "in"
    data.mkdir()
    (data / "a.jsonl").write_text("".join(PROMPTS.read_text().splitlines(keepends=True)[:4]))
    (data / "empty.jsonl").write_text("")
    (data / "blank.jsonl").write_text("\n\n")
    out = tmp_path / "out"
    argv = [f"model.path={EMBEDDED_MODEL}", f"input.url={data}", f"output.url={out}", "progress=false",
            "actors.num_cpus=0.25"]
    for _ in range(2):                                   # a rerun keeps them committed, and says so again
        assert pipeline.main(argv) == 0
        assert capsys.readouterr().err == ("note: 2 input shard(s) had no rows and were skipped: blank, empty "
                                           "(empty_shards in the manifest)\n")
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["empty_shards"] == ["blank", "empty"]
    assert (manifest["totals"]["rows"], manifest["totals"]["errors"], manifest["totals"]["outputs"]) == (4, 0, 4)
    marker = json.loads((out / "_done" / "empty.json").read_text())
    assert (marker["empty"], marker["rows"], marker["errors"]) == (True, 0, 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_readme_starts_a_local_s3_server_and_runs_against_it(tmp_path) -> None:
    """The README's commands, run as written but for the port (a free one): the server starts, and the
    default job writes its outputs into a bucket the run creates there."""
    readme = (ROOT / "README.md").read_text()
    server = re.search(r"^(\.venv/bin/moto_server -H 127\.0\.0\.1 -p (\d+)) &", readme, re.M)
    job = re.search(r"^(AWS_ENDPOINT_URL=http://127\.0\.0\.1:(\d+) .*) \\\n\s+(\./run\.sh .*)$", readme, re.M)
    assert server and job and server.group(2) == job.group(2)
    port = str(_free_port())
    proc = subprocess.Popen(server.group(1).replace(server.group(2), port).split(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import s3fs
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": f"http://127.0.0.1:{port}"}, use_listings_cache=False)
        for _ in range(100):
            try:
                fs.ls("")
                break
            except Exception:
                time.sleep(0.2)
        command = f"{job.group(1)} {job.group(3)}".replace(job.group(2), port)
        command = command.replace("./run.sh", str(run_sh_copy(tmp_path)))
        out = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        manifest = json.loads(fs.cat("demo/runs/first/_manifest.json"))
        assert manifest["totals"]["outputs"] == manifest["totals"]["rows"] > 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
