"""Open an input shard so that a storage failure is told apart from bad content.

A shard that vanished after it was listed, is forbidden, or whose storage fails mid-read (after the storage
client's own retries) cannot be read *now*; the read stage records it as a failed shard (not committed, so
the next run tries it again) and the rest of the job goes on. Bytes that are bad (a corrupt gzip stream,
a file that is not Parquet) are a content problem: an error row, committed like any other. To tell the two
apart whatever a decompressor or parser does with an exception, `open_shard` opens the raw file itself,
wraps it so that every exception of a call into it surfaces as `ShardUnavailable`, and decompresses it
here by extension with fsspec's codecs (`.gz`, `.bz2`, `.xz`, `.zst`).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from fsspec.compression import compr
from fsspec.utils import infer_compression


class ShardUnavailable(Exception):
    """The storage could not give the shard's bytes (open or read failed): the shard failed, not its rows."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


class GuardedFile:
    """A raw (still compressed) shard file whose I/O errors are `ShardUnavailable`."""

    def __init__(self, raw) -> None:
        self.raw = raw

    def _call(self, name: str, *args):
        try:
            return getattr(self.raw, name)(*args)
        except ShardUnavailable:
            raise
        except Exception as e:
            raise ShardUnavailable(e) from e

    def read(self, size: int = -1) -> bytes:
        return self._call("read", size)

    def readinto(self, buffer) -> int:
        return self._call("readinto", buffer)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._call("seek", offset, whence)

    def tell(self) -> int:
        return self._call("tell")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return bool(getattr(self.raw, "seekable", lambda: False)())

    def writable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return bool(getattr(self.raw, "closed", False))

    @property
    def mode(self) -> str:
        return "rb"

    def close(self) -> None:
        self.raw.close()


@contextmanager
def open_shard(fs, path: str, compressed: bool = True) -> Iterator:
    """The shard's (decompressed, when `compressed` and its extension says so) binary file. Raises
    `ShardUnavailable` when the storage cannot open or read it."""
    try:
        raw = fs.open(path, "rb")
    except Exception as e:
        raise ShardUnavailable(e) from e
    guarded = GuardedFile(raw)
    codec = infer_compression(path) if compressed else None
    f = compr[codec](guarded, mode="rb") if codec else guarded
    try:
        yield f
    finally:
        try:
            if f is not guarded:
                f.close()
        finally:
            raw.close()
