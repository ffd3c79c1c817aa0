"""Model adapters: load a masked diffusion LM checkpoint into a stock transformers class, without remote code.

This module owns everything family-specific about the denoiser: turning LLaDA's and Dream's on-disk
checkpoints into bidirectional `LlamaForCausalLM` / `Qwen2ForCausalLM` models (their remote code does not load
on transformers 5), loading any native bidirectional model whose config names a `mask_token_id`, and the one
`ModelAdapter.logits` call the decoder uses (padding-aware positions, Dream's right shift, and only projecting the
positions the decoder needs). It imports neither Ray nor anything else from the pipeline, so it is unit-testable
on CPU with tiny models.
"""
from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass
from typing import Any

import torch
from transformers.utils import logging as hf_logging

from stages.decode.checkpoint_safety import check_checkpoint
from stages.decode.padding import position_ids

FAMILIES = ("auto", "llada", "dream", "native")
#: Classes whose logits are exactly `lm_head(model(...).last_hidden_state)` (no soft-capping or scaling).
SPLIT_HEAD_CLASSES = frozenset({"LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM"})
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

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


@dataclass
class ModelAdapter:
    """A loaded denoiser plus the token ids and conventions the decoder needs to drive it."""

    model: torch.nn.Module
    mask_token_id: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    context_length: int
    shift_logits: bool
    family: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

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


def _read_config(path: str) -> dict[str, Any]:
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        return json.load(f)


def _as_ids(value: Any) -> list[int]:
    """Config eos fields may be an int, a list, or null."""
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _eos_ids(path: str, config_eos: Any, extra: list[int]) -> tuple[int, ...]:
    """EOS from the config, plus generation_config.json's eos ids (chat models list EoT there), plus `extra`."""
    ids = _as_ids(config_eos)
    gen_path = os.path.join(path, "generation_config.json")
    if os.path.exists(gen_path):
        with open(gen_path, encoding="utf-8") as f:
            ids += _as_ids(json.load(f).get("eos_token_id"))
    ids += extra
    if not ids:
        raise ValueError(f"{path}: no eos_token_id in its config")
    return tuple(dict.fromkeys(ids))  # de-duplicated, order kept


def _check_loaded(info: dict[str, Any], path: str) -> None:
    """Refuse a model with randomly initialised weights: a renaming that missed would otherwise pass silently."""
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ValueError(f"{path}: checkpoint lacks weights {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    unexpected = sorted(info.get("unexpected_keys") or [])
    if unexpected:
        raise ValueError(f"{path}: checkpoint weights were not used {unexpected[:8]}")


def _check_llada_flags(cfg: dict[str, Any], path: str) -> None:
    for key, default, ok in _LLADA_FLAGS:
        value = cfg.get(key, default)
        if not ok(value):
            raise ValueError(f"{path}: LLaDA config flag {key}={value!r} is not supported by the Llama mapping")


def _weights_kwargs(allow_pickle_weights: bool) -> dict[str, Any]:
    """from_pretrained options of every loader: never remote code; safetensors only unless pickles are allowed."""
    return {"trust_remote_code": False, "use_safetensors": None if allow_pickle_weights else True}


def load_llada(path: str, dtype: torch.dtype = torch.float32, device: str = "cpu",
               allow_pickle_weights: bool = False) -> ModelAdapter:
    """LLaDA as a bidirectional `LlamaForCausalLM`: same block (RMSNorm, RoPE, SwiGLU), renamed weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    raw = _read_config(path)
    _check_llada_flags(raw, path)
    vocab = int(raw.get("embedding_size") or raw["vocab_size"])
    mask_id = int(raw.get("mask_token_id", 126336))  # LLaDA's <|mdm_mask|> when the config omits it
    eos = raw.get("eos_token_id", 126081)  # LLaDA's <|endoftext|>
    # <|eot_id|> (126348) ends an Instruct turn; only meaningful with LLaDA's real vocabulary.
    eot = raw.get("eot_token_id", 126348 if vocab >= 126349 else None)
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
        **_weights_kwargs(allow_pickle_weights))
    _check_loaded(info, path)
    eos_ids = _eos_ids(path, eos, _as_ids(eot))
    pad = raw.get("pad_token_id")
    return ModelAdapter(
        model=model.to(device).eval(),
        mask_token_id=mask_id,
        eos_token_ids=eos_ids,
        pad_token_id=int(pad) if pad is not None else eos_ids[0],
        context_length=cfg.max_position_embeddings,
        shift_logits=False,
        family="llada",
    )


def load_dream(path: str, dtype: torch.dtype = torch.float32, device: str = "cpu",
               allow_pickle_weights: bool = False) -> ModelAdapter:
    """Dream as a bidirectional `Qwen2ForCausalLM` (its weight names already match); logits shift right by one."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    raw = _read_config(path)
    if raw.get("rope_scaling"):
        raise ValueError(f"{path}: Dream config rope_scaling={raw['rope_scaling']!r} is not supported")
    vocab = int(raw["vocab_size"])
    mask_id = int(raw.get("mask_token_id", 151666))  # Dream's <|mask|> when the config omits it
    pad = int(raw.get("pad_token_id", 151643))  # Qwen2.5's <|endoftext|>
    # <|im_end|> (151645) ends an Instruct turn; only meaningful with the real Qwen2.5 vocabulary.
    eot = raw.get("eot_token_id", 151645 if vocab >= 151646 else None)
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
                                                   **_weights_kwargs(allow_pickle_weights))
    _check_loaded(info, path)
    return ModelAdapter(
        model=model.to(device).eval(),
        mask_token_id=mask_id,
        eos_token_ids=_eos_ids(path, raw.get("eos_token_id", pad), _as_ids(eot)),
        pad_token_id=pad,
        context_length=cfg.max_position_embeddings,
        shift_logits=True,
        family="dream",
    )


