"""LLaDA as a bidirectional `LlamaForCausalLM`: its OLMo-layout checkpoint renamed onto stock Llama weights
(its remote code does not load on transformers 5). Mask id 126336, EOS 126081, EoT 126348 when its config
omits them."""
from __future__ import annotations

from typing import Any

import torch

from decoder.families.base import (ModelAdapter, as_ids, check_loaded, check_mask_id, eos_ids, read_config,
                                   weights_kwargs)
from decoder.placement import Placement

# LLaDA checkpoint names (OLMo layout) -> Llama names. Every pattern is anchored on the LLaDA prefix, so a
# renamed key never matches a later pattern (transformers 5 applies every matching renaming in turn).
_B = r"^model\.transformer\.blocks\.(\d+)\."
LLADA_KEY_MAPPING: dict[str, str] = {
    r"^model\.transformer\.wte": "model.embed_tokens",
    r"^model\.transformer\.ln_f": "model.norm",
    r"^model\.transformer\.ff_out": "lm_head",
    _B + "q_proj": r"model.layers.\1.self_attn.q_proj",
    _B + "k_proj": r"model.layers.\1.self_attn.k_proj",
    _B + "v_proj": r"model.layers.\1.self_attn.v_proj",
    _B + "attn_out": r"model.layers.\1.self_attn.o_proj",
    _B + "ff_proj": r"model.layers.\1.mlp.gate_proj",
    _B + "up_proj": r"model.layers.\1.mlp.up_proj",
    _B + "ff_out": r"model.layers.\1.mlp.down_proj",
    _B + "attn_norm": r"model.layers.\1.input_layernorm",
    _B + "ff_norm": r"model.layers.\1.post_attention_layernorm",
}

# LLaDA config flags the Llama mapping cannot express: (key, supported value when the key is absent, test).
_LLADA_FLAGS: tuple[tuple[str, Any, Any], ...] = (
    ("include_bias", False, lambda v: not v),
    ("include_qkv_bias", False, lambda v: not v),
    ("alibi", False, lambda v: not v),
    ("rope", True, lambda v: bool(v)),
    ("block_type", "llama", lambda v: v == "llama"),
    ("scale_logits", False, lambda v: not v),
    ("layer_norm_type", "rms", lambda v: v == "rms"),
    ("activation_type", "silu", lambda v: v in ("silu", "swiglu")),
    ("attention_layer_norm", False, lambda v: not v),
    ("input_emb_norm", False, lambda v: not v),
    ("clip_qkv", None, lambda v: v is None),
)


def _check_llada_flags(cfg: dict[str, Any], path: str) -> None:
    for key, default, ok in _LLADA_FLAGS:
        value = cfg.get(key, default)
        if not ok(value):
            raise ValueError(f"{path}: LLaDA config flag {key}={value!r} is not supported by the Llama mapping")


#: config.json keys `load` reads without a default.
_REQUIRED = ("d_model", "mlp_hidden_size", "n_layers", "n_heads", "max_sequence_length")


def check_config(path: str) -> dict:
    """What `load` needs of config.json, checked without loading (driver pre-flight and `load` alike): flags the
    Llama mapping supports, the sizes it reads, a mask id inside the vocabulary. Returns the config."""
    raw = read_config(path)
    _check_llada_flags(raw, path)
    missing = [k for k in _REQUIRED if raw.get(k) is None]
    if not (raw.get("embedding_size") or raw.get("vocab_size")):
        missing.append("vocab_size")
    if missing:
        raise ValueError(f"{path}: LLaDA config.json lacks {', '.join(missing)}")
    check_mask_id(path, _mask_id(raw), int(raw.get("embedding_size") or raw["vocab_size"]))
    return raw


def _mask_id(raw: dict[str, Any]) -> int:
    return int(raw.get("mask_token_id", 126336))  # LLaDA's <|mdm_mask|> when the config omits it


def end_ids(path: str, raw: dict | None = None) -> list[int]:
    """The ids that end an answer: <|endoftext|> (126081) and, with LLaDA's real vocabulary, <|eot_id|>
    (126348, the end of an Instruct turn), unless config.json names them."""
    raw = raw if raw is not None else check_config(path)
    vocab = int(raw.get("embedding_size") or raw["vocab_size"])
    eot = raw.get("eot_token_id", 126348 if vocab >= 126349 else None)
    return eos_ids(path, raw.get("eos_token_id", 126081), as_ids(eot))


def load(path: str, dtype: torch.dtype = torch.float32, placement: Placement = Placement("cpu"),
         allow_pickle_weights: bool = False) -> ModelAdapter:
    """LLaDA as a bidirectional `LlamaForCausalLM`: same block (RMSNorm, RoPE, SwiGLU), renamed weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    raw = check_config(path)
    vocab = int(raw.get("embedding_size") or raw["vocab_size"])
    mask_id = _mask_id(raw)
    n_heads = int(raw["n_heads"])
    cfg = LlamaConfig(
        hidden_size=int(raw["d_model"]),
        intermediate_size=int(raw["mlp_hidden_size"]),
        num_hidden_layers=int(raw["n_layers"]),
        num_attention_heads=n_heads,
        num_key_value_heads=int(raw.get("n_kv_heads") or n_heads),
        max_position_embeddings=int(raw["max_sequence_length"]),
        rope_theta=float(raw.get("rope_theta", 10000.0)),
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
        vocab_size=vocab,
        tie_word_embeddings=bool(raw.get("weight_tying", False)),
        is_causal=False,
        mask_token_id=mask_id,
        attention_bias=False,
        mlp_bias=False,
    )
    model, info = LlamaForCausalLM.from_pretrained(
        path, config=cfg, key_mapping=LLADA_KEY_MAPPING, dtype=dtype, output_loading_info=True,
        **placement.load_kwargs(), **weights_kwargs(allow_pickle_weights))
    check_loaded(info, path)
    eos_list = end_ids(path, raw)
    pad = raw.get("pad_token_id")
    return ModelAdapter(
        model=placement.place(model).eval(),
        mask_token_id=mask_id,
        eos_token_ids=eos_list,
        pad_token_id=int(pad) if pad is not None else eos_list[0],
        context_length=cfg.max_position_embeddings,
        shift_logits=False,
        family="llada",
    )
