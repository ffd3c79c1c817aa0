"""Loading the pipeline config: schema <- configs/default.yaml <- `--config` files (in the order given) <- dotted
`key=value` overrides (omegaconf), so an unknown key or a wrong type fails at load time with the key named,
before Ray starts; then the value checks (settings/checks.py). Relative paths are resolved per layer
(`resolve_paths`): in files under configs/ against the project root, in other config files against the file's
folder, on the command line (override values and the `--config` names themselves) against the current folder,
which `./run.sh` keeps as the caller's (pipeline.py, `CALLER_DIR_ENV`).
"""
from __future__ import annotations

import os
import typing
from dataclasses import fields, is_dataclass
from typing import Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from settings.checks import check_values
from settings.schema import ConfigError, PipelineConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "default.yaml")
#: Keys holding a local path or URL; relative ones are resolved when a layer is read.
PATH_KEYS = ("model.path", "input.url", "output.url", "decode.tspd.controller_path")


def load_config(path: str | Sequence[str] | None = None, overrides: list[str] | tuple[str, ...] = (),
                defaults: bool = False, mappings: Sequence[dict] = ()) -> PipelineConfig:
    """Schema <- configs/default.yaml (if `defaults`) <- YAML file(s) `path`, each on the one before <- nested
    dicts `mappings` (the Python API's config dicts; relative paths against the current folder) <- dotted
    `key=value` overrides, validated into real dataclasses (types here, values in settings/checks.py)."""
    paths = [path] if isinstance(path, str) else list(path or [])
    try:
        layers = [resolve_paths(_plain(OmegaConf.structured(PipelineConfig)), ROOT)]
        files = [os.path.abspath(f) for f in paths]
        if defaults and DEFAULT_CONFIG not in files[:1]:   # naming the default file first does not apply it twice
            files.insert(0, DEFAULT_CONFIG)
        for f in files:
            layers.append(resolve_paths(_plain(OmegaConf.load(f)), config_base(f)))
        for m in mappings:
            layers.append(resolve_paths(_plain(OmegaConf.create(m)), os.getcwd()))
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
        if overrides:
            layers.append(resolve_paths(_plain(OmegaConf.from_dotlist(list(overrides))), os.getcwd()))
        merged = OmegaConf.structured(PipelineConfig)
        for layer in layers:
            merged = OmegaConf.merge(merged, OmegaConf.create(normalise(layer, PipelineConfig)))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        msg = str(e.msg).splitlines()[0]
        raise ConfigError(f"config error at {key}: {msg}" if key else f"config error: {msg}") from None
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {e.filename or paths}") from None
    except (ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"config error: {e}") from None
    check_values(cfg)
    return cfg


def _plain(node) -> dict:
    out = OmegaConf.to_container(node, resolve=True)
    if out is None:
        return {}
    if not isinstance(out, dict):
        raise ConfigError(f"config error: a config file must hold a mapping, got {type(out).__name__}")
    return out


def config_base(path: str) -> str:
    """Folder that relative paths of a config file are resolved against: the project root for files in the
    project's configs/ folder (they are written relative to it), else the file's own folder."""
    folder = os.path.dirname(os.path.abspath(path))
    return ROOT if folder == os.path.join(ROOT, "configs") else folder


def resolve_paths(layer: dict, base: str) -> dict:
    """Make the relative local paths of PATH_KEYS in one layer absolute against `base` (URLs untouched)."""
    for key in PATH_KEYS:
        *parents, leaf = key.split(".")
        node = layer
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(leaf), str):
            value = node[leaf]
            if value and "://" not in value and not os.path.isabs(os.path.expanduser(value)):
                node[leaf] = os.path.normpath(os.path.join(base, value))
            elif value.startswith("~"):
                node[leaf] = os.path.expanduser(value)
    return layer


def normalise(layer, schema) -> dict:
    """Lenient spellings of one layer, against the schema's field types: an integral float (16.0) for an
    int field becomes an int; a bare string for a list field (`decode.policy=sched`, `tspd,ce`) a list."""
    if not isinstance(layer, dict) or not is_dataclass(schema):
        return layer
    hints = typing.get_type_hints(schema)
    out = dict(layer)
    for f in fields(schema):
        if f.name not in out:
            continue
        value, kind = out[f.name], hints[f.name]
        if is_dataclass(kind):
            out[f.name] = normalise(value, kind)
        elif kind is int and isinstance(value, float) and value.is_integer():
            out[f.name] = int(value)
        elif typing.get_origin(kind) is list and isinstance(value, str):
            out[f.name] = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
    return out


def to_yaml(cfg: PipelineConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
