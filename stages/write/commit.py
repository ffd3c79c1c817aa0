"""Whole-operation retries of the write stage's storage work, and atomic small files.

Each S3 request is already retried by botocore and s3fs (stages/storage.py). An outage that outlasts those
retries would fail the write task, and Ray Data does not retry a task that raised, so the write stage runs
a part write or a shard commit again *from the start* after a doubling backoff (`storage.commit_attempts`,
`storage.commit_backoff_s`). That is safe because both are idempotent: a part's name is derived from its
rows, a commit rewrites the same final files (each via a temporary name and a rename) and writes the
marker last. Every file appears whole or not at all (`put_atomic`). When the attempts run out the error names the shard and says no marker was written, so the
shard is redone by the next run, never half-committed.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Callable, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from fsspec.implementations.local import LocalFileSystem

T = TypeVar("T")
log = logging.getLogger(__name__)
#: What a storage outage looks like through fsspec/s3fs (s3fs turns most S3 errors into OSError).
STORAGE_ERRORS: tuple[type[BaseException], ...] = (OSError, BotoCoreError, ClientError)
try:
    import aiohttp
    STORAGE_ERRORS += (aiohttp.ClientError,)
except ImportError:  # pragma: no cover - s3fs needs aiohttp
    pass


class CommitError(RuntimeError):
    """A part write or shard commit that failed on every attempt (its shard has no marker)."""


def with_retries(what: str, fn: Callable[[], T], attempts: int, backoff_s: float,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """fn() until it returns, retrying storage errors up to `attempts` times in all."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except STORAGE_ERRORS as e:
            if attempt == attempts:
                raise CommitError(f"{what} failed after {attempts} attempt(s): {type(e).__name__}: {e}; no "
                                  f"marker was written, rerun the same command to redo the shard") from e
            wait = backoff_s * 2 ** (attempt - 1)
            log.warning("%s: %s: %s; attempt %d of %d in %.1f s", what, type(e).__name__, e, attempt + 1,
                        attempts, wait)
            sleep(wait)
    raise AssertionError("unreachable")


def put_atomic(fs, path: str, data: bytes) -> None:
    """Write `data` to `path` whole or not at all. On a local disk: a temporary name, then a rename (a file
    cut short by a crash would otherwise be half a file a later run cannot read). On an object store one PUT
    already is (a multipart upload appears only once completed), while a rename there is a copy, a delete
    and listings per file: the data goes in place, in one request."""
    if isinstance(fs, LocalFileSystem):
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, path)
    else:
        fs.pipe_file(path, data)


def write_json(fs, path: str, obj: dict, indent: int | None = None) -> None:
    """Write a small JSON file whole or not at all (`put_atomic`)."""
    put_atomic(fs, path, json.dumps(obj, indent=indent).encode())
