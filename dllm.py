"""The Python API of the dLLM batch decoder: a Ray Data processor for your own datasets, and in-process
decoding for notebooks and tests. Both run the pipeline's own stages (stages/processor.py), so outputs,
per-row errors and settings are those of `pipeline.py run` on the same prompts.

    import ray, dllm
    processor = dllm.build_processor("configs/default.yaml", postprocess=lambda r: {**r, "answer": r["output"]})
    processor(ray.data.read_parquet("prompts/")).write_parquet("outputs/")

    dllm.decode(["copy:abc=", {"id": "q1", "prompt": "rev:abc="}])    # -> [{"id", "output", ..., "error"}, ...]

A config is a YAML path, a list of them (layered in order), a nested dict, a `PipelineConfig`, or None
(configs/default.yaml); `overrides` adds dotted `key=value` strings on top. docs/python.md has the details.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import pyarrow as pa

from settings.loader import load_config
from settings.schema import PipelineConfig

__all__ = ["build_processor", "decode", "config"]

ConfigLike = str | Sequence[str] | dict | PipelineConfig | None


def config(cfg: ConfigLike = None, overrides: Sequence[str] = ()) -> PipelineConfig:
    """The typed pipeline config from any of the accepted forms (defaults first, as `pipeline.py` does)."""
    if isinstance(cfg, PipelineConfig):
        return load_config(None, list(overrides), mappings=[_as_dict(cfg)]) if overrides else cfg
    if isinstance(cfg, dict):
        return load_config(None, list(overrides), defaults=True, mappings=[cfg])
    return load_config(cfg, list(overrides), defaults=True)


def build_processor(cfg: ConfigLike = None, preprocess: Callable[[dict], dict] | None = None,
                    postprocess: Callable[[dict], dict] | None = None, *, overrides: Sequence[str] = (),
                    concurrency: int | tuple[int, int] | None = None, num_gpus: float | None = None,
                    batch_size: int | None = None, max_concurrent_batches: int | None = None,
                    continue_on_error: bool | None = None):
    """A callable `ray.data.Dataset -> ray.data.Dataset`: each row's `prompt` or `messages` (or what
    `input.*` maps, after `preprocess`) decoded; every input column kept, decode columns and `error` added,
    then `postprocess`. Sizing as in ray.data.llm: `concurrency` (decode actors, or a (min, max) range),
    `num_gpus` (per actor), `batch_size` (rows per Ray batch), `max_concurrent_batches` (per actor);
    `continue_on_error=False` fails the job on the first bad row (default: the row carries its error)."""
    from stages.processor import Processor
    extra = list(overrides)
    if concurrency is not None:
        lo, hi = concurrency if isinstance(concurrency, tuple) else (concurrency, concurrency)
        extra += [f"actors.min_actors={lo}", f"actors.max_actors={hi}"]
    for key, value in (("num_gpus", num_gpus), ("batch_rows", batch_size),
                       ("max_concurrent_batches", max_concurrent_batches)):
        if value is not None:
            extra.append(f"actors.{key}={value}")
    if continue_on_error is not None:
        extra.append(f"actors.on_error={'record' if continue_on_error else 'fail'}")
    return Processor(config(cfg, extra), preprocess, postprocess)


def decode(items: Iterable[str | dict], cfg: ConfigLike = None, *, overrides: Sequence[str] = ()) -> list[dict]:
    """Decode prompts (strings) or rows (dicts with `prompt` or `messages`, optional `id` and per-row
    settings) in this process, no Ray; one result dict per input row (per sample), in order, with `error`
    set instead of raising for a bad row. The model is loaded once per config and kept."""
    from stages.processor import decode_table
    rows = [{"prompt": x} if isinstance(x, str) else dict(x) for x in items]
    if not rows:
        return []
    keys = list(dict.fromkeys(k for r in rows for k in r))     # every row's fields (from_pylist reads the first's)
    table = pa.table({k: pa.array([r.get(k) for r in rows]) for k in keys})
    return decode_table(table, config(cfg, list(overrides))).to_pylist()


def _as_dict(cfg: PipelineConfig) -> dict[str, Any]:
    from omegaconf import OmegaConf
    return OmegaConf.to_container(OmegaConf.structured(cfg))
