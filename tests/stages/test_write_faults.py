"""The shard datasink against S3 behind the fault proxy (no Ray): a commit that fails after the request
retries is retried whole and lands once; one that keeps failing raises a clear error and leaves no marker,
and the next run's cleanup removes its half-written files before the shard is redone."""
from __future__ import annotations

import pytest

from stages.write.commit import CommitError
from settings.schema import StorageConfig
from driver.resume import committed_shards, drop_uncommitted
from stages.storage import filesystem
from stages.write.sink import ShardDatasink
from tests.stages.test_write import check_committed, decoded, lines  # noqa: F401  (decoded is a fixture)
from tests.support.faults.s3_proxy import Fault

#: Few request attempts, quick whole-commit retries: a fault outlasts the request retries at once.
FAST = {"max_attempts": 2, "transfer_attempts": 1, "commit_attempts": 3, "commit_backoff_s": 0.0}


@pytest.fixture
def s3_sink(fault_s3, request):
    server, proxy = fault_s3
    bucket = "sink-" + request.node.name.replace("_", "-")[:40].lower()
    storage = StorageConfig(endpoint_url=proxy.url, **FAST)
    fs, _ = filesystem(f"s3://{bucket}", storage)
    fs.mkdir(bucket)
    yield ShardDatasink(f"s3://{bucket}/out", storage), fs, f"{bucket}/out", proxy
    fs.rm(bucket, recursive=True)


def _puts(proxy, pattern: str) -> int:
    return sum(1 for method, path, what in proxy.log if method == "PUT" and pattern in path and what == "200")


def test_commit_retried_whole(s3_sink, decoded) -> None:
    """The marker's write fails on every request attempt of the first commit: the whole commit runs again
    (its files are rewritten: idempotent) and the shard is committed once."""
    ds, fs, root, proxy = s3_sink
    proxy.schedule(Fault("error500", "PUT", r"/_done/a\.json$", times=FAST["max_attempts"]))
    assert ds.write([decoded["a"]], None) == ["a"]
    assert proxy.injected() == {"error500": 2}
    assert _puts(proxy, "/outputs/a.arrow") == 2      # the whole commit ran twice
    check_committed(fs, root, "a", decoded["a"])


def test_failed_commit_leaves_no_marker(s3_sink, decoded) -> None:
    ds, fs, root, proxy = s3_sink
    proxy.schedule(Fault("error500", "PUT", r"/traces/a\.tokens\.arrow", times=0))   # every time
    with pytest.raises(CommitError, match=r"shard a: commit failed after 3 attempt\(s\).*no marker was written"):
        ds.write([decoded["a"]], None)
    assert "a" not in committed_shards(fs, root)
    assert fs.exists(f"{root}/outputs/a.arrow")            # half a commit on disk, but not committed
    proxy.schedule()
    removed = drop_uncommitted(fs, root, set(committed_shards(fs, root)))   # what the next run does first
    assert any(p.endswith("outputs/a.arrow") for p in removed) and not fs.exists(f"{root}/outputs/a.arrow")
    assert ds.write([decoded["a"]], None) == ["a"]
    check_committed(fs, root, "a", decoded["a"])


def test_part_write_retried(s3_sink, decoded) -> None:
    ds, fs, root, proxy = s3_sink
    a = decoded["a"]
    proxy.schedule(Fault("slowdown", "PUT", r"/_parts/a/.*\.rows\.arrow", times=FAST["max_attempts"] + 1))
    assert ds.write([lines(a, 0, 1, 2)], None) == []
    assert ds.write([lines(a, 3, 4, 5)], None) == ["a"]
    assert proxy.injected() == {"slowdown": 3}
    check_committed(fs, root, "a", a)
