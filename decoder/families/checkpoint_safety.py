"""What loading a checkpoint may run: its weights as tensors, nothing else.

No code shipped with a checkpoint is ever executed: the loaders (decoder/families/,
stages/preprocess.py) pass `trust_remote_code=False`, and a checkpoint whose config.json asks for its own
code (`auto_map`) while transformers has no class for its `model_type` is refused here with a clear
message (LLaDA and Dream ask for remote code too, but are converted to stock classes, so they load).
Weights load from safetensors only: a checkpoint holding only pickle files (`pytorch_model.bin`, `*.pt`,
...) is refused unless the user opts in with `model.allow_pickle_weights=true` (a pickle can run code when
it is loaded). Pure file inspection: no torch, no transformers models.
"""
from __future__ import annotations

import json
import os

#: family names and model_type values the adapters convert to stock classes themselves (their auto_map is ignored);
#: tests/decoder/test_checkpoint_safety.py checks it covers every family of decoder/families.FAMILY_SPECS.
CONVERTED_TYPES = {"llada", "dream", "llada2", "llada2_moe", "sdar", "fast_dllm_v2", "fast_dllm_qwen"}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SAFE_SUFFIXES = (".safetensors",)


class CheckpointRefused(ValueError):
    """A checkpoint this pipeline will not load as it is; the message says why and what to do."""


def native_model_types() -> set[str]:
    """Every model_type transformers has a config class for (no remote code needed)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    return set(CONFIG_MAPPING_NAMES)


def remote_code_request(config: dict, family: str = "auto") -> str:
    """Why `config` (a config.json) would need remote code to load, or "" when it does not."""
    model_type = str(config.get("model_type", ""))
    if family in CONVERTED_TYPES or model_type.lower() in CONVERTED_TYPES or model_type in native_model_types():
        return ""
    auto_map = config.get("auto_map")
    if auto_map:
        shown = ", ".join(f"{k} -> {v}" for k, v in sorted(auto_map.items())) if isinstance(auto_map, dict) else auto_map
        return f"its config.json asks for remote code (auto_map: {shown}) and transformers has no class for " \
               f"model_type {model_type!r}"
    return ""


def weight_files(path: str) -> tuple[list[str], list[str]]:
    """(safetensors files, pickle weight files) in a checkpoint folder."""
    names = sorted(os.listdir(path))
    return ([n for n in names if n.endswith(SAFE_SUFFIXES)],
            [n for n in names if n.endswith(PICKLE_SUFFIXES) and not n.startswith("training_args")])


def check_checkpoint(path: str, family: str = "auto", allow_pickle_weights: bool = False) -> None:
    """Refuse (CheckpointRefused) a local checkpoint that needs remote code, or that has only pickle
    weights when they are not allowed."""
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    why = remote_code_request(config, family) if isinstance(config, dict) else "its config.json is not an object"
    if why:
        raise CheckpointRefused(
            f"{path}: refused: {why}. This pipeline never runs code shipped with a checkpoint "
            f"(trust_remote_code is never set); use a checkpoint of a transformers architecture, or one of "
            f"the families converted to stock classes (LLaDA, Dream, LLaDA2.x, SDAR / TraDo, Fast-dLLM v2)")
    safe, pickled = weight_files(path)
    if pickled and not safe and not allow_pickle_weights:
        raise CheckpointRefused(
            f"{path}: refused: its weights are pickle files only ({', '.join(pickled[:3])}), which can run code "
            f"when loaded; convert them to safetensors, or set model.allow_pickle_weights=true if you trust "
            f"this checkpoint")
