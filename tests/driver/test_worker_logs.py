"""A failure that only shows inside Ray keeps its one-line cause on the terminal, and the workers' tracebacks
go to the log file instead of the terminal (driver/worker_logs.py)."""
from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from safetensors.numpy import load_file, save_file

from driver.worker_logs import TracebackFilter, WorkerLogRouter, route_worker_logs

ROOT = pathlib.Path(__file__).resolve().parents[2]
EMBEDDED_MODEL = ROOT / "embedded" / "taskmix" / "model"
PROMPTS = ROOT / "embedded" / "taskmix" / "prompts" / "shard-000.jsonl"

#: What a decode actor that fails to load its checkpoint writes to stderr (Ray 2.60, abridged), between two
#: ordinary lines.
ACTOR_STDERR = """\
loading the model
[transformers] LlamaForCausalLM LOAD REPORT from: /m
Key                       | Status     |
--------------------------+------------+-
model.norm_renamed.weight | UNEXPECTED |
model.norm.weight         | MISSING    |

Notes:
- UNEXPECTED:\tcan be ignored when loading from different task/architecture
Exception raised in creation task: The actor died because of an error raised in its creation task, \
\x1b[36mray::MapWorker(MapBatches(DecodeStage)).__init__()\x1b[39m (pid=1, ip=127.0.0.1)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/work/stages/decode.py", line 76, in __init__
    self.adapter = load_model(cfg.model.path, cfg.model.family)
  File "/work/decoder/families/base.py", line 177, in check_loaded
    raise ValueError(f"{path}: checkpoint lacks weights")
ValueError: /m: checkpoint lacks weights ['model.norm.weight']
[2026-12-03 13:58:23,865 E 11933 11933] logging.cc:125: Stack trace:
 /venv/ray/_raylet.so(+0x1812b9a) [0x7f3de1812b9a] ray::operator<<()
/lib/x86_64-linux-gnu/libstdc++.so.6(+0xa8e1a) [0x7f3ddfca8e1a]
ray::MapWorker(MapBatches(DecodeStage))(_start+0x21) [0x55b4ea3a9081] _start

*** SIGABRT received at time=1796306303 on cpu 1 ***
PC: @     0x7f3de24a8eec  (unknown)  (unknown)
    @     0x7f3de245a050   66322640  (unknown)
[2026-12-03 13:58:23,867 E 11933 11933] logging.cc:474: *** SIGABRT received at time=1796306303 on cpu 1 ***
Fatal Python error: Aborted

Stack (most recent call first):
  File "/venv/ray/_private/worker.py", line 1069 in main_loop

Extension modules: msgpack._cmsgpack, google._upb._message, psutil._psutil_linux (total: 87)
worker exiting""".splitlines()

#: What the raylet pushes to the driver: one message of many lines.
RAYLET_ERROR = ("Task MapWorker(MapBatches(DecodeStage)).get_location failed. There are infinite retries remaining, "
                "so the task will be retried. Error: Traceback (most recent call last):\n\n  File \"python/ray/"
                "_raylet.pyx\", line 2198, in ray._raylet.execute_task\n\nValueError: /m: checkpoint lacks weights\n")


def test_the_filter_keeps_only_lines_outside_diagnostic_blocks() -> None:
    f = TracebackFilter()
    assert f.keep(("ip", 1, True), ACTOR_STDERR) == ["loading the model", "worker exiting"]
    stream = ("ip", 2, True)                         # a block split over two batches stays a block
    assert f.keep(stream, ["ok", "Traceback (most recent call last):", '  File "x.py", line 1, in f']) == ["ok"]
    assert f.keep(stream, ["    raise KeyError('k')", "KeyError: 'k'", "next line"]) == ["next line"]


def test_the_router_logs_every_line_and_prints_the_rest(tmp_path) -> None:
    printed, log = [], tmp_path / "run.log"
    router = WorkerLogRouter(str(log), lambda data, file, prefix: printed.append(data["lines"]))
    router({"pid": 7, "ip": "127.0.0.1", "is_err": True, "actor_name": "MapWorker", "lines": ACTOR_STDERR}, None)
    router({"pid": "raylet", "ip": "127.0.0.1", "is_err": False, "lines": [RAYLET_ERROR]}, None)
    router({"pid": "autoscaler", "lines": ["======== Autoscaler status"]}, None)       # Ray filters these itself
    assert printed == [["loading the model", "worker exiting"], ["======== Autoscaler status"]]
    text = log.read_text()
    assert "\x1b[" not in text and "Autoscaler" not in text
    assert "(MapWorker pid=7) ValueError: /m: checkpoint lacks weights ['model.norm.weight']" in text
    assert "(raylet pid=raylet)   File \"python/ray/_raylet.pyx\", line 2198" in text
    assert len(text.splitlines()) == len(ACTOR_STDERR) + len(RAYLET_ERROR.split("\n"))


def test_route_worker_logs_replaces_rays_printer_once(tmp_path, monkeypatch, capsys) -> None:
    from ray._private import worker
    monkeypatch.setattr(worker, "print_worker_logs", worker.print_worker_logs)   # put back after the test
    assert route_worker_logs(str(tmp_path / "a.log")) and route_worker_logs(str(tmp_path / "b.log"))
    assert isinstance(worker.print_worker_logs, WorkerLogRouter)
    assert not isinstance(worker.print_worker_logs.printer, WorkerLogRouter)
    worker.print_to_stdstream({"pid": "raylet", "ip": "x", "is_err": False, "lines": [RAYLET_ERROR]},
                              ignore_prefix=False)              # the path the raylet's errors take
    assert capsys.readouterr().out == "" and "checkpoint lacks weights" in (tmp_path / "b.log").read_text()


@pytest.mark.slow
def test_a_checkpoint_that_fails_inside_ray_is_one_line_and_the_traceback_is_in_the_log(tmp_path) -> None:
    """Weights that do not match the architecture pass the pre-flight (their files are whole) and fail in
    the decode actor: the terminal shows the root cause in one line, the log file the workers' tracebacks."""
    model = tmp_path / "model"
    shutil.copytree(EMBEDDED_MODEL, model)
    weights = load_file(str(model / "model.safetensors"))
    weights["model.norm_renamed.weight"] = weights.pop("model.norm.weight")
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    out = subprocess.run([sys.executable, str(ROOT / "pipeline.py"), f"model.path={model}", f"input.url={PROMPTS}",
                          f"output.url={tmp_path}/out"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 1, out.stderr[-3000:]
    terminal = (out.stdout + out.stderr).replace("\r", "\n")
    for noise in ("Traceback", 'File "', "^^^", "Stack trace", "SIGABRT", "Fatal Python error", "LOAD REPORT",
                  "| MISSING", "Extension modules", "\x1b[36m("):
        assert noise not in terminal, noise
    last = out.stderr.strip().splitlines()[-1]
    m = re.fullmatch(rf"error: ValueError: {model}: checkpoint lacks weights \['model\.norm\.weight'\] "
                     rf"\(traceback: (\S+)\)", last)
    assert m, last
    log = pathlib.Path(m.group(1)).read_text()
    assert re.search(r"^\(MapWorker\(MapBatches\(DecodeStage\)\) pid=\d+\) .*LOAD REPORT", log, re.M)
    assert re.search(r"^\(MapWorker\(MapBatches\(DecodeStage\)\) pid=\d+\)   File .*check_loaded", log, re.M)
    assert re.search(r"^Traceback \(most recent call last\):", log, re.M)      # and the driver's own, unprefixed
