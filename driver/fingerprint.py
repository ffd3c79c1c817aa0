"""Run fingerprints: what made a committed shard, so a rerun can tell whether its outputs still hold.

A shard's fingerprint (stored in `_done/<shard>.json` by stages/write/sink.py) has two parts:
  config  the decode-relevant settings as flat dotted keys: model identity (path, family, dtype, a hash of
          its config.json), prompt formatting, decode settings, the policies and only the parameters of the
          policies in use, the TSPD controller's file hash;
  input   the input shard's identity: size, modification time or ETag, and a SHA-256 of its bytes when it
          is a local file (cheap); `changes` compares the hash when both sides have one.
Batch sizes, actors, Ray and device settings are left out: they change speed, not what is decoded.
"""
from __future__ import annotations

import hashlib
import os

from fsspec.implementations.local import LocalFileSystem

from settings.schema import PipelineConfig
from driver.redact import scrub

#: DecodeConfig keys that change what is decoded (batching limits do not); per-policy sections are added
#: only for the policies in use.
DECODE_KEYS = ("gen_length", "block_length", "steps", "remasking", "temperature", "seed", "policy",
               "stop_at_eos", "trace", "allow_longer", "samples_per_prompt")
#: InputConfig keys that change which rows and prompts are decoded.
INPUT_KEYS = ("format", "id_field", "prompt_field", "messages_field", "prompt_template", "keep_fields")
POLICY_SECTIONS = {"sched": "sched", "dream": "dream", "fastdllm": "fastdllm", "prophet": "prophet", "tspd": "tspd",
                   "ce": "ce", "dgemma": "dgemma"}
#: Settings added after fingerprints were first written: recorded only when set away from these values (which
#: decode as before they existed), so shards committed earlier still match.
LATER_KEYS = {"decode.top_p": 1.0, "decode.top_k": 0, "decode.sched.min_progress": 0.0,
              "decode.sched.patience_steps": 0, "decode.sched.max_change_ratio": 1.0, "decode.sched.region": "all",
              "decode.sched.region_start": 0, "decode.sched.region_end": -1, "decode.exit_fill": "sample"}
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


def config_fingerprint(cfg: PipelineConfig) -> dict:
    """Flat {dotted key: value} of the settings that change a shard's outputs."""
    m, d = cfg.model, cfg.decode
    fp = {"model.path": m.path, "model.family": m.family, "model.dtype": m.dtype,
          "model.config_sha256": file_sha256(os.path.join(m.path, "config.json")),
          "model.chat_template": m.chat_template}
    fp.update({f"input.{k}": getattr(cfg.input, k) for k in INPUT_KEYS})
    fp["input.keep_fields"] = list(cfg.input.keep_fields)
    fp.update({f"decode.{k}": getattr(d, k) for k in DECODE_KEYS + ("top_p", "top_k")})
    fp["decode.policy"] = list(d.policy)
    for name in [*d.policy, *_default_commit(cfg)]:
        section = POLICY_SECTIONS.get(name)
        if section:
            fp.update({f"decode.{section}.{k}": v for k, v in vars(getattr(d, section)).items()})
    for key, value in LATER_KEYS.items():
        if key in fp and fp[key] == value:
            del fp[key]
    if "tspd" in d.policy:
        fp["decode.tspd.controller_sha256"] = file_sha256(d.tspd.controller_path)
    if d.cache != "none":  # recorded only when on, so shards committed before the cache existed still match
        fp.update({"decode.cache": d.cache, "decode.cache_refresh_steps": d.cache_refresh_steps})
    return fp


def _default_commit(cfg: PipelineConfig) -> list[str]:
    """The commit policy the model's family brings when decode.policy names none (Dream checkpoints: dream)."""
    from settings.checks import POLICY_KINDS
    from decoder.policies.registry import FAMILY_COMMIT
    if any(POLICY_KINDS.get(n) == "commit" for n in cfg.decode.policy):
        return []
    family = cfg.model.family
    if family == "auto":
        try:
            from decoder.adapters import resolve_family
            family = resolve_family(cfg.model.path.removeprefix("file://"), "auto")
        except (OSError, ValueError):   # a remote checkpoint: its family is not known here
            return []
    return [FAMILY_COMMIT[family]] if family in FAMILY_COMMIT else []


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
    diff = sorted(k for k in set(oc) | set(nc) if oc.get(k) != nc.get(k))
    oi, ni = old.get("input", {}), new["input"]
    if oi.get("sha256") and ni.get("sha256"):
        same = oi["sha256"] == ni["sha256"]
    else:
        same = all(oi.get(k) == ni.get(k) for k in ("size", "etag", "mtime"))
    return diff + ([] if same else ["input"])
