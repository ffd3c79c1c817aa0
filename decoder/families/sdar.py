"""SDAR and TraDo (JetLM / Gen-Verse; `model_type: sdar`) as a stock `Qwen3ForCausalLM`: the same weight names,
block-causal attention over a cache of finished blocks, no logit shift.

Mask id 151669 (`<|MASK|>`) and block size 4 when config.json omits `mask_token_id` / `block_size`. The released
loop (`block_diffusion_generate`, `low_confidence_dynamic`): per step, sample every position of the block,
commit masks whose probability is above 0.85 when they meet the quota block/steps, else the quota's most
probable (its top-k runs over the whole block, so with fewer masks left than the quota it resamples decided
positions too: kept, as its users get it); a finished block holding a stop id ends the row.
"""
from __future__ import annotations

import torch

from decoder.families.base import check_mask_id, eos_ids, read_config
from decoder.families.block_base import (BlockAdapter, BlockLoop, block_adapter, config_int, load_stock,
                                         qwen_config)
from decoder.placement import Placement

MASK_ID = 151669
LOOP = BlockLoop(threshold_prob=0.85, steps_per_block=None, sampler="logits", stop="block", quota_over_block=True)
_SIZES = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
          "max_position_embeddings")


def check_config(path: str) -> dict:
    """What `load` needs of config.json, checked without loading: the sizes, a dense model (the MoE variant is
    not supported yet), no sliding window or rope scaling, a mask id inside the vocabulary, an EOS."""
    raw = read_config(path)
    for key in _SIZES:
        config_int(raw, key, path, "SDAR")
    if raw.get("num_experts"):
        raise ValueError(f"{path}: SDAR MoE checkpoints (num_experts={raw['num_experts']}) are not supported")
    if raw.get("use_sliding_window") or raw.get("rope_scaling"):
        raise ValueError(f"{path}: SDAR config with a sliding window or rope_scaling is not supported")
    check_mask_id(path, int(raw.get("mask_token_id", MASK_ID)), int(raw["vocab_size"]))
    end_ids(path, raw)
    return raw


def end_ids(path: str, raw: dict | None = None) -> tuple[int, ...]:
    """config.json's eos_token_id plus generation_config.json's (the chat turn end)."""
    raw = raw if raw is not None else read_config(path)
    return eos_ids(path, raw.get("eos_token_id"), [])


def stock_config(raw: dict):
    from transformers import Qwen3Config

    head_dim = int(raw.get("head_dim") or int(raw["hidden_size"]) // int(raw["num_attention_heads"]))
    return qwen_config(Qwen3Config, raw, head_dim=head_dim, attention_bias=bool(raw.get("attention_bias", False)))


def load(path: str, dtype: torch.dtype = torch.float32, placement: Placement = Placement("cpu"),
         allow_pickle_weights: bool = False) -> BlockAdapter:
    from transformers import Qwen3ForCausalLM

    raw = check_config(path)
    model = load_stock(Qwen3ForCausalLM, path, stock_config(raw), dtype, placement, allow_pickle_weights)
    return block_adapter(model, "sdar", raw, end_ids(path, raw), MASK_ID, LOOP, int(raw["max_position_embeddings"]))
