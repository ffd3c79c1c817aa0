"""Run fingerprints: what made a committed shard, so a rerun can tell whether its outputs still hold.

A shard's fingerprint (stored in `_done/<shard>.json` by stages/write/sink.py) has two parts:
  config  every model/input/decode setting of the schema as flat dotted keys (settings/schema.py,
          decoder/config.py), read from the schema itself so no setting can be forgotten: fields marked speed
          only are left out, a policy's parameters are kept only while it runs; plus hashes of the model's
          config.json and of the TSPD controller;
  input   the input shard's identity: size, modification time or ETag, and a SHA-256 of its bytes when it
          is a local file (cheap); `changes` compares the hash when both sides have one.
Batch sizes, actors, Ray, storage and device settings are left out: they change speed, not what is decoded.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Iterator

from fsspec.implementations.local import LocalFileSystem

from decoder.families import resolve_family
from decoder.policies.registry import POLICIES, in_use
from settings.schema import PipelineConfig
from driver.redact import scrub

#: the config sections whose settings decide what a shard decodes (output, storage, actors, ray, run: how and
#: where a job runs, never what it decodes)
FINGERPRINTED_SECTIONS = ("model", "input", "decode")
HASH_LIMIT_BYTES = 256 * 1024 * 1024   # local shards up to this size get a content hash


def file_sha256(path: str) -> str | None:
    """SHA-256 of a local file, or None when it is not one."""
    path = path.removeprefix("file://")
    if "://" in path or not os.path.isfile(path):
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def schema_fields(cfg: PipelineConfig) -> Iterator[tuple[str, object, dataclasses.Field, str | None]]:
    """(dotted key, value, field, policy section) of every model/input/decode setting, nested sections walked;
    `policy section` names the policy a decode sub-config belongs to (decoder/policies/registry.py)."""
    sections = {spec.section: name for name, spec in POLICIES.items() if spec.section}

    def walk(prefix: str, node, policy: str | None):
        for f in dataclasses.fields(node):
            value, key = getattr(node, f.name), f"{prefix}.{f.name}"
            if dataclasses.is_dataclass(value):
                yield from walk(key, value, sections.get(f.name) if prefix == "decode" else policy)
            else:
                yield key, value, f, policy

    for name in FINGERPRINTED_SECTIONS:
        yield from walk(name, getattr(cfg, name), None)


def config_fingerprint(cfg: PipelineConfig) -> dict:
    """Flat {dotted key: value} of the settings that change a shard's outputs: every model/input/decode field
    but those the schema marks speed only (or the input's URL: the shard's identity stands for it), a policy's
    parameters only while that policy runs, `when_set` fields only away from their defaults; plus the hash of the
    model's config.json and of the TSPD controller in use."""
    m, d = cfg.model, cfg.decode
    running = set(in_use(list(d.policy), _family(cfg)))
    fp = {}
    for key, value, f, policy in schema_fields(cfg):
        how = f.metadata.get("fingerprint")
        if how in ("speed", "identity") or (policy is not None and policy not in running):
            continue
        if how == "when_set" and value == f.default:
            continue
        fp[key] = list(value) if isinstance(value, list) else value
    fp["model.config_sha256"] = file_sha256(os.path.join(m.path, "config.json"))
    if "tspd" in running:
        fp["decode.tspd.controller_sha256"] = file_sha256(d.tspd.controller_path)
    return fp


def _family(cfg: PipelineConfig) -> str | None:
    """The model's family, for its default commit policy (None for a remote checkpoint: not known here)."""
    if cfg.model.family != "auto":
        return cfg.model.family
    try:
        return resolve_family(cfg.model.path.removeprefix("file://"), "auto")
    except (OSError, ValueError):
        return None


WHEN_SET_DEFAULTS = {key: f.default for key, _, f, _ in schema_fields(PipelineConfig())
                     if f.metadata.get("fingerprint") == "when_set"}


def recorded(config: dict, key: str):
    """A setting as a stored fingerprint's config records it: a `when_set` key it lacks was at its default."""
    return config.get(key, WHEN_SET_DEFAULTS.get(key))


def input_identity(fs, path: str) -> dict:
    """Size, modification time / ETag and (local files up to HASH_LIMIT_BYTES) SHA-256 of one input shard."""
    info = fs.info(path)
    ident = {"size": info.get("size")}
    mtime = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if mtime is not None:
        ident["mtime"] = mtime if isinstance(mtime, (int, float)) else str(mtime)
    etag = info.get("ETag") or info.get("etag")
    if etag:
        ident["etag"] = str(etag).strip('"')
    if isinstance(fs, LocalFileSystem) and (ident["size"] or 0) <= HASH_LIMIT_BYTES:
        ident["sha256"] = file_sha256(path)
    return ident


def shard_fingerprint(cfg: PipelineConfig, fs, path: str) -> dict:
    """What the shard's marker records (credentials masked, driver/redact.py, so markers never hold one)."""
    return scrub({"config": config_fingerprint(cfg), "input": input_identity(fs, path)})


def changes(old: dict | None, new: dict) -> list[str]:
    """Keys whose values differ between a stored fingerprint and the current one ([] = the shard holds):
    config keys by name, `input` when the shard's content changed (by hash when both have one, else by
    size, ETag and modification time)."""
    if not old:
        return ["fingerprint (none recorded: made by an older version)"]
    oc, nc = old.get("config", {}), new["config"]
    diff = sorted(k for k in set(oc) | set(nc) if recorded(oc, k) != recorded(nc, k))
    oi, ni = old.get("input", {}), new["input"]
    if oi.get("sha256") and ni.get("sha256"):
        same = oi["sha256"] == ni["sha256"]
    else:
        same = all(oi.get(k) == ni.get(k) for k in ("size", "etag", "mtime"))
    return diff + ([] if same else ["input"])
