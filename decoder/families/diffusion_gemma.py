"""DiffusionGemma (`DiffusionGemmaForBlockDiffusion`, native in transformers 5): the canvas family.

No mask token: a causal encoder writes the prompt and every committed canvas into a per-row KV cache; a
bidirectional decoder reads that cache (never writes it) and denoises a canvas of `canvas_length` tokens from
uniform noise. This adapter is what the canvas engine asks of the family: `new_cache` (a row), `encode`
(prefill / commit, grouped over rows), `batch_view` (stacked caches + masks + positions), `decoder_hidden`
and `head` (one step's logits, chunkable) and `soft_embeddings` (self-conditioning). Self-conditioning is kept
as the [C, H] soft embeddings softmax(logits) @ E rather than the [C, V] logits HF keeps: the same input to
the decoder, V/H times smaller (93x at the checkpoint's shape). Attention runs on SDPA with our own bool
masks, so rows of different lengths and canvases share a forward. Text only: image tokens are refused.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch

from decoder.families.base import ModelHandle, as_ids, check_loaded, read_config, weights_kwargs
from decoder.families.canvas_kv import (LayerSpec, RowKV, StackedKV, decoder_masks, encoder_masks,
                                              split_new, stack)
from decoder.placement import Placement

#: HF's `DiffusionGemmaGenerationConfig` defaults, used where the checkpoint's generation_config.json is silent.
HF_SAMPLING_DEFAULTS = {"max_denoising_steps": 48, "t_min": 0.4, "t_max": 0.8, "stability_threshold": 1,
                        "confidence_threshold": 0.005, "entropy_bound": 0.1}


@dataclass
class BatchView:
    """The stacked caches of the rows in a forward, their decoder masks and [B] next positions."""
    kv: StackedKV
    masks: dict
    starts: torch.Tensor


@dataclass
class CanvasAdapter(ModelHandle):
    model: torch.nn.Module
    canvas_length: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    context_length: int
    image_token_ids: frozenset[int]
    sampling: dict = field(default_factory=lambda: dict(HF_SAMPLING_DEFAULTS))
    family: str = "diffusion_gemma"

    def __post_init__(self) -> None:
        text = self.model.config.text_config
        self.window = int(text.sliding_window)
        self.specs = [LayerSpec(t == "sliding_attention", int(text.per_layer_config[i].num_key_value_heads),
                                int(text.per_layer_config[i].head_dim)) for i, t in enumerate(text.layer_types)]
        self.layer_types = list(text.layer_types)
        self.softcap = float(text.final_logit_softcapping or 0.0)

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.text_config.vocab_size)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    def kv_bytes_per_token(self) -> int:
        """Cache bytes per encoded token of a full-attention layer stack (sliding layers are bounded)."""
        item = torch.empty(0, dtype=self.dtype).element_size()
        return sum(2 * s.kv_heads * s.head_dim * item for s in self.specs)

    def new_cache(self) -> RowKV:
        return RowKV.empty(self.specs, self.dtype, self.device)

    @torch.inference_mode()
    def encode(self, caches: list[RowKV], tokens: list[list[int]]) -> None:
        """One grouped encoder pass: row b's `tokens[b]` (its prompt, or a committed canvas) are appended to its
        cache at its next positions. Rows may have different cache lengths and token counts."""
        kv = stack(caches)
        lengths = torch.tensor([len(t) for t in tokens], device=self.device)
        width = int(lengths.max())
        ids = torch.full((len(tokens), width), self.pad_token_id, dtype=torch.long, device=self.device)
        for b, t in enumerate(tokens):
            ids[b, width - len(t):] = torch.tensor(t, dtype=torch.long, device=self.device)
        starts = torch.tensor([c.length for c in caches], device=self.device)
        positions = (starts[:, None] + torch.arange(width, device=self.device) - (width - lengths)[:, None]).clamp(min=0)
        masks = encoder_masks(kv, self.specs, starts, lengths, width, self.window)
        self.model.model.encoder.language_model(input_ids=ids, attention_mask=masks, position_ids=positions,
                                                past_key_values=kv)
        split_new(caches, kv, self.specs, lengths.tolist(), self.window)

    def batch_view(self, caches: list[RowKV]) -> BatchView:
        kv = stack(caches)
        starts = torch.tensor([c.length for c in caches], device=self.device)
        return BatchView(kv, decoder_masks(kv, self.specs, self.canvas_length), starts)

    @torch.inference_mode()
    def decoder_hidden(self, view: BatchView, canvas: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        """[B, C, H] final decoder states of canvases [B, C] given self-conditioning soft embeddings [B, C, H]
        (zeros on a canvas's first step: exactly the decoder's no-logits input)."""
        dec = self.model.model.decoder
        positions = view.starts[:, None] + torch.arange(canvas.shape[1], device=canvas.device)
        x = dec.self_conditioning(dec.embed_tokens(canvas), soft)
        rope = {t: dec.rotary_emb(x, positions, t) for t in set(self.layer_types)}
        for i, layer in enumerate(dec.layers):
            kind = self.layer_types[i]
            x = layer(x, position_embeddings=rope[kind], attention_mask=view.masks[kind], position_ids=positions,
                      past_key_values=view.kv)
        return dec.norm(x)

    @torch.inference_mode()
    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """float32 logits [n, V] of states [n, H], tanh-softcapped as the model's forward does."""
        logits = self.model.lm_head(hidden).to(torch.float32)
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    @torch.inference_mode()
    def soft_embeddings(self, processed: torch.Tensor) -> torch.Tensor:
        """[n, H] self-conditioning input of temperature-scaled logits [n, V]: HF casts them to the model dtype,
        the decoder takes softmax in float32, back to the model dtype, @ E, times the embedding scale."""
        emb = self.model.model.decoder.embed_tokens
        probs = processed.to(emb.weight.dtype).softmax(dim=-1, dtype=torch.float32).to(emb.weight.dtype)
        return torch.matmul(probs, emb.weight) * emb.embed_scale.to(emb.weight.dtype)


