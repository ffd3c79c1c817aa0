"""A read task's peak memory does not grow with the shard (stages/read/stage.py streams it in bounded chunks).

Each measurement runs `read_shards` over one JSONL shard in a fresh process and reports its peak RSS
(ru_maxrss); the blocks are dropped as they come, as Ray moves them to the object store. The 1 GB shard
takes ~7 s here (json.loads on 4 KiB rows), so it runs by default.
"""
from __future__ import annotations

import pytest

import json
import subprocess
import sys

from tests.support import ROOT

MEASURE = """
import resource, sys, fsspec, pyarrow as pa
from stages.read.stage import ReadOptions, read_shards
path = sys.argv[1]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rows, errors = 0, []
for block in read_shards(pa.table({"path": [path]}), fsspec.filesystem("file"), {path: "s"}, ReadOptions()):
    rows += block.num_rows
    errors += [e for e in block["error"].to_pylist() if e]
print(rows, base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
print("\\n".join(errors))
"""


def _shard(path, size_bytes: int) -> int:
    """Write a JSONL shard of about `size_bytes` (4 KiB rows with a metadata field); returns its rows."""
    line = json.dumps({"id": "x" * 12, "prompt": "copy:abc=", "doc": "lorem ipsum " * 340}).encode() + b"\n"
    n = size_bytes // len(line)
    with open(path, "wb") as f:
        for i in range(n):
            f.write(line.replace(b"x" * 12, b"%012d" % i, 1))
    return n


def _measure(path) -> tuple[int, float, list[str]]:
    """(rows, peak RSS growth in MB, error messages) of reading `path` in a fresh process."""
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    head, *errors = out.stdout.splitlines()
    rows, base_kb, peak_kb = map(int, head.split())
    return rows, (peak_kb - base_kb) / 1024, errors


def _peak_growth_mb(path) -> tuple[int, float]:
    rows, grow, _ = _measure(path)
    return rows, grow


def test_peak_memory_does_not_grow_with_shard_size(tmp_path) -> None:
    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    n_small, n_big = _shard(small, 24 << 20), _shard(big, 96 << 20)
    (rows_s, grow_s), (rows_b, grow_b) = _peak_growth_mb(small), _peak_growth_mb(big)
    assert (rows_s, rows_b) == (n_small, n_big)
    assert grow_b < grow_s + 16, (grow_s, grow_b)          # 4x the shard (72 MB more), about the same memory


@pytest.mark.slow
def test_one_gigabyte_shard_reads_in_bounded_memory(tmp_path) -> None:
    path = tmp_path / "huge.jsonl"
    n = _shard(path, 1 << 30)
    rows, grow = _peak_growth_mb(path)
    assert rows == n
    assert grow < 128, grow                                # a 1024 MB shard, under 128 MB of peak growth


def test_a_100_megabyte_line_is_rejected_in_bounded_memory(tmp_path) -> None:
    """A line far over any model context (100 MB, one JSON string) is that line's error; it is read past in
    1 MiB blocks and never held whole (input.max_line_mb, 16 MiB), and its neighbours are read as usual."""
    size = 100 << 20
    short, long = tmp_path / "short.jsonl", tmp_path / "long-line.jsonl"
    short.write_bytes(b'{"id": "a", "prompt": "copy:ab="}\n{"id": "b", "prompt": "copy:cd="}\n')
    with open(long, "wb") as f:
        f.write(b'{"id": "a", "prompt": "copy:ab="}\n{"id": "huge", "prompt": "')
        for _ in range(size >> 20):
            f.write(b"x" * (1 << 20))
        f.write(b'"}\n{"id": "b", "prompt": "copy:cd="}\n')
    (_, base, _), (rows, grow, errors) = _measure(short), _measure(long)
    assert rows == 3 and len(errors) == 1
    assert errors[0].startswith(f"line 2: line too long: {size + 28} bytes > input.max_line_mb"), errors
    assert grow < base + 24, (base, grow)      # the line is 100 MB; reading it costs < 24 MB over a 2-line shard
