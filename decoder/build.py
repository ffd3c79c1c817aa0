"""Loading a checkpoint and building the engine for it: the one place above both engines and the families.

`load_model` resolves the family (decoder/families), refuses what must not or cannot load (`check_loadable`:
checkpoint_safety, the family's config check, intact weight files) and returns the family's adapter; `make_engine` picks the engine kind the family's `FamilySpec` names, so callers
(the decode actor, benchmarks, the in-process API) stay family-agnostic.
"""
from __future__ import annotations

import importlib
import importlib.util

import torch
from transformers.utils import logging as hf_logging

from decoder.block.engine import BlockEngine
from decoder.canvas.engine import CanvasEngine
from decoder.config import DecodeConfig
from decoder.engine import Engine
from decoder.families import DTYPES, FAMILY_SPECS, check_loadable
from decoder.masked.engine import DecodeEngine
from decoder.placement import resolve_placement

ENGINES = {"masked": DecodeEngine, "canvas": CanvasEngine, "block": BlockEngine}


def load_model(path: str, family: str = "auto", dtype: str = "float32", device: str = "auto",
               allow_pickle_weights: bool = False, device_map: str | dict = "auto",
               offload_folder: str | None = None):
    """Load a model by family ("auto" reads config.json), dtype name and device ("auto": cuda when present),
    whole or split over this process's GPUs (`device_map`, decoder/placement.py).
    Refuses checkpoints that need remote code or hold only pickle weights (decoder/families/checkpoint_safety.py),
    and those whose config or weight files are incomplete (`check_loadable`)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    placement = resolve_placement(device, device_map, cuda, offload_folder)
    if placement.split and importlib.util.find_spec("accelerate") is None:
        raise RuntimeError("splitting a model over devices needs the accelerate package (pip install accelerate)")
    resolved = check_loadable(path, family, allow_pickle_weights)
    module = importlib.import_module(f"decoder.families.{resolved}")
    hf_logging.disable_progress_bar()  # a per-actor "Loading weights" bar would break into the job's progress line
    return module.load(path, dtype=getattr(torch, dtype), placement=placement, allow_pickle_weights=allow_pickle_weights)


def make_engine(adapter, cfg: DecodeConfig, **kwargs) -> Engine:
    """The engine for an adapter: the kind its family's FamilySpec names."""
    return ENGINES[FAMILY_SPECS[adapter.family].engine](adapter, cfg, **kwargs)
