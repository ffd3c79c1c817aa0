"""Value checks of a loaded config: everything that can be known before Ray starts.

`check_values` is pure (names, ranges, policy composition; run by `load_config`); `check_files` looks at
the local filesystem (the model checkpoint as far as its files tell: config, family, mask token, intact
safetensors; the controller file; a local Ray's resources) and runs before a decode job starts Ray.
Each failure is one `ConfigError` line naming the key and its allowed values.
"""
from __future__ import annotations

import os
import re
import string

from decoder.config import DREAM_ALGS
from decoder.families import DTYPES, FAMILIES, FAMILY_SPECS, check_loadable, resolve_family
from decoder.families.checkpoint_safety import CheckpointRefused
from decoder.placement import STRATEGIES
from decoder.policies.registry import POLICIES, composition_error
from decoder.policies.schedules import SCHEDULES
from decoder.transfer import validate_schedule
from settings.schema import ConfigError, PipelineConfig

#: Kind of every decode policy, read from the one registry (decoder/policies/registry.py).
POLICY_KINDS = {name: spec.kind for name, spec in POLICIES.items()}
AGGREGATES = ("mean", "median", "min", "quantile", "quantile_linear")
PROGRESS_MODES = ("t_over_T", "t_over_T_minus_1")
OUTPUT_FORMATS = ("arrow", "jsonl", "parquet")
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _fail(key: str, msg: str) -> None:
    raise ConfigError(f"config error at {key}: {msg}")


def _one_of(key: str, value, allowed) -> None:
    if value not in allowed:
        _fail(key, f"{value!r} is not one of {', '.join(map(str, allowed))}")


def _at_least(key: str, value, low) -> None:
    if value < low:
        _fail(key, f"{value} must be >= {low}")


def check_storage(st) -> None:
    """Retry settings of object storage (stages/storage.py)."""
    _one_of("storage.retry_mode", st.retry_mode, ("standard", "adaptive", "legacy"))
    for key in ("max_attempts", "transfer_attempts", "commit_attempts"):
        _at_least(f"storage.{key}", getattr(st, key), 1)
    for key in ("connect_timeout_s", "read_timeout_s"):
        if getattr(st, key) <= 0:
            _fail(f"storage.{key}", f"{getattr(st, key)} must be > 0")
    _at_least("storage.commit_backoff_s", st.commit_backoff_s, 0)


