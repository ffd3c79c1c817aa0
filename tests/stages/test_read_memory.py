"""A read task's peak memory does not grow with the shard (stages/read.py streams it in bounded chunks).

Each measurement runs `read_shards` over one JSONL shard in a fresh process and reports its peak RSS
(ru_maxrss); the blocks are dropped as they come, as Ray moves them to the object store. The 1 GB shard
takes ~7 s here (json.loads on 4 KiB rows), so it runs by default.
"""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

MEASURE = """
import resource, sys, fsspec, pyarrow as pa
from stages.read import ReadOptions, read_shards
path = sys.argv[1]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rows = 0
for block in read_shards(pa.table({"path": [path]}), fsspec.filesystem("file"), {path: "s"}, ReadOptions()):
    rows += block.num_rows
print(rows, base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _shard(path, size_bytes: int) -> int:
    """Write a JSONL shard of about `size_bytes` (4 KiB rows with a metadata field); returns its rows."""
    line = json.dumps({"id": "x" * 12, "prompt": "copy:abc=", "doc": "lorem ipsum " * 340}).encode() + b"\n"
    n = size_bytes // len(line)
    with open(path, "wb") as f:
        for i in range(n):
            f.write(line.replace(b"x" * 12, b"%012d" % i, 1))
    return n


def _peak_growth_mb(path) -> tuple[int, float]:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    rows, base_kb, peak_kb = map(int, out.stdout.split())
    return rows, (peak_kb - base_kb) / 1024


def test_peak_memory_does_not_grow_with_shard_size(tmp_path) -> None:
    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    n_small, n_big = _shard(small, 24 << 20), _shard(big, 96 << 20)
    (rows_s, grow_s), (rows_b, grow_b) = _peak_growth_mb(small), _peak_growth_mb(big)
    assert (rows_s, rows_b) == (n_small, n_big)
    assert grow_b < grow_s + 16, (grow_s, grow_b)          # 4x the shard (72 MB more), about the same memory


def test_one_gigabyte_shard_reads_in_bounded_memory(tmp_path) -> None:
    path = tmp_path / "huge.jsonl"
    n = _shard(path, 1 << 30)
    rows, grow = _peak_growth_mb(path)
    assert rows == n
    assert grow < 128, grow                                # a 1024 MB shard, under 128 MB of peak growth
