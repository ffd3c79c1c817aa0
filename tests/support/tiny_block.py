"""Tiny random block-diffusion checkpoints in each family's original layout (config.json fields and weight names
as the hub ships them), built in code into a temp dir: SDAR (Qwen3 names) and Fast-dLLM v2 (Qwen2 names).

Vocab 96 (mask 95), hidden 64, 2 layers, 4 heads / 2 KV heads, head_dim 16. The weights are scaled up from
the random init so the logits are peaked enough for thresholds to matter; `eos` picks the EOS id.
"""
from __future__ import annotations

import json
import os

import torch
from safetensors.torch import save_file

VOCAB, MASK = 96, 95
SIZES = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6)


def _save(model, path: str, config: dict) -> str:
    os.makedirs(path, exist_ok=True)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.6 if "lm_head" in name else 0.2)
            elif "norm" in name:
                p.uniform_(0.8, 1.2)
            else:
                p.normal_(0.0, 0.05)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(path, "model.safetensors"))
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return path


def save_sdar(path: str, seed: int = 0, eos: int = 1, block_size: int = 4) -> str:
    from transformers import Qwen3Config, Qwen3ForCausalLM
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(Qwen3Config(**SIZES, head_dim=16, tie_word_embeddings=False))
    return _save(model, path, {
        "architectures": ["SDARForCausalLM"], "model_type": "sdar",
        "auto_map": {"AutoConfig": "configuration_sdar.SDARConfig", "AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM"},
        **SIZES, "head_dim": 16, "hidden_act": "silu", "rope_theta": 1000000, "rope_scaling": None,
        "attention_bias": False, "use_sliding_window": False, "sliding_window": None, "tie_word_embeddings": False,
        "block_size": block_size, "mask_token_id": MASK, "bos_token_id": eos, "eos_token_id": eos,
        "torch_dtype": "float32"})


def save_fast_dllm_v2(path: str, seed: int = 0, eos: int = 1, bd_size: int = 4) -> str:
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(**SIZES, tie_word_embeddings=False))
    return _save(model, path, {
        "architectures": ["Fast_dLLM_QwenForCausalLM"], "model_type": "Fast_dLLM_Qwen",
        "auto_map": {"AutoConfig": "configuration.Fast_dLLM_QwenConfig",
                     "AutoModelForCausalLM": "modeling.Fast_dLLM_QwenForCausalLM"},
        **SIZES, "hidden_act": "silu", "rope_theta": 1000000.0, "rope_scaling": None, "use_sliding_window": False,
        "sliding_window": None, "max_window_layers": 2, "tie_word_embeddings": False, "bd_size": bd_size,
        "mask_token_id": MASK, "bos_token_id": eos, "eos_token_id": eos, "torch_dtype": "float32"})
