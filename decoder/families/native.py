"""Any bidirectional transformers model whose config names `mask_token_id` (e.g. the embedded model)."""
from __future__ import annotations

from typing import Any

import torch

from decoder.families.base import ModelAdapter, check_loaded, check_mask_id, eos_ids, weights_kwargs
from decoder.placement import Placement


def _context_length(config: Any, path: str) -> int:
    for key in ("max_position_embeddings", "max_sequence_length", "n_positions"):
        value = getattr(config, key, None)
        if value:
            return int(value)
    raise ValueError(f"{path}: config has no max_position_embeddings / max_sequence_length / n_positions")


def check_config(path: str) -> Any:
    """What `load` needs of the config, checked without loading (driver pre-flight and `load` alike): a
    `mask_token_id` inside the vocabulary, bidirectional attention, a context length and an EOS. Returns the
    transformers config.

    Encoder architectures load as masked LMs; decoder-only ones must say `is_causal: false`, since a causal model
    cannot denoise a span it attends to only from the left.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    if getattr(config, "mask_token_id", None) is None:
        raise ValueError(f"{path}: config has no mask_token_id, so it is not a masked diffusion LM")
    if not _is_encoder(config) and getattr(config, "is_causal", True):
        raise ValueError(f"{path}: decoder-only config without is_causal=false is a causal LM, not a diffusion LM")
    vocab = getattr(config, "vocab_size", None)
    if vocab is not None:
        check_mask_id(path, int(config.mask_token_id), int(vocab))
    _context_length(config, path)
    eos_ids(path, config.eos_token_id, [])
    return config


def _is_encoder(config: Any) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES
    return config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def end_ids(path: str) -> list[int]:
    """The ids that end an answer: the config's eos_token_id (one or several)."""
    return eos_ids(path, check_config(path).eos_token_id, [])


def load(path: str, dtype: torch.dtype = torch.float32, placement: Placement = Placement("cpu"),
         allow_pickle_weights: bool = False) -> ModelAdapter:
    """Any bidirectional transformers model whose config names `mask_token_id` (e.g. the embedded model)."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    config = check_config(path)
    encoder = _is_encoder(config)
    auto = AutoModelForMaskedLM if encoder else AutoModelForCausalLM
    weights = {**weights_kwargs(allow_pickle_weights), **placement.load_kwargs()}
    try:
        model, info = auto.from_pretrained(path, dtype=dtype, output_loading_info=True, **weights)
    except ValueError as e:  # the causal-LM auto class does not know this config
        if encoder or "Unrecognized configuration class" not in str(e):
            raise
        model, info = AutoModelForMaskedLM.from_pretrained(path, dtype=dtype, output_loading_info=True, **weights)
    check_loaded(info, path)
    eos = eos_ids(path, config.eos_token_id, [])
    pad = config.pad_token_id
    return ModelAdapter(
        model=placement.place(model).eval(),
        mask_token_id=int(config.mask_token_id),
        eos_token_ids=eos,
        pad_token_id=int(pad) if pad is not None else eos[0],
        context_length=_context_length(config, path),
        shift_logits=False,
        family="native",
    )
