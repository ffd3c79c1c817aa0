"""Models for the decoder tests: a scripted-logits model, tiny random Llama / Qwen2 models and the embedded
model in float64.

`ScriptedModel` looks like a transformers model to `ModelAdapter` (forward(input_ids, attention_mask,
position_ids, logits_to_keep) -> object with `.logits`) but returns logits computed per row by a Python
function of that row's own answer tokens, so scripts are independent of batching and padding. A row is
identified by its first prompt token (its "tag").

`tiny_lm` builds the tiny random bidirectional models (vocab 64, hidden 32, 2 layers, 4 heads, 2 KV heads,
context 128) that the adapter, engine, scheduler and KV-cache tests share; `embedded_adapter` loads the
embedded model, in float64 where batch shapes must not move an argmax through rounding.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

import torch

from decoder.families.base import ModelAdapter

V, PAD, MASK, EOS = 64, 0, 1, 2
SECOND = 3                       # runner-up token of scripted positions (never an answer token)

#: (tag, answer tokens [G] with MASK where undecided) -> answer logits [G, V]
Script = Callable[[int, torch.Tensor], torch.Tensor]


def peaked(tokens: list[int], top: list[float], margin: list[float] | float) -> torch.Tensor:
    """[G, V] logits: position j has `tokens[j]` at `top[j]`, SECOND at top[j] - margin[j], the rest 0."""
    g = len(tokens)
    margin = [margin] * g if isinstance(margin, (int, float)) else margin
    out = torch.zeros(g, V)
    for j in range(g):
        out[j, SECOND] = top[j] - margin[j]
        out[j, tokens[j]] = top[j]
    return out


class ScriptedModel(torch.nn.Module):
    def __init__(self, script: Script, prompt_lengths: dict[int, int]) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))   # gives the adapter a device and a dtype
        self.script, self.prompt_lengths = script, prompt_lengths
        self.batch_shapes: list[tuple[int, int]] = []       # input_ids shape of every forward

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0):
        self.batch_shapes.append(tuple(input_ids.shape))
        b_size, width = input_ids.shape
        out = torch.zeros(b_size, width, V)
        for b in range(b_size):
            real = input_ids[b][attention_mask[b].bool()]
            tag = int(real[0])
            answer = real[self.prompt_lengths[tag]:]
            out[b, width - len(answer):] = self.script(tag, answer)
        return SimpleNamespace(logits=out[:, -logits_to_keep:] if logits_to_keep else out)


def scripted_adapter(script: Script, prompt_lengths: dict[int, int], context_length: int = 64) -> ModelAdapter:
    return ModelAdapter(model=ScriptedModel(script, prompt_lengths), mask_token_id=MASK, eos_token_ids=(EOS,),
                        pad_token_id=PAD, context_length=context_length, shift_logits=False, family="native")


class NoMaskLogits(torch.nn.Module):
    """Wraps a model so the mask token is never its argmax (a trained denoiser never predicts it; a random
    one may, and the engine would then re-commit a mask)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config    # what the engine reads of a model besides its logits (K/V size)

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0):
        logits = self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            logits_to_keep=logits_to_keep).logits.clone()
        logits[..., MASK] = -1e4
        return SimpleNamespace(logits=logits)


#: Shape of the tiny random models (`tiny_lm`).
TINY_SHAPE = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128)


def tiny_lm(seed: int = 0, dtype: torch.dtype = torch.float32, family: str = "llama", **config) -> torch.nn.Module:
    """A random bidirectional `family` ("llama" or "qwen2") causal LM of TINY_SHAPE, seeded, in eval mode;
    `config` adds to or overrides the config (token ids, norms, ...)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[family]
    torch.manual_seed(seed)
    return model_cls(config_cls(**{**TINY_SHAPE, "is_causal": False, **config})).to(dtype).eval()


def tiny_llama_adapter(seed: int = 0, dtype: torch.dtype = torch.float64) -> ModelAdapter:
    """A random bidirectional Llama (vocab 64, hidden 32, 2 layers) behind the real adapter."""
    model = tiny_lm(seed, dtype, mask_token_id=MASK, eos_token_id=EOS, pad_token_id=PAD)
    return ModelAdapter(model=NoMaskLogits(model), mask_token_id=MASK, eos_token_ids=(EOS,), pad_token_id=PAD,
                        context_length=128, shift_logits=False, family="native")


def embedded_adapter(dtype: torch.dtype = torch.float32) -> ModelAdapter:
    """The embedded model (embedded/taskmix/model) on the CPU, loaded in float32, then cast to `dtype`."""
    from decoder.build import load_model
    from tests.support import EMBEDDED_MODEL
    adapter = load_model(str(EMBEDDED_MODEL), dtype="float32", device="cpu")
    adapter.model.to(dtype)
    return adapter
