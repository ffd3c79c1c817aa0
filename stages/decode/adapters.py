"""Compatibility names: the model families moved to `stages/decode/families/` (one module per family).

Old imports (`from stages.decode.adapters import load_model, ModelAdapter, ...`) keep working; new code imports
from `stages.decode.families` directly.
"""
from __future__ import annotations

from stages.decode.families import DTYPES, FAMILIES, load_model, make_engine, resolve_family
from stages.decode.families.base import SPLIT_HEAD_CLASSES, ModelAdapter
from stages.decode.families.dream import load as load_dream
from stages.decode.families.llada import LLADA_KEY_MAPPING
from stages.decode.families.llada import load as load_llada
from stages.decode.families.native import load as load_native

__all__ = ["DTYPES", "FAMILIES", "LLADA_KEY_MAPPING", "SPLIT_HEAD_CLASSES", "ModelAdapter", "load_dream",
           "load_llada", "load_model", "load_native", "make_engine", "resolve_family"]
