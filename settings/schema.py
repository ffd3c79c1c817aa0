"""The pipeline's configuration schema: typed dataclasses omegaconf validates YAML and CLI overrides against.

Loading (layers, paths) lives in settings/loader.py, value checks in settings/checks.py. Every key is
documented in configs/default.yaml. A field whose metadata says `speed_only` changes how fast a job runs, never
what it decodes: the run fingerprint (driver/fingerprint.py) leaves exactly those out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from decoder.config import DecodeConfig, speed_only

#: input.url is left out of the run fingerprint: each shard's own identity (size, ETag/mtime, hash) stands for it
INPUT_IDENTITY = {"fingerprint": "identity"}


@dataclass
class ModelConfig:
    path: str = "embedded/taskmix/model"        # checkpoint directory (local path or a URL already synced locally)
    family: str = "auto"                # auto | llada | dream | native | diffusion_gemma (auto reads config.json's model_type)
    dtype: str = "float32"              # float32 | bfloat16 | float16
    device: str = speed_only("auto")                # auto (cuda when available) | cpu | cuda
    device_map: str = speed_only("auto")            # auto (split over the actor's GPUs when it has several) | none | balanced | balanced_low_0 | sequential
    chat_template: bool = True          # apply the tokenizer's chat template when it has one
    allow_pickle_weights: bool = speed_only(False)  # load pickle weights (pytorch_model.bin) when there are no safetensors


@dataclass
class InputConfig:
    url: str = field(default="embedded/taskmix/prompts/*.jsonl", metadata=INPUT_IDENTITY)   # fsspec URL, directory or glob: s3://, gs://, file://, memory://, path
    format: str = "auto"                # auto (by extension; .json: array or JSONL) | jsonl | json | parquet
    block_rows: int = speed_only(256)               # rows per Ray Data block after parsing (0 = blocks as read)
    read_chunk_mb: float = speed_only(16.0)         # a read task parses at most this much JSONL at a time (bounded memory)
    max_line_mb: float = speed_only(16.0)           # a longer JSONL line is that line's error (read past in bounded memory)
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
    create_bucket: bool = False         # create the object-store bucket of url when it does not exist (else exit 2)


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
    max_tasks_in_flight: int = 2        # decode tasks (input blocks) queued per actor; few = they finish in order
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
    kill_after_rows: int = 0            # SIGKILL the job once parts in flight hold this many rows
    kill_signal: str = "SIGKILL"        # what kill_after_rows sends the driver: SIGKILL (the writer dies too)
                                        # or SIGTERM (a graceful stop; the writer goes on)


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
    """A user's mistake found before any work: a bad config file, key, type or value (the message names the
    key), a resume conflict, an argument that names nothing. The only errors that exit 2."""


class MissingInputError(FileNotFoundError, ConfigError):
    """A path the config or the command line names holds nothing to read (no input shards, no run)."""
