"""Model families, one module each behind one loader contract: `load(path, dtype, device, allow_pickle_weights)
-> adapter` (never remote code; safetensors only unless pickle weights are allowed), and `check_config(path)`:
what `load` needs of the config, checked without loading. `check_loadable` runs every check that files alone
can answer (config readable, family, its config and mask token, safety, intact weight files) in about a
second, so a driver refuses a broken checkpoint before it starts a cluster. `FAMILY_SPECS` (specs.py, torch-free) is
the one table of them: which engine kind drives a family's rows, which commit policy it runs by default, which
config.json model_types it loads, and where a block family's config keeps its block size.

| family            | module              | adapter         | engine                              |
|-------------------|---------------------|-----------------|-------------------------------------|
| `llada`           | `llada.py`          | ModelAdapter    | masked (decoder/masked)             |
| `dream`           | `dream.py`          | ModelAdapter    | masked                              |
| `native`          | `native.py`         | ModelAdapter    | masked                              |
| `diffusion_gemma` | `diffusion_gemma.py`| CanvasAdapter   | canvas (decoder/canvas)             |
| `llada2`          | `llada2.py`         | BlockAdapter    | block (decoder/block)               |
| `sdar`            | `sdar.py`           | BlockAdapter    | block                               |
| `fast_dllm_v2`    | `fast_dllm_v2.py`   | BlockAdapter    | block                               |

`model.family: auto` reads config.json's model_type (`llada`, `dream`, `diffusion_gemma`, `llada2_moe`, `sdar`,
`Fast_dLLM_Qwen`; anything else with a `mask_token_id` is `native`). Engines are built above this package
(decoder/build.py), so families never import an engine.
"""
from __future__ import annotations

import importlib

from decoder.families.checkpoint_files import check_weight_files, read_config_json
from decoder.families.checkpoint_safety import check_checkpoint
from decoder.families.specs import (FAMILIES, FAMILY_SPECS, FamilySpec, block_size, check_family_name,  # noqa: F401
                                    resolve_family)


#: model.dtype names (torch dtypes of the same name); this package's index imports no torch, so host stages can
#: read checkpoints' families without loading it
DTYPES = ("float32", "bfloat16", "float16")


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
