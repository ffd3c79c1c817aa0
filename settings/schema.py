"""The pipeline's configuration schema and loader (omegaconf structured config).

`PipelineConfig` is the schema. Layers merge onto it in order: configs/default.yaml (unless
`defaults=False`), the `--config` file, then dotted CLI overrides, so an unknown key or a wrong type fails
at load time with the key named, before Ray starts. Value checks live in settings/checks.py.
Relative paths are resolved per layer (see `resolve_paths`). Every key is documented in configs/default.yaml.
"""
from __future__ import annotations

import os
import typing
from dataclasses import dataclass, field, fields, is_dataclass

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from decoder.config import DecodeConfig


@dataclass
class ModelConfig:
    path: str = "embedded/taskmix/model"        # checkpoint directory (local path or a URL already synced locally)
    family: str = "auto"                # auto | llada | dream | native | diffusion_gemma (auto reads config.json's model_type)
    dtype: str = "float32"              # float32 | bfloat16 | float16
    device: str = "auto"                # auto (cuda when available) | cpu | cuda
    chat_template: bool = True          # apply the tokenizer's chat template when it has one
    allow_pickle_weights: bool = False  # load pickle weights (pytorch_model.bin) when there are no safetensors


@dataclass
class InputConfig:
    url: str = "embedded/taskmix/prompts/*.jsonl"   # fsspec URL, directory or glob: s3://, gs://, file://, memory://, path
    format: str = "auto"                # auto (by extension; .json: array or JSONL) | jsonl | json | parquet
    block_rows: int = 256               # rows per Ray Data block after parsing (0 = blocks as read)
    read_chunk_mb: float = 16.0         # a read task parses at most this much JSONL at a time (bounded memory)
    max_line_mb: float = 16.0           # a longer JSONL line is that line's error (read past in bounded memory)
    id_field: str = "id"                # source field holding the row id (int or string)
    prompt_field: str = "prompt"        # source field holding the prompt text
    messages_field: str = "messages"    # source field holding chat messages (used when present)
    prompt_template: str = ""           # e.g. "Summarize:\n{article}": the prompt from {field}s (replaces prompt_field)
    keep_fields: list[str] = field(default_factory=list)  # fields passed through to outputs (empty: all not consumed)


@dataclass
class OutputConfig:
    url: str = "output/default"         # root for outputs/, traces/, errors/, _done/, _manifest.json
    format: list[str] = field(default_factory=lambda: ["arrow"])  # outputs/errors as arrow | jsonl | parquet
    parquet: bool = False               # also write Parquet copies of outputs and errors (= parquet in format)
    overwrite: bool = False             # ignore completed shards and rerun everything
    redo_changed: bool = False          # re-decode committed shards whose config or input changed; drop those
                                        #   not in the input (else such shards stop the run)


@dataclass
class StorageConfig:
    endpoint_url: str = ""              # S3-compatible endpoint; empty = AWS_ENDPOINT_URL or the default
    anon: bool = False                  # anonymous access (public buckets)
    max_attempts: int = 10              # attempts per S3 request (botocore retries: 5xx, SlowDown/throttling,
                                        #   refused or dropped connections, timeouts; jittered backoff <= 20 s)
    retry_mode: str = "standard"        # botocore retry mode: standard | adaptive (+ client-side rate limit) | legacy
    transfer_attempts: int = 3          # s3fs's attempts of a request with its body (a download cut mid-body)
    connect_timeout_s: float = 10.0     # S3 connection timeout per attempt
    read_timeout_s: float = 60.0        # S3 read timeout per attempt
    commit_attempts: int = 3            # attempts of a whole part write or shard commit after a storage error
                                        #   outlasting the request retries (idempotent: same names, marker last)
    commit_backoff_s: float = 5.0       # wait before the 2nd commit attempt, doubling after each


@dataclass
class ActorConfig:
    min_actors: int = 1                 # decode actor pool lower bound
    max_actors: int = 1                 # decode actor pool upper bound
    num_gpus: float = 0.0               # GPUs per decode actor (1 on a GPU cluster)
    num_cpus: float = 0.5               # CPUs reserved per decode actor (keep < all CPUs or reads starve)
    threads: int = 1                    # torch intra-op threads per actor
    batch_rows: int = 16                # rows per Ray Data batch sent to a decode actor
    max_concurrent_batches: int = 8     # Ray batches one actor decodes at once (feeds its slots)
    on_error: str = "record"            # record: failed rows go to errors/ | fail: stop the job


@dataclass
class RayConfig:
    address: str = "local"              # local = start a private Ray; auto / ray://... = join a cluster
    num_cpus: int = 4                   # logical CPUs for a local Ray (over-subscribed on purpose)
    num_gpus: int = 0                   # logical GPUs for a local Ray (tests use fake ones)
    object_store_mb: int = 512          # object store size for a local Ray
    no_progress_timeout_s: int = 900    # a stalled pipeline raises instead of hanging


@dataclass
class TestingConfig:
    """Fault-injection hooks used by the test suite; leave empty in real runs."""
    crash_on_id: str = ""               # decode actor calls os._exit(1) when it sees this id ...
    crash_marker: str = ""              # ... once: only while this local file does not exist yet
    fail_on_id: str = ""                # decode raises for the batch containing this id
    step_delay_s: float = 0.0           # sleep before every engine step (to interrupt a run mid-way)
    kill_after_commits: int = 0         # SIGKILL the job (driver, then the writer) once this many shards are
                                        # committed under the output root (single machine: the driver's pid)
    kill_before_marker: str = ""        # SIGKILL the job after this shard's files are merged, before its marker


@dataclass
class RunConfig:
    max_error_fraction: float = 0.0     # exit code 3 when error rows / rows exceed this (0: any error row)


@dataclass
class PipelineConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    actors: ActorConfig = field(default_factory=ActorConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    run: RunConfig = field(default_factory=RunConfig)
    testing: TestingConfig = field(default_factory=TestingConfig)
    progress: bool = True               # progress bar and summary table on the terminal


class ConfigError(ValueError):
    """A bad config file, key, type or value; the message names the key."""


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "default.yaml")
#: Keys holding a local path or URL; relative ones are resolved when a layer is read.
PATH_KEYS = ("model.path", "input.url", "output.url", "decode.tspd.controller_path")


def load_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = (),
                defaults: bool = False) -> PipelineConfig:
    """Schema <- configs/default.yaml (if `defaults`) <- YAML file <- dotted `key=value` overrides,
    validated into real dataclasses (types here, values in settings/checks.py)."""
    from settings.checks import check_values
    try:
        layers = [resolve_paths(_plain(OmegaConf.structured(PipelineConfig)), ROOT)]
        files = ([DEFAULT_CONFIG] if defaults else []) + ([path] if path else [])
        for f in dict.fromkeys(os.path.abspath(f) for f in files):   # the default file once, even if named
            layers.append(resolve_paths(_plain(OmegaConf.load(f)), config_base(f)))
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
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
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
