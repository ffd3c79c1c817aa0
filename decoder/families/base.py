"""What every family module shares: the masked-LM adapter the mask engine drives, and config helpers.

The adapter contract (what an engine asks a family for) has two shapes. Masked families (LLaDA, Dream, native)
return a `ModelAdapter`: a new row is [prompt; masks] (decoder/masked/engine.py), a batch view is left padding
with per-row positions (padding.py), step logits are `logits` / `body` + `head`, and a commit writes tokens into
the row's sequence. Canvas families (DiffusionGemma) return a `CanvasAdapter` (families/diffusion_gemma.py):
a new row is an encoder cache, a commit is an encoder pass over the canvas, the batch view stacks the caches.
"""
from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from decoder.padding import position_ids

#: Classes whose logits are exactly `lm_head(model(...).last_hidden_state)` (no soft-capping or scaling).
SPLIT_HEAD_CLASSES = frozenset({"LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM"})


class CanvasFamily(Protocol):
    """What the canvas engine asks of a canvas family's adapter (families/diffusion_gemma.py implements it)."""
    canvas_length: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int

    def new_cache(self): ...                                          # a new row's (empty) encoder cache
    def encode(self, caches: list, tokens: list[list[int]]) -> None: ...   # prefill / commit, grouped
    def batch_view(self, caches: list): ...                           # stacked caches, masks, positions
    def decoder_hidden(self, view, canvas: torch.Tensor, soft: torch.Tensor) -> torch.Tensor: ...
    def head(self, hidden: torch.Tensor) -> torch.Tensor: ...         # step logits of a chunk [n, V]
    def soft_embeddings(self, processed: torch.Tensor) -> torch.Tensor: ...   # self-conditioning [n, H]


class ModelHandle:
    """Device and dtype of an adapter's `model` (both adapter shapes)."""
    model: torch.nn.Module

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


@dataclass
class ModelAdapter(ModelHandle):
    """A loaded denoiser plus the token ids and conventions the decoder needs to drive it."""

    model: torch.nn.Module
    mask_token_id: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    context_length: int
    shift_logits: bool
    family: str

    @property
    def split_head(self) -> bool:
        """Whether the output head can run apart from the body (projecting only the positions read)."""
        return type(self.model).__name__ in SPLIT_HEAD_CLASSES

    @property
    def vocab_size(self) -> int:
        return self.model.get_output_embeddings().out_features

    @torch.inference_mode()
    def answer_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: int) -> torch.Tensor:
        """[B, keep, H] final hidden states whose head output is the logits of the last `keep` positions
        (for shift families, the states one position earlier). Only for `split_head` models."""
        return self.window(self.body(input_ids, attention_mask), keep)

    @torch.inference_mode()
    def body(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor | None = None,
             cache=None) -> torch.Tensor:
        """[B, Q, H] final hidden states of `input_ids`; with `cache` (a transformers Cache) the queries also
        attend to its keys and the forward's own K/V are appended to it. `attention_mask` covers cache + Q.
        Only for `split_head` models."""
        if positions is None:
            positions = position_ids(attention_mask)
        return self.model.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                                past_key_values=cache, use_cache=cache is not None).last_hidden_state

    def window(self, hidden: torch.Tensor, keep: int) -> torch.Tensor:
        """The [B, keep, H] states whose head output is the logits of the last `keep` positions of a full
        forward's hidden states [B, L, H] (shift families: one position earlier)."""
        if not self.shift_logits:
            return hidden[:, -keep:]
        if keep < hidden.shape[1]:
            return hidden[:, -keep - 1:-1]
        return torch.cat([hidden[:, :1], hidden[:, :-1]], dim=1)

    @torch.inference_mode()
    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits [..., V] of hidden states [..., H] (model dtype)."""
        return self.model.get_output_embeddings()(hidden)

    @torch.inference_mode()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: int | None = None) -> torch.Tensor:
        """[B, keep or L, V] logits for the last `keep` positions (all when None).

        Positions count only real tokens so a left-padded row scores as it would alone; `logits_to_keep` skips the
        [B, L, V] projection of prompt positions the decoder never reads. For shift families (Dream) the logits at
        position j are the model's output at j - 1 (position 0 keeps its own), so one extra column is computed.
        """
        length = input_ids.shape[1]
        if keep is not None and not 1 <= keep <= length:
            raise ValueError(f"keep must be in [1, {length}], got {keep}")
        want = length if keep is None else keep
        need = min(want + 1, length) if self.shift_logits else want
        raw = self._forward(input_ids, attention_mask, need)
        if not self.shift_logits:
            return raw
        if need > want:  # the extra leading column is the output one position before the window
            return raw[:, :-1]
        return torch.cat([raw[:, :1], raw[:, :-1]], dim=1)

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, need: int) -> torch.Tensor:
        """Run the model and return the logits of the last `need` positions."""
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids(attention_mask),
        }
        if need < input_ids.shape[1] and _accepts_logits_to_keep(self.model):
            kwargs["logits_to_keep"] = need
        out = self.model(**kwargs).logits
        return out[:, -need:]


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    """Masked-LM heads (BERT-like) lack `logits_to_keep`; those project every position and are sliced after."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def read_config(path: str) -> dict[str, Any]:
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        return json.load(f)


def as_ids(value: Any) -> list[int]:
    """Config eos fields may be an int, a list, or null."""
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def eos_ids(path: str, config_eos: Any, extra: list[int]) -> tuple[int, ...]:
    """EOS from the config, plus generation_config.json's eos ids (chat models list EoT there), plus `extra`."""
    ids = as_ids(config_eos)
    gen_path = os.path.join(path, "generation_config.json")
    if os.path.exists(gen_path):
        with open(gen_path, encoding="utf-8") as f:
            ids += as_ids(json.load(f).get("eos_token_id"))
    ids += extra
    if not ids:
        raise ValueError(f"{path}: no eos_token_id in its config")
    return tuple(dict.fromkeys(ids))  # de-duplicated, order kept


def check_mask_id(path: str, mask_id: int, vocab_size: int) -> None:
    """A mask token the embedding table has a row for."""
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"{path}: mask_token_id {mask_id} is outside the vocabulary (vocab_size {vocab_size})")


def check_loaded(info: dict[str, Any], path: str) -> None:
    """Refuse a model with randomly initialised weights: a renaming that missed would otherwise pass silently."""
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ValueError(f"{path}: checkpoint lacks weights {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    unexpected = sorted(info.get("unexpected_keys") or [])
    if unexpected:
        raise ValueError(f"{path}: checkpoint weights were not used {unexpected[:8]}")


def weights_kwargs(allow_pickle_weights: bool) -> dict[str, Any]:
    """from_pretrained options of every loader: never remote code; safetensors only unless pickles are allowed
    (decoder/families/checkpoint_safety.py refuses what these would not load, with a message)."""
    return {"trust_remote_code": False, "use_safetensors": None if allow_pickle_weights else True}