def _context_length(config: Any, path: str) -> int:
    for key in ("max_position_embeddings", "max_sequence_length", "n_positions"):
        value = getattr(config, key, None)
        if value:
            return int(value)
    raise ValueError(f"{path}: config has no max_position_embeddings / max_sequence_length / n_positions")


def load_native(path: str, dtype: torch.dtype = torch.float32, device: str = "cpu",
                allow_pickle_weights: bool = False) -> ModelAdapter:
    """Any bidirectional transformers model whose config names `mask_token_id` (e.g. the embedded model).

    Encoder architectures load as masked LMs; decoder-only ones must say `is_causal: false`, since a causal model
    cannot denoise a span it attends to only from the left.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    if getattr(config, "mask_token_id", None) is None:
        raise ValueError(f"{path}: config has no mask_token_id, so it is not a masked diffusion LM")
    encoder = config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if not encoder and getattr(config, "is_causal", True):
        raise ValueError(f"{path}: decoder-only config without is_causal=false is a causal LM, not a diffusion LM")
    auto = AutoModelForMaskedLM if encoder else AutoModelForCausalLM
    weights = _weights_kwargs(allow_pickle_weights)
    try:
        model, info = auto.from_pretrained(path, dtype=dtype, output_loading_info=True, **weights)
    except ValueError as e:  # the causal-LM auto class does not know this config
        if encoder or "Unrecognized configuration class" not in str(e):
            raise
        model, info = AutoModelForMaskedLM.from_pretrained(path, dtype=dtype, output_loading_info=True, **weights)
    _check_loaded(info, path)
    eos_ids = _eos_ids(path, config.eos_token_id, [])
    pad = config.pad_token_id
    return ModelAdapter(
        model=model.to(device).eval(),
        mask_token_id=int(config.mask_token_id),
        eos_token_ids=eos_ids,
        pad_token_id=int(pad) if pad is not None else eos_ids[0],
        context_length=_context_length(config, path),
        shift_logits=False,
        family="native",
    )


def resolve_family(path: str, family: str = "auto") -> str:
    """The loader for a checkpoint: explicit, or from config.json's model_type."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; valid: {', '.join(FAMILIES)}")
    if family != "auto":
        return family
    model_type = str(_read_config(path).get("model_type", "")).lower()
    return {"llada": "llada", "dream": "dream"}.get(model_type, "native")


def load_model(path: str, family: str = "auto", dtype: str = "float32", device: str = "auto",
               allow_pickle_weights: bool = False) -> ModelAdapter:
    """Load a denoiser by family ("auto" reads config.json), dtype name and device ("auto": cuda when present).
    Refuses checkpoints that need remote code or hold only pickle weights (stages/decode/checkpoint_safety.py)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = resolve_family(path, family)
    check_checkpoint(path, resolved, allow_pickle_weights)
    loader = {"llada": load_llada, "dream": load_dream, "native": load_native}[resolved]
    hf_logging.disable_progress_bar()  # a per-actor "Loading weights" bar would break into the job's progress line
    return loader(path, dtype=DTYPES[dtype], device=device, allow_pickle_weights=allow_pickle_weights)
