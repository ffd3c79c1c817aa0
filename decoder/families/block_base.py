"""What the block-diffusion families share: the adapter the block engine drives, their loop descriptions, and
loading into a stock transformers class.

Block-diffusion models (LLaDA2.x, SDAR/TraDo, Fast-dLLM v2) attend block-causally and decode one block at a time
over an exact cache of the blocks before it. Each family module maps its hub config onto a stock causal-LM
class (never remote code), and describes its released decode loop as a `BlockLoop`; the engine
(decoder/block) reads nothing else of a family.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from decoder.families.base import ModelHandle, check_loaded, weights_kwargs
from decoder.families.specs import block_length_of
from decoder.placement import Placement


@dataclass(frozen=True)
class BlockLoop:
    """A family's released decode loop: its defaults (decode.block.* overrides them) and conventions."""
    threshold_prob: float              # commit candidates whose probability is above this ...
    steps_per_block: int | None        # ... if at least the quota block/steps per step are; else the quota's
                                       # most probable (None: a quota of one per step)
    sampler: str = "logits"            # logits | probs: the op order of sampling (decoder/block/sampling.py)
    sub_block_length: int | None = None   # candidates are the masks of the first unfinished sub-block
    shift_logits: bool = False         # position i reads the logits of position i - 1 (its own at 0)
    ar_block_start: bool = False       # a block after a whole one starts with the argmax of that one's last
                                       # position (and the prompt's, when it fills whole blocks)
    stop: str = "block"                # block: a finished block holding an EOS ends the row; eager: an EOS
                                       # committed with nothing masked before it ends the row at once
    quota_over_block: bool = False     # the quota's top-k is not limited to the masks left (SDAR's released
                                       # loop: with fewer masks than the quota, decided positions are resampled)
    editing_threshold_prob: float | None = None   # LLaDA2.1's token editing: decided answer tokens whose
                                       # candidate differs with a probability above this are replaced (None: off)
    max_post_steps: int = 16           # editing: steps a block may take after its last mask is decided


@dataclass
class BlockAdapter(ModelHandle):
    """A loaded block-diffusion model and the ids, block size and loop the block engine needs."""
    model: torch.nn.Module
    family: str
    mask_token_id: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    context_length: int
    block_length: int
    loop: BlockLoop

    @property
    def vocab_size(self) -> int:
        return self.model.get_output_embeddings().out_features

    @property
    def kv_layout(self) -> tuple[int, int, int]:
        """(layers, kv_heads, head_dim) of the model's cache."""
        c = self.model.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return c.num_hidden_layers, c.num_key_value_heads, head_dim

    @torch.inference_mode()
    def hidden(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, kv) -> torch.Tensor:
        """[b, Q, H] final hidden states of queries `ids` at `positions` over the cache view `kv`, with a 4-D
        additive mask (block-causal: decoder/block/kv.py) the stock model passes through unchanged."""
        return self.model.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=kv,
                                use_cache=True).last_hidden_state

    @torch.inference_mode()
    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """float32 logits [..., V] of hidden states [..., H]."""
        return self.model.get_output_embeddings()(hidden).float()


def block_adapter(model: torch.nn.Module, family: str, raw: dict, eos: tuple[int, ...], mask_id: int,
                  loop: BlockLoop, context_length: int) -> BlockAdapter:
    """A loaded family's adapter: ids from its config.json (the mask id and pad when it names them, else the
    family's mask id and its first EOS) and its block size (FAMILY_SPECS)."""
    pad = raw.get("pad_token_id")
    return BlockAdapter(model=model, family=family, mask_token_id=int(raw.get("mask_token_id", mask_id)),
                        eos_token_ids=eos, pad_token_id=int(pad) if pad is not None else eos[0],
                        context_length=context_length, block_length=block_length_of(family, raw), loop=loop)


def config_int(raw: dict, key: str, path: str, family: str) -> int:
    if raw.get(key) is None:
        raise ValueError(f"{path}: {family} config.json lacks {key}")
    return int(raw[key])


def qwen_config(cls, raw: dict, **extra: Any):
    """A stock Qwen2/Qwen3 config from a Qwen-based family's config.json (the same field names), without a
    sliding window (refused by the families' checks)."""
    heads = int(raw["num_attention_heads"])
    return cls(
        vocab_size=int(raw["vocab_size"]), hidden_size=int(raw["hidden_size"]),
        intermediate_size=int(raw["intermediate_size"]), num_hidden_layers=int(raw["num_hidden_layers"]),
        num_attention_heads=heads, num_key_value_heads=int(raw.get("num_key_value_heads") or heads),
        hidden_act=raw.get("hidden_act", "silu"), max_position_embeddings=int(raw["max_position_embeddings"]),
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
        rope_parameters={"rope_type": "default", "rope_theta": float(raw.get("rope_theta", 10000.0))},
        use_sliding_window=False, tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        pad_token_id=raw.get("pad_token_id"), bos_token_id=raw.get("bos_token_id"),
        eos_token_id=raw.get("eos_token_id"), **extra)


def load_stock(cls, path: str, config, dtype: torch.dtype, placement: Placement, allow_pickle_weights: bool,
               **kwargs: Any) -> torch.nn.Module:
    """`cls.from_pretrained` with the mapped config (never remote code), refusing missing or unused weights;
    built in `dtype` by from_pretrained (casting afterwards rounds non-persistent buffers such as rotary
    frequencies differently from the reference)."""
    model, info = cls.from_pretrained(path, config=config, dtype=dtype, output_loading_info=True,
                                      **placement.load_kwargs(), **weights_kwargs(allow_pickle_weights), **kwargs)
    check_loaded(info, path)
    return placement.place(model).eval()
