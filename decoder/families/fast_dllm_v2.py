"""Fast-dLLM v2 (NVlabs, `model_type: Fast_dLLM_Qwen`) as a stock `Qwen2ForCausalLM`: the same weight names,
block-causal attention over a cache of finished blocks, **logits shifted by one** (position i reads the output
at i - 1), and each block after a whole one starts with an autoregressive token (the argmax of the previous
block's last position).

Mask id 151665 and block (`bd_size`) 32 when config.json omits them; EOS adds Qwen2.5's <|im_end|> (151645, its
stop token) to the config's. The released loop (`generate()` with the threshold of its evaluation scripts):
sub-blocks of 8 in order; per step, sample the current sub-block, commit its masks above 0.9 and always the
most probable one; a row stops as soon as a stop token is decoded with nothing masked before it.
"""
from __future__ import annotations

import torch

from decoder.families.base import as_ids, check_mask_id, eos_ids, read_config
from decoder.families.block_base import (BlockAdapter, BlockLoop, block_adapter, config_int, load_stock,
                                         qwen_config)
from decoder.placement import Placement

MASK_ID, STOP_ID = 151665, 151645
LOOP = BlockLoop(threshold_prob=0.9, steps_per_block=None, sampler="probs", sub_block_length=8, shift_logits=True,
                 ar_block_start=True, stop="eager")
_SIZES = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
          "max_position_embeddings")


def check_config(path: str) -> dict:
    """What `load` needs of config.json, checked without loading: the sizes, no sliding window or rope scaling,
    a mask id inside the vocabulary."""
    raw = read_config(path)
    for key in _SIZES:
        config_int(raw, key, path, "Fast-dLLM v2")
    if raw.get("use_sliding_window") or raw.get("rope_scaling"):
        raise ValueError(f"{path}: Fast-dLLM v2 config with a sliding window or rope_scaling is not supported")
    check_mask_id(path, int(raw.get("mask_token_id", MASK_ID)), int(raw["vocab_size"]))
    return raw


def end_ids(path: str, raw: dict | None = None) -> tuple[int, ...]:
    raw = raw if raw is not None else read_config(path)
    stop = STOP_ID if int(raw["vocab_size"]) > STOP_ID else None
    return eos_ids(path, raw.get("eos_token_id"), as_ids(stop))


def stock_config(raw: dict):
    from transformers import Qwen2Config

    return qwen_config(Qwen2Config, raw)


def load(path: str, dtype: torch.dtype = torch.float32, placement: Placement = Placement("cpu"),
         allow_pickle_weights: bool = False) -> BlockAdapter:
    from transformers import Qwen2ForCausalLM

    raw = check_config(path)
    model = load_stock(Qwen2ForCausalLM, path, stock_config(raw), dtype, placement, allow_pickle_weights)
    return block_adapter(model, "fast_dllm_v2", raw, end_ids(path, raw), MASK_ID, LOOP,
                         int(raw["max_position_embeddings"]))
