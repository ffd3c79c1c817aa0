"""Compatibility names: the model families moved to `decoder/families/` (one module per family).

Old imports (`from decoder.adapters import load_model, ModelAdapter, ...`) keep working; new code imports
from `decoder.families` directly.
"""
from __future__ import annotations

from decoder.families import DTYPES, FAMILIES, load_model, make_engine, resolve_family
from decoder.families.base import SPLIT_HEAD_CLASSES, ModelAdapter
from decoder.families.dream import load as load_dream
from decoder.families.llada import LLADA_KEY_MAPPING
from decoder.families.llada import load as load_llada
from decoder.families.native import load as load_native

__all__ = ["DTYPES", "FAMILIES", "LLADA_KEY_MAPPING", "SPLIT_HEAD_CLASSES", "ModelAdapter", "load_dream",
           "load_llada", "load_model", "load_native", "make_engine", "resolve_family"]
