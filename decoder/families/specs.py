"""The one table of model families (`FAMILY_SPECS`) and what can be read of a checkpoint's family from its
config.json alone; torch-free, so host stages (tokenizing, sizing answers) read it without loading torch."""
from __future__ import annotations

from dataclasses import dataclass

from decoder.families.checkpoint_files import read_config_json


@dataclass(frozen=True)
class FamilySpec:
    name: str
    engine: str                        # masked | canvas | block: the engine kind that drives its rows
    default_commit: str = "none"       # commit policy when decode.policy names none
    model_types: tuple[str, ...] = ()  # config.json model_type values `auto` resolves to this family (lower case)
    block_key: str = ""                # block families: the config.json key of the block size ...
    block_default: int = 0             # ... and its value when the config omits it


FAMILY_SPECS: dict[str, FamilySpec] = {s.name: s for s in (
    FamilySpec("llada", "masked", "none", ("llada",)),
    FamilySpec("dream", "masked", "dream", ("dream",)),
    FamilySpec("native", "masked", "none"),
    FamilySpec("diffusion_gemma", "canvas", "dgemma", ("diffusion_gemma",)),
    FamilySpec("llada2", "block", "block", ("llada2_moe",), "block_size", 32),
    FamilySpec("sdar", "block", "block", ("sdar",), "block_size", 4),
    FamilySpec("fast_dllm_v2", "block", "block", ("fast_dllm_qwen",), "bd_size", 32),
)}
FAMILIES = ("auto", *FAMILY_SPECS)


def check_family_name(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; valid: {', '.join(FAMILIES)}")


def resolve_family(path: str, family: str = "auto") -> str:
    """The loader for a checkpoint: explicit, or from config.json's model_type."""
    check_family_name(family)
    if family != "auto":
        return family
    model_type = str(read_config_json(path).get("model_type", "")).lower()
    return next((s.name for s in FAMILY_SPECS.values() if model_type in s.model_types), "native")


def block_length_of(family: str, config: dict) -> int:
    """A block family's block size from its config.json (0 for the other families)."""
    spec = FAMILY_SPECS[family]
    return int(config.get(spec.block_key) or spec.block_default) if spec.engine == "block" else 0


def block_size(path: str, family: str = "auto") -> int:
    """A checkpoint's block size if it is of a block-diffusion family (answers occupy whole blocks), else 0."""
    resolved = resolve_family(path, family)
    return block_length_of(resolved, read_config_json(path))
