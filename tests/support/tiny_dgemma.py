"""A tiny random DiffusionGemma built in code and saved to a temp dir (no artifacts committed).

Hidden 32, 2 layers (sliding then full attention, window 8), vocab 300, 4 experts top-2, canvas 8, a
one-layer vision tower (always built); eos 1, pad 0 in generation_config.json like the checkpoint's.
"""
from __future__ import annotations

import json
import os

import torch

VOCAB, CANVAS, WINDOW, EOS, PAD = 300, 8, 8, 1, 0


def tiny_config(**text_overrides):
    from transformers import DiffusionGemmaConfig
    text = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, head_dim=16, global_head_dim=16, num_experts=4, top_k_experts=2,
                moe_intermediate_size=32, sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention"],
                max_position_embeddings=512, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=2)
    text.update(text_overrides)
    vision = dict(model_type="gemma4_vision", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=2, head_dim=8)
    return DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=CANVAS, image_token_id=299,
                                boi_token_id=297, eoi_token_id=298)


def save_tiny(path: str, seed: int = 0, generation: dict | None = None) -> str:
    """Build, save (safetensors + config + generation_config.json) and return `path`."""
    from transformers import DiffusionGemmaForBlockDiffusion
    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(tiny_config()).eval()
    model.save_pretrained(path)
    gen = {"eos_token_id": EOS, "pad_token_id": PAD, **(generation or {})}
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump(gen, f)
    return path