def check_values(cfg: PipelineConfig) -> None:
    """Names, ranges and policy composition; raises ConfigError on the first bad key."""
    m, d, a = cfg.model, cfg.decode, cfg.actors
    _one_of("model.family", m.family, FAMILIES)
    _one_of("model.dtype", m.dtype, tuple(DTYPES))
    if not DEVICE.fullmatch(m.device):
        _fail("model.device", f"{m.device!r} is not one of auto, cpu, cuda, cuda:N")
    _one_of("model.device_map", m.device_map, ("auto", "none", *STRATEGIES))
    _one_of("input.format", cfg.input.format, ("auto", "jsonl", "json", "parquet"))
    _at_least("input.block_rows", cfg.input.block_rows, 0)
    if cfg.input.read_chunk_mb <= 0:
        _fail("input.read_chunk_mb", f"{cfg.input.read_chunk_mb} must be > 0")
    if cfg.input.max_line_mb <= 0:
        _fail("input.max_line_mb", f"{cfg.input.max_line_mb} must be > 0")
    for key in ("id_field", "prompt_field", "messages_field"):
        if not getattr(cfg.input, key):
            _fail(f"input.{key}", "must name a field")
    check_template(cfg.input.prompt_template)
    check_formats(cfg.output.format)
    _at_least("decode.samples_per_prompt", d.samples_per_prompt, 1)
    if d.samples_per_prompt > 1 and d.temperature == 0 and d.remasking != "random":
        _fail("decode.samples_per_prompt", f"{d.samples_per_prompt} samples with decode.temperature=0 (greedy) "
                                           f"would all be identical; set decode.temperature > 0")
    _one_of("actors.on_error", a.on_error, ("record", "fail"))
    if not 1 <= a.min_actors <= a.max_actors:
        _fail("actors.min_actors", f"need 1 <= min_actors ({a.min_actors}) <= max_actors ({a.max_actors})")
    for key in ("threads", "batch_rows", "max_concurrent_batches", "max_tasks_in_flight"):
        _at_least(f"actors.{key}", getattr(a, key), 1)
    _at_least("actors.num_gpus", a.num_gpus, 0)
    _at_least("actors.num_cpus", a.num_cpus, 0)
    _at_least("decode.max_batch_size", d.max_batch_size, 1)
    _at_least("decode.max_batch_tokens", d.max_batch_tokens, 1)
    check_storage(cfg.storage)
    if not 0.0 <= cfg.run.max_error_fraction <= 1.0:
        _fail("run.max_error_fraction", f"{cfg.run.max_error_fraction} is not in [0, 1]")
    try:
        if not {"dgemma", "block"} & set(d.policy):   # masked-family settings (canvases, the model's blocks)
            validate_schedule(d.gen_length, d.block_length, d.steps)
    except ValueError as e:
        raise ConfigError(f"config error at decode: {e}") from None
    check_policy(d.policy)
    _one_of("decode.sched.schedule", d.sched.schedule, tuple(s for s in SCHEDULES if s != "prophet"))
    _one_of("decode.sched.aggregate", d.sched.aggregate, AGGREGATES)
    _one_of("decode.sched.progress_mode", d.sched.progress_mode, PROGRESS_MODES)
    _one_of("decode.sched.region", d.sched.region, ("all", "tail", "custom"))
    _at_least("decode.sched.patience_steps", d.sched.patience_steps, 0)
    _at_least("decode.sched.region_start", d.sched.region_start, 0)
    _one_of("decode.dream.alg", d.dream.alg, DREAM_ALGS)
    _at_least("decode.dream.alg_temp", d.dream.alg_temp, 0)
    _at_least("decode.top_k", d.top_k, 0)
    if not 0.0 < d.top_p <= 1.0:
        _fail("decode.top_p", f"{d.top_p} is not in (0, 1]")
    if not 0.0 < d.dream.eps < 1.0:
        _fail("decode.dream.eps", f"{d.dream.eps} is not in (0, 1)")
    for key, value in (("decode.sched.quantile", d.sched.quantile), ("decode.fastdllm.threshold_prob",
                       d.fastdllm.threshold_prob), ("decode.tspd.threshold_prob", d.tspd.threshold_prob),
                       ("decode.tspd.ema_decay", d.tspd.ema_decay), ("decode.sched.min_progress",
                       d.sched.min_progress), ("decode.sched.max_change_ratio", d.sched.max_change_ratio)):
        if not 0.0 <= value <= 1.0:
            _fail(key, f"{value} is not in [0, 1]")
    _at_least("decode.ce.horizon", d.ce.horizon, 1)


def check_template(template: str) -> None:
    """input.prompt_template: a str.format template with named {field} placeholders only."""
    try:
        parts = list(string.Formatter().parse(template))
        names = [name for _, name, _, _ in parts if name]
    except ValueError as e:
        _fail("input.prompt_template", f"not a valid template: {e}")
    if template and not names:
        _fail("input.prompt_template", "names no {field}; e.g. 'Summarize:\\n{article}'")
    if any(name == "" for _, name, _, _ in parts if name is not None):
        _fail("input.prompt_template", "positional {} placeholders are not allowed; name the field, e.g. {article}")


def check_formats(formats: list[str]) -> None:
    """output.format: a non-empty list of arrow, jsonl, parquet, none repeated."""
    if not formats:
        _fail("output.format", "empty; use arrow, jsonl, parquet or a list of them")
    for f in formats:
        _one_of("output.format", f, OUTPUT_FORMATS)
    if len(set(formats)) < len(formats):
        _fail("output.format", f"{formats} names a format more than once")


def check_policy(names: list[str]) -> None:
    """decode.policy: known names, no repeats, at most one commit policy (exit policies and CE compose)."""
    if not names:
        _fail("decode.policy", "empty; use [none] for fixed steps, or e.g. [sched] / [fastdllm, sched]")
    error = composition_error(names)
    if error and "needs model.family" not in error:   # what the family can run: check_family, with the model
        _fail("decode.policy", error)


