"""Reading what a run wrote and writing test inputs: Arrow IPC files (local, or through an fsspec
filesystem), every id a run wrote (for exactly-once checks), Parquet and zstd bytes."""
from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq


def read_arrow(path, fs=None) -> pa.Table:
    """The table in the Arrow IPC file at `path`: a local file (memory-mapped), or a path on `fs`."""
    if fs is None:
        with pa.memory_map(str(path)) as f:
            return pa.ipc.open_file(f).read_all()
    with fs.open(str(path), "rb") as f:
        return pa.ipc.open_file(f).read_all()


def written_ids(fs, root: str, names) -> list[str]:
    """Sorted ids of outputs/<name>.arrow and errors/<name>.arrow for every shard name (duplicates kept)."""
    ids = []
    for name in names:
        for sub in ("outputs", "errors"):
            ids += read_arrow(f"{root}/{sub}/{name}.arrow", fs)["id"].to_pylist()
    return sorted(ids)


def parquet_bytes(table: pa.Table, **options) -> bytes:
    """`table` as the bytes of a Parquet file (`options` go to pyarrow.parquet.write_table)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, **options)
    return buf.getvalue()


def zstd(data: bytes) -> bytes:
    """`data` zstd-compressed (a .zst file's bytes)."""
    import zstandard
    return zstandard.ZstdCompressor().compress(data)
