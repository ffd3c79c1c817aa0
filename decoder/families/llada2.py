"""LLaDA2.0 / 2.1 (inclusionAI, `model_type: llada2_moe`) as a stock `Glm4MoeForCausalLM`.

The architecture is GLM-4-MoE's (GQA with per-head q/k RMSNorm before a half-width rotary, sigmoid group-limited
top-k routing with a selection bias, shared experts, dense first layers): the config is mapped field by field,
the renamed weights go through `key_mapping`, and the fused `attention.query_key_value` is split into
q/k/v by one registered weight converter (process-wide; GLM checkpoints have no such key). Mask id 156895,
EOS 156892 and block 32 when config.json omits them; no logit shift.

The released loop (`generate()`, LLaDA2.0): per step, the block's argmax (or a sample) and its probability;
commit masks above 0.95 when they meet the quota block/steps, else the quota's most probable; a finished
block holding an EOS ends the row. Its own loop recomputes the whole prefix every step; here finished blocks
are cached exactly.
"""
from __future__ import annotations

import threading

import torch

from decoder.families.base import check_mask_id, eos_ids, read_config
from decoder.families.block_base import BlockAdapter, BlockLoop, block_adapter, config_int, load_stock
from decoder.placement import Placement

MASK_ID, EOS_ID = 156895, 156892
LOOP = BlockLoop(threshold_prob=0.95, steps_per_block=32, sampler="logits", stop="block")
_SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "num_experts",
          "num_experts_per_tok", "moe_intermediate_size", "intermediate_size")

#: LLaDA2 weight names -> Glm4Moe's (regexes, applied before the q/k/v split and the expert merge)
KEY_MAPPING = {r"^model\.word_embeddings\.": "model.embed_tokens.",
               r"\.attention\.dense\.": ".self_attn.o_proj.",
               r"\.attention\.query_layernorm\.": ".self_attn.q_norm.",
               r"\.attention\.key_layernorm\.": ".self_attn.k_norm.",
               r"\.attention\.query_key_value\.": ".self_attn.query_key_value.",
               r"\.mlp\.gate\.expert_bias$": ".mlp.gate.e_score_correction_bias"}
_registered = threading.Lock()
_done: list[bool] = []


def check_config(path: str) -> dict:
    """What `load` needs of config.json, checked without loading: the sizes, LLaDA2's fixed choices (no
    biases, sigmoid routing, q/k norm, no norm_head, head_dim x heads = hidden), a mask id in the vocabulary."""
    raw = read_config(path)
    for key in _SIZES:
        config_int(raw, key, path, "LLaDA2")
    heads, hidden = int(raw["num_attention_heads"]), int(raw["hidden_size"])
    problems = []
    if raw.get("use_bias", True) or raw.get("use_qkv_bias", False):
        problems.append("use_bias / use_qkv_bias must be false")
    if raw.get("score_function", "sigmoid") != "sigmoid":
        problems.append(f"score_function {raw['score_function']!r} (only sigmoid)")
    if not raw.get("use_qk_norm", True) or raw.get("norm_head", False):
        problems.append("use_qk_norm must be true and norm_head false")
    if int(raw.get("head_dim") or hidden // heads) * heads != hidden:
        problems.append("head_dim x num_attention_heads must equal hidden_size")
    if raw.get("rope_scaling") or raw.get("use_sliding_window"):
        problems.append("rope_scaling / sliding windows are not supported")
    if problems:
        raise ValueError(f"{path}: LLaDA2 config not supported: {'; '.join(problems)}")
    check_mask_id(path, int(raw.get("mask_token_id", MASK_ID)), int(raw["vocab_size"]))
    return raw


def end_ids(path: str, raw: dict | None = None) -> tuple[int, ...]:
    """config.json's eos_token_id, else LLaDA2's <|endoftext|> (156892, also its pad), plus generation_config's."""
    raw = raw if raw is not None else read_config(path)
    return eos_ids(path, raw.get("eos_token_id", raw.get("pad_token_id", EOS_ID)), [])


def stock_config(raw: dict):
    from transformers import Glm4MoeConfig

    hidden, heads = int(raw["hidden_size"]), int(raw["num_attention_heads"])
    head_dim = int(raw.get("head_dim") or hidden // heads)
    partial = raw.get("rotary_dim", None)
    partial = float(partial) / head_dim if partial else float(raw.get("partial_rotary_factor", 0.5))
    return Glm4MoeConfig(
        vocab_size=int(raw["vocab_size"]), hidden_size=hidden, intermediate_size=int(raw["intermediate_size"]),
        num_hidden_layers=int(raw["num_hidden_layers"]), num_attention_heads=heads,
        num_key_value_heads=int(raw.get("num_key_value_heads") or heads), hidden_act=raw.get("hidden_act", "silu"),
        max_position_embeddings=int(raw.get("max_position_embeddings", 16384)),
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)), tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        rope_parameters={"rope_type": "default", "rope_theta": float(raw.get("rope_theta", 10000.0)),
                         "partial_rotary_factor": partial},
        attention_bias=False, moe_intermediate_size=int(raw["moe_intermediate_size"]),
        num_experts_per_tok=int(raw["num_experts_per_tok"]), n_shared_experts=int(raw.get("num_shared_experts", 0)),
        n_routed_experts=int(raw["num_experts"]), routed_scaling_factor=float(raw.get("routed_scaling_factor", 1.0)),
        n_group=int(raw.get("n_group", 1)), topk_group=int(raw.get("topk_group", 1)),
        first_k_dense_replace=int(raw.get("first_k_dense_replace", 0)), norm_topk_prob=True, use_qk_norm=True,
        num_mtp_layers=0, pad_token_id=raw.get("pad_token_id"), eos_token_id=raw.get("eos_token_id"))


def register_qkv_split() -> None:
    """Teach transformers' glm4_moe loading to split a fused `self_attn.query_key_value` into q/k/v (each piece
    sized from its target parameter, so grouped-query shapes work); once per process."""
    with _registered:
        if _done:
            return
        from transformers.conversion_mapping import (get_checkpoint_conversion_mapping,
                                                     register_checkpoint_conversion_mapping)
        from transformers.core_model_loading import Split, WeightConverter
        register_checkpoint_conversion_mapping("glm4_moe", get_checkpoint_conversion_mapping("glm4_moe") + [
            WeightConverter(source_patterns="self_attn.query_key_value",
                            target_patterns=["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
                            operations=[Split(dim=0)])], overwrite=True)
        _done.append(True)


def load(path: str, dtype: torch.dtype = torch.float32, placement: Placement = Placement("cpu"),
         allow_pickle_weights: bool = False) -> BlockAdapter:
    from transformers import Glm4MoeForCausalLM

    raw = check_config(path)
    register_qkv_split()
    model = load_stock(Glm4MoeForCausalLM, path, stock_config(raw), dtype, placement, allow_pickle_weights,
                       key_mapping=KEY_MAPPING)
    return block_adapter(model, "llada2", raw, end_ids(path, raw), MASK_ID, LOOP,
                         int(raw.get("max_position_embeddings", 16384)))
