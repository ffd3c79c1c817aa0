"""Every id a run wrote, read back from its outputs/ and errors/ (Arrow), for exactly-once checks."""
from __future__ import annotations

import pyarrow as pa


def written_ids(fs, root: str, names) -> list[str]:
    """Sorted ids of outputs/<name>.arrow and errors/<name>.arrow for every shard name (duplicates kept)."""
    ids = []
    for name in names:
        for sub in ("outputs", "errors"):
            with fs.open(f"{root}/{sub}/{name}.arrow", "rb") as f:
                ids += pa.ipc.open_file(f).read_all()["id"].to_pylist()
    return sorted(ids)