def _generation_config(path: str) -> dict:
    gen_path = os.path.join(path, "generation_config.json")
    if not os.path.exists(gen_path):
        return {}
    with open(gen_path, encoding="utf-8") as f:
        return json.load(f)


def sampling_defaults(gen: dict) -> dict:
    """The sampler settings of the checkpoint's generation_config.json, HF's defaults where it is silent."""
    out = dict(HF_SAMPLING_DEFAULTS)
    out.update({k: gen[k] for k in HF_SAMPLING_DEFAULTS if gen.get(k) is not None})
    bound = (gen.get("sampler_config") or {}).get("entropy_bound")
    if bound is not None:
        out["entropy_bound"] = bound
    return out


def check_config(path: str) -> tuple[dict, list[int]]:
    """What `load` needs of the config, checked without loading (driver pre-flight and `load` alike): a causal
    encoder and an EOS (no mask token: canvases start from noise). Returns (config.json, EOS ids)."""
    raw = read_config(path)
    text = raw.get("text_config") or {}
    if text.get("use_bidirectional_attention") == "all":
        raise ValueError(f"{path}: use_bidirectional_attention='all' (a bidirectional encoder) is not supported")
    eos = as_ids(_generation_config(path).get("eos_token_id")) or as_ids(text.get("eos_token_id"))
    if not eos:
        raise ValueError(f"{path}: no eos_token_id in generation_config.json or the text config")
    return raw, eos


def load(path: str, dtype: torch.dtype = torch.float32, placement: Placement = Placement("cpu"),
         allow_pickle_weights: bool = False) -> CanvasAdapter:
    """Load the checkpoint with the native class on SDPA (the engine's masks are SDPA bool masks)."""
    from transformers import DiffusionGemmaForBlockDiffusion

    raw, eos = check_config(path)
    text = raw.get("text_config") or {}
    model, info = DiffusionGemmaForBlockDiffusion.from_pretrained(path, dtype=dtype, attn_implementation="sdpa",
                                                                  output_loading_info=True,
                                                                  **placement.load_kwargs(),
                                                                  **weights_kwargs(allow_pickle_weights))
    check_loaded(info, path)
    gen = _generation_config(path)
    pad = gen.get("pad_token_id", text.get("pad_token_id"))
    images = {int(raw[k]) for k in ("image_token_id", "boi_token_id", "eoi_token_id") if raw.get(k) is not None}
    return CanvasAdapter(model=placement.place(model).eval(), canvas_length=int(raw.get("canvas_length") or 256),
                         eos_token_ids=tuple(dict.fromkeys(eos)), pad_token_id=int(pad if pad is not None else eos[0]),
                         context_length=int(text.get("max_position_embeddings") or 131072),
                         image_token_ids=frozenset(images), sampling=sampling_defaults(gen))
