"""The pipeline's configuration schema and loader (omegaconf structured config).

`PipelineConfig` is the schema: YAML files under configs/ and dotted CLI overrides are merged onto it,
so an unknown key or a wrong type fails at load time with the key named, before Ray starts.
Every key is documented inline here and in configs/default.yaml.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from stages.decode.config import DecodeConfig


@dataclass
class ModelConfig:
    path: str = "embedded/model"        # checkpoint directory (local path or a URL already synced locally)
    family: str = "auto"                # auto | llada | dream | native (auto reads config.json's model_type)
    dtype: str = "float32"              # float32 | bfloat16 | float16
    device: str = "auto"                # auto (cuda when available) | cpu | cuda
    chat_template: bool = True          # apply the tokenizer's chat template when it has one


@dataclass
class InputConfig:
    url: str = "embedded/prompts/*.jsonl"   # fsspec URL, directory or glob: s3://, gs://, file://, memory://, path
    format: str = "auto"                # auto (by extension) | jsonl | parquet
    block_rows: int = 256               # rows per Ray Data block after parsing (0 = one block per shard)


@dataclass
class OutputConfig:
    url: str = "output/default"         # root for outputs/, traces/, errors/, _done/, _manifest.json
    parquet: bool = False               # also write Parquet copies of outputs and errors
    overwrite: bool = False             # ignore completed shards and rerun everything


@dataclass
class StorageConfig:
    endpoint_url: str = ""              # S3-compatible endpoint; empty = AWS_ENDPOINT_URL or the default
    anon: bool = False                  # anonymous access (public buckets)


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
class PipelineConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    actors: ActorConfig = field(default_factory=ActorConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    testing: TestingConfig = field(default_factory=TestingConfig)
    progress: bool = True               # progress bar and summary table on the terminal


class ConfigError(ValueError):
    """A bad config file, key, type or value; the message names the key."""


def load_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Schema <- YAML file <- dotted `key=value` overrides, validated into real dataclasses."""
    try:
        merged = OmegaConf.structured(PipelineConfig)
        if path:
            merged = OmegaConf.merge(merged, OmegaConf.load(path))
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
        if overrides:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        msg = str(e.msg).splitlines()[0]
        raise ConfigError(f"config error at {key}: {msg}" if key else f"config error: {msg}") from None
    except (ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"config error: {e}") from None
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    _check(cfg)
    return cfg


def _check(cfg: PipelineConfig) -> None:
    if cfg.actors.on_error not in ("record", "fail"):
        raise ConfigError(f"config error at actors.on_error: {cfg.actors.on_error!r} is not record or fail")
    if cfg.input.format not in ("auto", "jsonl", "parquet"):
        raise ConfigError(f"config error at input.format: {cfg.input.format!r} is not auto, jsonl or parquet")
    if cfg.input.block_rows < 0:
        raise ConfigError(f"config error at input.block_rows: {cfg.input.block_rows} is negative (0 = one block per shard)")
    if not 1 <= cfg.actors.min_actors <= cfg.actors.max_actors:
        raise ConfigError("config error at actors.min_actors: need 1 <= min_actors <= max_actors")
    from stages.decode.policies import POLICIES
    from stages.decode.transfer import validate_schedule
    try:
        validate_schedule(cfg.decode.gen_length, cfg.decode.block_length, cfg.decode.steps)
    except ValueError as e:
        raise ConfigError(f"config error at decode: {e}") from None
    unknown = [p for p in cfg.decode.policy if p not in POLICIES]
    if unknown:
        raise ConfigError(f"config error at decode.policy: unknown {unknown}; known: {sorted(POLICIES)}")


def to_yaml(cfg: PipelineConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
