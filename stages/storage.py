"""Object storage through fsspec: one place that turns a URL plus StorageConfig into a filesystem.

s3:// gets s3fs with the configured endpoint (or AWS_ENDPOINT_URL) and the retry settings of
`storage.*`: botocore retries every request (`max_attempts`, `retry_mode`: 5xx, SlowDown, dropped and
refused connections, timeouts, with jittered backoff), s3fs retries a request with its body
(`transfer_attempts`: a download cut mid-body). A commit's own retry is stages/write/commit.py. Every other
scheme (gs://, file://, memory://, plain paths) uses fsspec's own resolution. Ray readers get the same
filesystem wrapped as a pyarrow filesystem, so readers and writers see the same bytes.
"""
from __future__ import annotations

import difflib
import os
import posixpath

import fsspec
import pyarrow.fs as pafs
import s3fs

from settings.schema import ConfigError, MissingInputError, StorageConfig


def filesystem(url: str, storage: StorageConfig) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path without the scheme) for `url`."""
    if fsspec.utils.get_protocol(url) in ("s3", "s3a"):
        fs = RetryingS3FileSystem(**s3_options(storage))
        return fs, fs._strip_protocol(url)
    return fsspec.core.url_to_fs(url)


def s3_options(storage: StorageConfig) -> dict:
    """s3fs arguments for `storage`: endpoint, anonymity, botocore's retry config and timeouts."""
    endpoint = storage.endpoint_url or os.environ.get("AWS_ENDPOINT_URL", "")
    config = {"retries": {"total_max_attempts": storage.max_attempts, "mode": storage.retry_mode},
              "connect_timeout": storage.connect_timeout_s, "read_timeout": storage.read_timeout_s}
    options = {"anon": storage.anon, "use_listings_cache": False, "config_kwargs": config,
               "transfer_attempts": storage.transfer_attempts}
    if endpoint:
        options["client_kwargs"] = {"endpoint_url": endpoint}
    return options


class RetryingS3FileSystem(s3fs.S3FileSystem):
    """s3fs with its own retry count (`retries`, a class attribute there) as a constructor argument, so it
    travels with the filesystem when Ray pickles it to workers (fsspec pickles constructor arguments)."""

    def __init__(self, *args, transfer_attempts: int = 3, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.retries = transfer_attempts


#: Compressed-file suffixes fsspec decompresses by extension (`compression="infer"`); .zst needs `zstandard`.
COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
SHARD_EXTENSIONS = tuple(e + c for e in (".jsonl", ".json") for c in ("", *COMPRESSED)) + (".parquet", ".pq")


def join(root: str, *parts: str) -> str:
    return posixpath.join(root.rstrip("/"), *parts)


def shard_name(path: str, root: str) -> str:
    """Deterministic output name of an input shard: its path under the input root, '/' (and '\\') -> '__', no
    extension. Always one safe path component (see `check_shard_name`): a name of dots only gets a '_' prefix."""
    rel = posixpath.relpath(path, root) if root and path.startswith(root.rstrip("/") + "/") else posixpath.basename(path)
    stem = rel
    for comp in COMPRESSED:
        stem = stem.removesuffix(comp)
    for ext in (".jsonl", ".json", ".parquet", ".pq"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
            break
    name = stem.replace("/", "__").replace("\\", "__").replace("\0", "_")
    return f"_{name}" if not name.strip(".") else name


def check_shard_name(name: str) -> str:
    """`name` if it is one path component that stays inside the folder it is joined to; else ValueError
    (shard files are written under the output root, never beside or above it)."""
    if not name or not name.strip(".") or any(c in name for c in "/\\\0") or posixpath.isabs(name):
        raise ConfigError(f"unsafe shard name {name!r}: it would write outside the output root")
    return name


def check_unique_names(names: dict[str, str]) -> None:
    """Two input shards with one output name would overwrite each other's outputs: ValueError naming them."""
    seen: dict[str, str] = {}
    for path, name in names.items():
        if name in seen:
            raise ConfigError(f"input shards {seen[name]} and {path} would both be written as {name!r}; "
                             f"rename one (names are paths under the input root with '/' -> '__')")
        seen[name] = path


def list_shards(fs: fsspec.AbstractFileSystem, path: str) -> tuple[list[str], str]:
    """(sorted shard paths, root they are named relative to) for a file, directory or glob."""
    if any(ch in path for ch in "*?["):
        files = [p for p in fs.glob(path) if fs.isfile(p)]
        root = path[: min(path.index(ch) for ch in "*?[" if ch in path)].rsplit("/", 1)[0]
    elif fs.isdir(path):
        files = [p for p in fs.find(path) if p.endswith(SHARD_EXTENSIONS)]
        root = path
    elif fs.exists(path):
        files, root = [path], posixpath.dirname(path)
    else:
        raise MissingInputError(f"no input shards at {path}")
    if not files:
        raise MissingInputError(f"no input shards match {path}")
    return sorted(files), root


#: Object stores whose first path component is a bucket (`makedirs` under a missing one creates it).
BUCKET_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "abfs", "abfss", "az")


def missing_bucket(fs: fsspec.AbstractFileSystem, url: str, path: str) -> str:
    """The bucket of an object-store `url` when the store says it does not exist, else "" (also when it
    cannot tell: a forbidden or unreachable bucket fails on its own when it is written)."""
    if fsspec.utils.get_protocol(url) not in BUCKET_PROTOCOLS:
        return ""
    bucket = path.split("/", 1)[0]
    if isinstance(fs, s3fs.S3FileSystem):   # s3fs's exists() says False for a bucket it may not HEAD
        try:
            fs.call_s3("head_bucket", Bucket=bucket)
        except FileNotFoundError:
            return bucket
        except Exception:
            return ""
        return ""
    try:
        return "" if fs.exists(bucket) else bucket
    except Exception:
        return ""


def similar_buckets(fs: fsspec.AbstractFileSystem, bucket: str) -> list[str]:
    """Existing buckets whose names are close to `bucket` (none when listing buckets is not allowed)."""
    try:
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls("", detail=False)]
    except Exception:
        return []
    return difflib.get_close_matches(bucket, names, n=2)
