"""Security end to end: a local Ray started by the pipeline listens on loopback only, and a job run with
credentials in the environment leaves none of them in any output file or log."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile

import pytest

from settings.loader import load_config
from driver.run import run_pipeline
from tests.support import EMBEDDED_MODEL, ROOT
from tests.support.cli import pipeline_cmd

#: Starts Ray the way the pipeline does, *after* importing Ray without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER
#: (as a library caller would), runs a small job on it (tasks and an actor: Ray starts workers for them, and
#: each worker listens too) while a thread polls the sockets Ray's processes listen on, from the start
#: until the job has ended (then once more), and prints every listener seen. A listener opened late in the
#: job is seen; none is missed for want of waiting long enough.
LISTENERS = r"""
import glob, json, os, threading
import ray
from settings.loader import load_config
from driver.run import init_ray
def family(root):
    kids = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            pid, ppid = stat.split("/")[2], open(stat).read().rsplit(")", 1)[1].split()[1]
        except OSError:
            continue
        kids.setdefault(ppid, []).append(pid)
    out, todo = set(), [str(root)]
    while todo:
        p = todo.pop()
        out.add(p)
        todo += kids.get(p, [])
    return out
def listeners():
    inodes = {}
    for pid in family(os.getpid()):
        for fd in glob.glob(f"/proc/{pid}/fd/*"):
            try:
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = open(f"/proc/{pid}/comm").read().strip()
            except OSError:
                continue
    found = set()
    for table, listening in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        for line in open(f"/proc/net/{table}").read().splitlines()[1:]:
            f = line.split()
            if f[3] == listening and f[9] in inodes:
                found.add((table, f[1], inodes[f[9]]))
    return found
init_ray(load_config(None, ["progress=false", "ray.num_cpus=2"]))
found, job_done = set(), threading.Event()
def watch():
    while not job_done.is_set():
        found.update(listeners())
        job_done.wait(0.1)
watcher = threading.Thread(target=watch, daemon=True)
watcher.start()
@ray.remote
def square(x):
    return x * x
@ray.remote
class Counter:
    def add(self, x):
        return x + 1
assert ray.get([square.remote(i) for i in range(8)]) == [i * i for i in range(8)]
assert ray.get(Counter.remote().add.remote(1)) == 2
job_done.set()
watcher.join()
found.update(listeners())
print(json.dumps(sorted(found)))
ray.shutdown()
"""


def _address(table: str, hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr.split(":")[0])
    if table.endswith("6"):   # /proc/net/tcp6 stores four little-endian 32-bit words
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        return socket.inet_ntop(socket.AF_INET6, raw)
    return socket.inet_ntop(socket.AF_INET, raw[::-1])


@pytest.mark.slow
def test_a_local_ray_listens_on_loopback_only() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    out = subprocess.run([sys.executable, "-c", LISTENERS], capture_output=True, text=True, timeout=180, cwd=ROOT,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    found = [(table, _address(table, addr), proc) for table, addr, proc in json.loads(out.stdout.splitlines()[-1])]
    assert {p for _, _, p in found} >= {"gcs_server", "raylet"}, found     # Ray's servers were seen
    exposed = [f for f in found if f[1] not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
    assert exposed == [], exposed


SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzSENTINEL1"
KEY_ID = "AKIASENTINEL00000001"
TOKEN = "FwoGZXIvYXdzSENTINELsessionTOKEN000001"


def _no_secret(where: str, data: bytes) -> None:
    for value in (SECRET, KEY_ID, TOKEN):
        assert value.encode() not in data, f"{value[:8]}... found in {where}"


def test_a_job_with_credentials_in_the_environment_writes_none_of_them(ray_cluster, s3_server, s3fs_client,
                                                                      monkeypatch, capsys, caplog) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)     # the driver lists, fingerprints, commits with these
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    bucket = "creds"
    s3fs_client.mkdir(bucket)
    s3fs_client.pipe(f"{bucket}/in/a.jsonl", b'{"id": "a", "prompt": "copy:ab="}\n{"id": "b", "prompt": 5}\n')
    try:
        cfg = load_config("configs/s3.yaml", [f"input.url=s3://{bucket}/in/", f"output.url=s3://{bucket}/out",
                                              f"storage.endpoint_url={s3_server}", f"model.path={EMBEDDED_MODEL}",
                                              "decode.trace=tokens"])
        manifest = run_pipeline(cfg)
        assert manifest["totals"]["rows"] == 2
        files = s3fs_client.find(f"{bucket}/out")
        assert len(files) >= 6                              # outputs, errors, traces, marker, manifest
        for path in files:
            _no_secret(path, s3fs_client.cat(path))
        captured = capsys.readouterr()
        _no_secret("stdout/stderr", (captured.out + captured.err + caplog.text).encode())
    finally:
        s3fs_client.rm(bucket, recursive=True)


@pytest.mark.slow   # a fresh Ray and a full CLI run (~30 s): the whole process tree has the credentials
def test_the_cli_with_credentials_leaves_none_in_outputs_or_ray_logs(s3_server, s3fs_client, tmp_path) -> None:
    bucket = "creds-cli"
    s3fs_client.mkdir(bucket)
    s3fs_client.pipe(f"{bucket}/in/a.jsonl", b'{"id": "a", "prompt": "copy:ab="}\n{"oops\n')
    ray_tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")      # Ray's sockets need a short path
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ACCESS_KEY_ID": KEY_ID,
           "AWS_SESSION_TOKEN": TOKEN, "RAY_TMPDIR": ray_tmp, "TMPDIR": str(tmp_path)}
    try:
        out = subprocess.run(pipeline_cmd("--config", "configs/s3.yaml", f"input.url=s3://{bucket}/in/",
                                          f"output.url=s3://{bucket}/out", f"storage.endpoint_url={s3_server}",
                                          f"model.path={EMBEDDED_MODEL}", "ray.num_cpus=2"),
                             capture_output=True, timeout=300, cwd=ROOT, env=env)
        assert out.returncode == 3, out.stderr[-2000:]      # one bad row: everything written, exit 3
        _no_secret("stdout/stderr", out.stdout + out.stderr)
        for path in s3fs_client.find(f"{bucket}/out"):
            _no_secret(path, s3fs_client.cat(path))
        logs = [os.path.join(d, f) for base in (ray_tmp, str(tmp_path)) for d, _, fs in os.walk(base) for f in fs]
        assert any("/logs/" in p for p in logs)             # Ray's own logs were there to read
        for path in logs:
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    _no_secret(path, f.read())
    finally:
        s3fs_client.rm(bucket, recursive=True)
        subprocess.run(["rm", "-rf", ray_tmp])
