"""Shared helpers for the Ray-free stage tests (not collected: no test_ prefix)."""
from __future__ import annotations

import asyncio
import json

import pyarrow as pa

from tests.support import EMBEDDED_MODEL, EMBEDDED_PROMPTS

MODEL = str(EMBEDDED_MODEL)
SHARD_PATH = "/in/shard-000.jsonl"
SHARD_NAME = "shard-000"


def jsonl(*rows) -> bytes:
    """JSONL bytes; a str row is written as is (for malformed or blank lines), anything else as JSON."""
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode() + b"\n"


def parse(data: bytes, path: str = SHARD_PATH, name: str = SHARD_NAME, fmt: str = "auto") -> list[dict]:
    from stages.read.stage import parse_shard
    return parse_shard({"bytes": data, "path": path}, {path: name}, fmt)


def pipeline_table(data: bytes, decode_cfg, path: str = SHARD_PATH, name: str = SHARD_NAME) -> pa.Table:
    """What the decode actors receive: parse_shard rows as an Arrow table, then preprocess_batch."""
    from stages.preprocess import preprocess_batch
    return preprocess_batch(pa.Table.from_pylist(parse(data, path, name)), MODEL, decode_cfg)


def stage_config(*overrides: str):
    from settings.loader import load_config
    return load_config(None, [f"model.path={MODEL}", "decode.trace=tokens", *overrides])


def run_stage(stage, *parts: pa.Table) -> list[pa.Table]:
    """Call the async decode stage on several batches concurrently (as Ray Data does inside one actor)."""
    async def main():
        return await asyncio.gather(*(stage(p) for p in parts))
    return list(asyncio.run(main()))


def good_prompts(n: int) -> list[dict]:
    """The first `n` prompts of the shipped shard-000."""
    lines = (EMBEDDED_PROMPTS / "shard-000.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines[:n]]
