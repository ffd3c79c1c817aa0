"""Dream as a bidirectional `Qwen2ForCausalLM` (its weight names already match); logits shift right by one.
Mask id 151666, pad 151643, EoT 151645 when its config omits them."""
from __future__ import annotations

import torch

from decoder.families.base import (ModelAdapter, as_ids, check_loaded, check_mask_id, eos_ids, read_config,
                                   weights_kwargs)
from decoder.placement import Placement


#: config.json keys `load` reads without a default.
_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "max_position_embeddings", "vocab_size")


def check_config(path: str) -> dict:
    """What `load` needs of config.json, checked without loading (driver pre-flight and `load` alike): no
    rope scaling, the sizes it reads, a mask id inside the vocabulary. Returns the config."""
    raw = read_config(path)
    if raw.get("rope_scaling"):
        raise ValueError(f"{path}: Dream config rope_scaling={raw['rope_scaling']!r} is not supported")
    missing = [k for k in _REQUIRED if raw.get(k) is None]
    if missing:
        raise ValueError(f"{path}: Dream config.json lacks {', '.join(missing)}")
    check_mask_id(path, int(raw.get("mask_token_id", 151666)), int(raw["vocab_size"]))
    return raw


def end_ids(path: str, raw: dict | None = None) -> list[int]:
    """The ids that end an answer: config.json's EOS (else Qwen2.5's <|endoftext|>, 151643) and, with the real
    Qwen2.5 vocabulary, <|im_end|> (151645, the end of an Instruct turn)."""
    raw = raw if raw is not None else check_config(path)
    eot = raw.get("eot_token_id", 151645 if int(raw["vocab_size"]) >= 151646 else None)
    return eos_ids(path, raw.get("eos_token_id", int(raw.get("pad_token_id", 151643))), as_ids(eot))


def load(path: str, dtype: torch.dtype = torch.float32, placement: Placement = Placement("cpu"),
         allow_pickle_weights: bool = False) -> ModelAdapter:
    """Dream as a bidirectional `Qwen2ForCausalLM` (its weight names already match); logits shift right by one."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    raw = check_config(path)
    vocab = int(raw["vocab_size"])
    mask_id = int(raw.get("mask_token_id", 151666))  # Dream's <|mask|> when the config omits it
    pad = int(raw.get("pad_token_id", 151643))  # Qwen2.5's <|endoftext|>
    cfg = Qwen2Config(
        hidden_size=int(raw["hidden_size"]),
        intermediate_size=int(raw["intermediate_size"]),
        num_hidden_layers=int(raw["num_hidden_layers"]),
        num_attention_heads=int(raw["num_attention_heads"]),
        num_key_value_heads=int(raw.get("num_key_value_heads") or raw["num_attention_heads"]),
        max_position_embeddings=int(raw["max_position_embeddings"]),
        rope_theta=float(raw.get("rope_theta", 10000.0)),
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
        vocab_size=vocab,
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        is_causal=False,
        use_sliding_window=False,
        mask_token_id=mask_id,
        pad_token_id=pad,
    )
    model, info = Qwen2ForCausalLM.from_pretrained(path, config=cfg, dtype=dtype, output_loading_info=True,
                                                   **placement.load_kwargs(),
                                                   **weights_kwargs(allow_pickle_weights))
    check_loaded(info, path)
    return ModelAdapter(
        model=placement.place(model).eval(),
        mask_token_id=mask_id,
        eos_token_ids=end_ids(path, raw),
        pad_token_id=pad,
        context_length=cfg.max_position_embeddings,
        shift_logits=True,
        family="dream",
    )
