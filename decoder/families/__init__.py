"""Model families, one module each behind one loader contract: `load(path, dtype, device, allow_pickle_weights)
-> adapter` (never remote code; safetensors only unless pickle weights are allowed), and `check_config(path)`:
what `load` needs of the config, checked without loading. `check_loadable` runs every check that files alone
can answer (config readable, family, its config and mask token, safety, intact weight files) in about a
second, so a driver refuses a broken checkpoint before it starts a cluster. `FAMILY_SPECS` is the one
table of them: which engine kind drives a family's rows and which commit policy it runs by default.

| family            | module              | adapter         | engine                              |
|-------------------|---------------------|-----------------|-------------------------------------|
| `llada`           | `llada.py`          | ModelAdapter    | masked (decoder/masked)             |
| `dream`           | `dream.py`          | ModelAdapter    | masked                              |
| `native`          | `native.py`         | ModelAdapter    | masked                              |
| `diffusion_gemma` | `diffusion_gemma.py`| CanvasAdapter   | canvas (decoder/canvas)             |

`model.family: auto` reads config.json's model_type (`llada`, `dream`, `diffusion_gemma`; anything else with a
`mask_token_id` is `native`). Engines are built above this package (decoder/build.py), so families never import
an engine.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch

from decoder.families.base import read_config
from decoder.families.checkpoint_files import check_weight_files, read_config_json
from decoder.families.checkpoint_safety import check_checkpoint


@dataclass(frozen=True)
class FamilySpec:
    name: str
    engine: str                        # masked | canvas: the engine kind that drives its rows
    default_commit: str = "none"       # commit policy when decode.policy names none
    model_types: tuple[str, ...] = ()  # config.json model_type values `auto` resolves to this family


FAMILY_SPECS: dict[str, FamilySpec] = {s.name: s for s in (
    FamilySpec("llada", "masked", "none", ("llada",)),
    FamilySpec("dream", "masked", "dream", ("dream",)),
    FamilySpec("native", "masked", "none"),
    FamilySpec("diffusion_gemma", "canvas", "dgemma", ("diffusion_gemma",)),
)}
FAMILIES = ("auto", *FAMILY_SPECS)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_family(path: str, family: str = "auto") -> str:
    """The loader for a checkpoint: explicit, or from config.json's model_type."""
    check_family_name(family)
    if family != "auto":
        return family
    model_type = str(read_config(path).get("model_type", "")).lower()
    return next((s.name for s in FAMILY_SPECS.values() if model_type in s.model_types), "native")


def check_family_name(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; valid: {', '.join(FAMILIES)}")


def check_loadable(path: str, family: str = "auto", allow_pickle_weights: bool = False) -> str:
    """Raise ValueError (CheckpointRefused, CheckpointIncomplete, or the family's own) for a local checkpoint
    folder that loading would refuse, as far as its files tell without loading weights; returns its family."""
    check_family_name(family)
    read_config_json(path)
    resolved = resolve_family(path, family)
    check_checkpoint(path, resolved, allow_pickle_weights)
    importlib.import_module(f"decoder.families.{resolved}").check_config(path)
    check_weight_files(path)
    return resolved


def end_token_ids(path: str, family: str = "auto") -> list[int]:
    """The ids that end an answer for a checkpoint, read from its config as its loader reads them (no weights)."""
    module = importlib.import_module(f"decoder.families.{resolve_family(path, family)}")
    if hasattr(module, "end_ids"):
        return list(module.end_ids(path))
    return list(module.check_config(path)[1])   # a canvas family: check_config gives (config, EOS ids)