def check_family(cfg: PipelineConfig, path: str) -> None:
    """What the model's family can run: a canvas family (DiffusionGemma) takes dgemma + sched/prophet and no
    decode.cache / temperature / top-p / top-k; a block family (LLaDA2, SDAR, Fast-dLLM v2) takes block +
    sched/prophet and no decode.cache; dgemma and block need their families."""
    family, d = resolve_family(path, cfg.model.family), cfg.decode
    error = composition_error(list(d.policy), family)
    if error:
        _fail("decode.policy", f"{error}; this model's family is {family}")
    if FAMILY_SPECS[family].engine == "block" and d.cache != "none":
        _fail("decode.cache", f"{d.cache!r}: a block-diffusion family's block cache is exact and always on; use "
                              "none (decode.block.recompute=true turns it off)")
    if family != "diffusion_gemma":
        return
    if d.cache != "none":
        _fail("decode.cache", f"{d.cache!r}: DiffusionGemma's encoder cache is exact and always on; use none")
    if d.temperature > 0 or d.top_p < 1.0 or d.top_k > 0:
        _fail("decode.temperature", "temperature/top_p/top_k do not apply to DiffusionGemma: its schedule is "
                                    "decode.dgemma.t_min / t_max")


#: Where a relative path was resolved, for messages about a path that names nothing.
RELATIVE_PATHS = ("a relative path is resolved against the folder of the config file that sets it, the project "
                  "root for configs/, or on the command line against the folder the command was started from")
MESSAGE_CHARS = 400


def one_line(e: BaseException) -> str:
    """An exception's message as one line of at most MESSAGE_CHARS (a library's message may run to pages)."""
    text = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 3] + "..."


def _local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def check_files(cfg: PipelineConfig, local_ray: bool = False, loadable=check_loadable) -> None:
    """Files a decode job needs and, when it will start a local Ray (`local_ray`), that Ray's resources;
    raises ConfigError naming the key. `loadable(path, family, allow_pickle_weights)` checks the checkpoint
    (default: `check_loadable` in this process; the driver runs it in a child, driver/preflight.py)."""
    path = cfg.model.path
    if _local(path):
        path = path.removeprefix("file://")
        if not os.path.isdir(path):
            _fail("model.path", f"{path} is not a directory ({RELATIVE_PATHS})")
        if not os.path.isfile(os.path.join(path, "config.json")):
            _fail("model.path", f"{path} has no config.json (not a transformers checkpoint)")
        try:   # config, family, mask token, safety, safetensors headers: what loading would refuse, in a second
            loadable(path, cfg.model.family, cfg.model.allow_pickle_weights)
        except (CheckpointRefused, ValueError, OSError) as e:
            why = one_line(e)
            _fail("model.allow_pickle_weights" if "allow_pickle_weights" in why else "model.path",
                  why if path in why else f"{path}: {why}")
        check_family(cfg, path)
    controller = cfg.decode.tspd.controller_path
    if "tspd" in cfg.decode.policy and _local(controller) and not os.path.isfile(controller.removeprefix("file://")):
        _fail("decode.tspd.controller_path", f"{controller} does not exist (train one with `pipeline.py train-tspd`)")
    if local_ray:
        need_gpus = cfg.actors.min_actors * cfg.actors.num_gpus
        if need_gpus > cfg.ray.num_gpus:
            _fail("actors.num_gpus", f"{cfg.actors.min_actors} actor(s) x {cfg.actors.num_gpus} GPUs > "
                                     f"ray.num_gpus={cfg.ray.num_gpus} of the local Ray (the job would hang)")
        if cfg.actors.num_cpus >= cfg.ray.num_cpus:
            _fail("actors.num_cpus", f"{cfg.actors.num_cpus} >= ray.num_cpus={cfg.ray.num_cpus}: "
                                     f"read tasks would starve (the job would hang)")
        if cfg.model.device.startswith("cuda"):
            import torch
            if not torch.cuda.is_available():
                _fail("model.device", f"{cfg.model.device} but this machine has no CUDA device; use auto or cpu")
