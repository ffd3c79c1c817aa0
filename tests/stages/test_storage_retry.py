"""Object-store faults against the real S3 server (moto) behind the fault proxy, without Ray: the retry
settings of `storage.*` (stages/storage.py) ride out throttling, 500s, dropped and lost requests, a
download cut mid-body and a server restart; with the retries turned off the same faults fail. The
whole-operation retry (stages/write/commit.py) retries storage errors only, with a doubling backoff."""
from __future__ import annotations

import pickle
import threading
import time

import pyarrow as pa
import pytest

from stages.write.commit import CommitError, with_retries, write_json
from settings.schema import StorageConfig
from stages.storage import filesystem
from stages.write.sink import read_ipc, write_ipc
from tests.support.events import wait_until
from tests.support.faults.s3_proxy import Fault

TABLE = pa.table({"id": [f"r{i}" for i in range(500)], "x": list(range(500))})


def _fs(proxy, bucket="retry", **settings):
    fs, _ = filesystem(f"s3://{bucket}", StorageConfig(endpoint_url=proxy.url, **settings))
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    return fs


def test_requests_ride_out_faults(fault_s3) -> None:
    server, proxy = fault_s3
    fs = _fs(proxy)
    proxy.schedule(Fault("error500", "PUT", r"/t\.arrow$"), Fault("slowdown", "PUT", times=2),
                   Fault("lost", "PUT", r"/t\.arrow$"), Fault("error500", "GET", r"list-type", times=2),
                   Fault("truncate", "GET", r"/t\.arrow$", times=2))
    write_ipc(fs, "retry/t.arrow", TABLE)         # one PUT, in place (atomic on an object store)
    assert read_ipc(fs, "retry/t.arrow").equals(TABLE)   # one GET
    assert [p.rsplit("/", 1)[-1] for p in fs.ls("retry", detail=False)] == ["t.arrow"]
    assert proxy.injected() == {"slowdown": 2, "error500": 3, "lost": 1, "truncate": 2}
    assert "POST" not in {m for m, path, _ in proxy.log if "retry" in path}   # no delete: nothing to clean up
    assert not [path for _, path, _ in proxy.log if ".tmp-" in path]      # no temporary file, no copy of one


def test_without_retries_the_same_faults_fail(fault_s3) -> None:
    server, proxy = fault_s3
    fs = _fs(proxy, max_attempts=1, transfer_attempts=1)
    proxy.schedule(Fault("slowdown", "PUT", times=1))
    with pytest.raises(OSError):
        fs.pipe("retry/once", b"x")
    proxy.schedule(Fault("truncate", "GET", times=1))
    fs.pipe("retry/once", b"x" * 1000)
    with pytest.raises(Exception):
        fs.cat("retry/once")


def test_retry_settings_travel_to_workers(fault_s3) -> None:
    """Ray pickles the filesystem into its workers: the retry settings must survive that."""
    server, proxy = fault_s3
    fs = pickle.loads(pickle.dumps(_fs(proxy, max_attempts=7, transfer_attempts=2, retry_mode="adaptive")))
    assert fs.retries == 2
    assert fs.config_kwargs["retries"] == {"total_max_attempts": 7, "mode": "adaptive"}   # 7 in all, first included


def _refused(proxy) -> int:
    """Requests the proxy could not forward because the S3 server was down."""
    return sum(what == "upstream-down" for _, _, what in list(proxy.log))


@pytest.mark.slow
def test_server_restart_mid_run(fault_s3) -> None:
    """The S3 server is down for 4 s (connections refused) while files are written and read back: it goes
    down before the first write and comes back once 4 s have passed and the writes' requests have been
    refused 3 times (seen through the proxy), so the outage overlaps the writes whatever the machine's speed."""
    server, proxy = fault_s3
    fs = _fs(proxy)

    def back_up() -> None:
        try:
            wait_until(lambda: _refused(proxy) >= 3 and time.time() - started >= 4.0, 120,
                       "3 refused requests during the outage")
        finally:
            server.start()

    restart = threading.Thread(target=back_up)
    started = time.time()
    server.stop()
    restart.start()
    for i in range(3):
        write_ipc(fs, f"retry/restart-{i}.arrow", TABLE)
        assert read_ipc(fs, f"retry/restart-{i}.arrow").num_rows == TABLE.num_rows
    restart.join()
    assert time.time() - started >= 4.0
    assert any(what == "upstream-down" for _, _, what in proxy.log), "the restart did not hit a request"


def test_whole_operation_retry() -> None:
    calls, waits = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("503 SlowDown")
        return "done"
    assert with_retries("shard a: commit", flaky, attempts=3, backoff_s=0.5, sleep=waits.append) == "done"
    assert len(calls) == 3 and waits == [0.5, 1.0]
    with pytest.raises(CommitError, match=r"shard a: commit failed after 2 attempt\(s\): OSError: 503 SlowDown; "
                                          r"no marker was written, rerun the same command"):
        with_retries("shard a: commit", lambda: flaky() if not calls.clear() else None, 2, 0.0, waits.append)
    bugs = []
    with pytest.raises(ZeroDivisionError):          # a bug is not a storage error: not retried
        with_retries("x", lambda: bugs.append(1) or 1 / 0, 5, 0.0, waits.append)
    assert bugs == [1]


def test_write_json_is_whole_or_absent(tmp_path) -> None:
    fs, root = filesystem(str(tmp_path), StorageConfig())
    write_json(fs, f"{root}/m.json", {"a": 1})
    assert fs.cat(f"{root}/m.json") == b'{"a": 1}' and fs.ls(root, detail=False) == [f"{root}/m.json"]
