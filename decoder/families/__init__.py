"""Model families, one module each behind one loader contract: `load(path, dtype, device, allow_pickle_weights)
-> adapter` (never remote code; safetensors only unless pickle weights are allowed).

| family            | module              | adapter         | engine                          |
|-------------------|---------------------|-----------------|---------------------------------|
| `llada`           | `llada.py`          | ModelAdapter    | DecodeEngine (masked diffusion) |
| `dream`           | `dream.py`          | ModelAdapter    | DecodeEngine                    |
| `native`          | `native.py`         | ModelAdapter    | DecodeEngine                    |
| `diffusion_gemma` | `diffusion_gemma.py`| CanvasAdapter   | CanvasEngine (block diffusion)  |

`model.family: auto` reads config.json's model_type (`llada`, `dream`, `diffusion_gemma`; anything else with a
`mask_token_id` is `native`). `make_engine` picks the engine the adapter's shape needs, so callers (the decode
actor, benchmarks) stay family-agnostic.
"""
from __future__ import annotations

import importlib

import torch
from transformers.utils import logging as hf_logging

from decoder.families.checkpoint_safety import check_checkpoint
from decoder.families.base import read_config

FAMILIES = ("auto", "llada", "dream", "native", "diffusion_gemma")
#: families whose rows are canvases over an encoder cache (no mask token): the canvas engine drives them
CANVAS_FAMILIES = frozenset({"diffusion_gemma"})
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_MODEL_TYPES = {"llada": "llada", "dream": "dream", "diffusion_gemma": "diffusion_gemma"}


def resolve_family(path: str, family: str = "auto") -> str:
    """The loader for a checkpoint: explicit, or from config.json's model_type."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; valid: {', '.join(FAMILIES)}")
    if family != "auto":
        return family
    model_type = str(read_config(path).get("model_type", "")).lower()
    return _MODEL_TYPES.get(model_type, "native")


def load_model(path: str, family: str = "auto", dtype: str = "float32", device: str = "auto",
               allow_pickle_weights: bool = False):
    """Load a model by family ("auto" reads config.json), dtype name and device ("auto": cuda when present).
    Refuses checkpoints that need remote code or hold only pickle weights (decoder/families/checkpoint_safety.py)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = resolve_family(path, family)
    check_checkpoint(path, resolved, allow_pickle_weights)
    module = importlib.import_module(f"decoder.families.{resolved}")
    hf_logging.disable_progress_bar()  # a per-actor "Loading weights" bar would break into the job's progress line
    return module.load(path, dtype=DTYPES[dtype], device=device, allow_pickle_weights=allow_pickle_weights)


def make_engine(adapter, cfg, **kwargs):
    """The engine for an adapter: the canvas engine for canvas families, the masked-diffusion engine otherwise."""
    if adapter.family in CANVAS_FAMILIES:
        from decoder.canvas.engine import CanvasEngine
        return CanvasEngine(adapter, cfg, **kwargs)
    from decoder.masked.engine import DecodeEngine
    return DecodeEngine(adapter, cfg, **kwargs)
