"""Offline tests for the model families (decoder/families) on tiny models (vocab 64, hidden 32, 2 layers, 4 heads).

Checkpoints are written in tmp dirs in each family's on-disk layout (native transformers, LLaDA's OLMo names and
config, Dream's model_type), loaded through the adapters and compared with the stock model they came from.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaForCausalLM, Qwen2ForCausalLM

from decoder.families.base import ModelAdapter
from decoder.families.dream import load as load_dream
from decoder.families.llada import load as load_llada
from decoder.build import load_model
from decoder.padding import left_pad
from tests.support.models import TINY_SHAPE, tiny_lm

V, H, FF, LAYERS, HEADS, CTX = (TINY_SHAPE[k] for k in ("vocab_size", "hidden_size", "intermediate_size",
                                                        "num_hidden_layers", "num_attention_heads",
                                                        "max_position_embeddings"))
MASK, EOS = 63, 62


# ---------------------------------------------------------------- checkpoint builders


def tiny_llama(seed: int = 0, **overrides) -> LlamaForCausalLM:
    return tiny_lm(seed, rms_norm_eps=1e-5, **{"mask_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, **overrides})


def llada_name(key: str) -> str:
    """Inverse of the adapter's key mapping: Llama weight name -> LLaDA (OLMo) weight name."""
    top = {"model.embed_tokens.": "model.transformer.wte.", "model.norm.": "model.transformer.ln_f.",
           "lm_head.": "model.transformer.ff_out."}
    for llama, llada in top.items():
        if key.startswith(llama):
            return llada + key[len(llama):]
    block = {"self_attn.q_proj": "q_proj", "self_attn.k_proj": "k_proj", "self_attn.v_proj": "v_proj",
             "self_attn.o_proj": "attn_out", "mlp.gate_proj": "ff_proj", "mlp.up_proj": "up_proj",
             "mlp.down_proj": "ff_out", "input_layernorm": "attn_norm", "post_attention_layernorm": "ff_norm"}
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
    assert m and m.group(2) in block, key
    return f"model.transformer.blocks.{m.group(1)}.{block[m.group(2)]}.{m.group(3)}"


def llada_config(tied: bool, **overrides) -> dict:
    """A config.json shaped like LLaDA-8B's, scaled down."""
    return {
        "model_type": "llada", "architectures": ["LLaDAModelLM"], "d_model": H, "n_heads": HEADS,
        "n_kv_heads": 2, "n_layers": LAYERS, "mlp_hidden_size": FF, "mlp_ratio": 2, "max_sequence_length": CTX,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "embedding_size": V, "vocab_size": V,
        "weight_tying": tied, "mask_token_id": MASK, "eos_token_id": EOS, "pad_token_id": EOS,
        "include_bias": False, "include_qkv_bias": False, "alibi": False, "rope": True, "block_type": "llama",
        "scale_logits": False, "layer_norm_type": "rms", "activation_type": "silu",
        "attention_layer_norm": False, "input_emb_norm": False, **overrides,
    }


def write_llada(path: Path, model: LlamaForCausalLM, tied: bool, drop: str | None = None, **overrides) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    state = {llada_name(k): v.detach().clone().contiguous() for k, v in model.state_dict().items()
             if not (tied and k == "lm_head.weight")}
    if drop is not None:
        del state[drop]
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(llada_config(tied, **overrides)))
    return path


def tiny_qwen2(seed: int = 1) -> Qwen2ForCausalLM:
    return tiny_lm(seed, family="qwen2", rms_norm_eps=1e-5, use_sliding_window=False)


def write_dream(path: Path, model: Qwen2ForCausalLM) -> Path:
    """save_pretrained, then a config.json shaped like Dream-v0's (model_type "Dream", top-level rope_theta)."""
    model.save_pretrained(path)
    (path / "config.json").write_text(json.dumps({
        "model_type": "Dream", "architectures": ["DreamModel"], "hidden_size": H, "intermediate_size": FF,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": 2,
        "max_position_embeddings": CTX, "rope_theta": 10000.0, "rope_scaling": None, "rms_norm_eps": 1e-5,
        "vocab_size": V, "tie_word_embeddings": False, "mask_token_id": MASK, "pad_token_id": 0,
        "eos_token_id": EOS, "use_sliding_window": False, "sliding_window": None, "hidden_act": "silu",
    }))
    return path


# ---------------------------------------------------------------- shared fixtures


@pytest.fixture(scope="module")
def native(tmp_path_factory) -> tuple[LlamaForCausalLM, ModelAdapter]:
    ref = tiny_llama(mask_token_id=MASK, eos_token_id=EOS)
    path = tmp_path_factory.mktemp("native")
    ref.save_pretrained(path)
    return ref, load_model(str(path), device="cpu")


@pytest.fixture(scope="module")
def llada(tmp_path_factory) -> tuple[LlamaForCausalLM, ModelAdapter]:
    ref = tiny_llama(seed=2)
    return ref, load_model(str(write_llada(tmp_path_factory.mktemp("llada"), ref, tied=False)), device="cpu")


@pytest.fixture(scope="module")
def dream(tmp_path_factory) -> tuple[Qwen2ForCausalLM, ModelAdapter]:
    ref = tiny_qwen2()
    return ref, load_model(str(write_dream(tmp_path_factory.mktemp("dream"), ref)), device="cpu")


@pytest.fixture(params=["native", "llada", "dream"])
def family(request) -> tuple[torch.nn.Module, ModelAdapter]:
    return request.getfixturevalue(request.param)


def batch(seed: int = 5, rows: int = 2, length: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V - 2, (rows, length), generator=g)
    return ids, torch.ones_like(ids)


def ref_logits(ref: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return ref(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


# ---------------------------------------------------------------- native


def test_native_loads_with_same_logits_and_ids(native):
    ref, ad = native
    ids, mask = batch()
    assert ad.family == "native" and not ad.shift_logits
    assert (ad.mask_token_id, ad.eos_token_ids, ad.pad_token_id, ad.context_length) == (MASK, (EOS,), 0, CTX)
    assert ad.device.type == "cpu" and ad.dtype == torch.float32 and not ad.model.training
    assert torch.equal(ad.logits(ids, mask), ref_logits(ref, ids))


def test_native_refuses_config_without_mask_token(tmp_path):
    model = tiny_llama()
    del model.config.mask_token_id
    model.save_pretrained(tmp_path)
    assert "mask_token_id" not in json.loads((tmp_path / "config.json").read_text())
    with pytest.raises(ValueError, match="mask_token_id"):
        load_model(str(tmp_path), device="cpu")


def test_native_refuses_causal_config(tmp_path):
    tiny_llama(is_causal=True).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="is_causal"):
        load_model(str(tmp_path), device="cpu")


# ---------------------------------------------------------------- LLaDA


def test_llada_logits_match_llama(llada):
    ref, ad = llada
    ids, mask = batch()
    assert ad.family == "llada" and not ad.shift_logits
    assert (ad.mask_token_id, ad.eos_token_ids, ad.pad_token_id, ad.context_length) == (MASK, (EOS,), EOS, CTX)
    assert not ad.model.config.tie_word_embeddings
    assert (ad.logits(ids, mask) - ref_logits(ref, ids)).abs().max() < 1e-6


def test_llada_weight_tying_variant(tmp_path):
    ref = tiny_llama(seed=3, tie_word_embeddings=True)
    path = write_llada(tmp_path, ref, tied=True, eot_token_id=61)
    ad = load_llada(str(path))
    ids, mask = batch()
    assert ad.model.config.tie_word_embeddings
    assert ad.model.lm_head.weight.data_ptr() == ad.model.model.embed_tokens.weight.data_ptr()
    assert ad.eos_token_ids == (EOS, 61)
    assert (ad.logits(ids, mask) - ref_logits(ref, ids)).abs().max() < 1e-6


def test_llada_refuses_checkpoint_with_missing_weights(tmp_path):
    path = write_llada(tmp_path, tiny_llama(), tied=False, drop="model.transformer.blocks.1.ff_norm.weight")
    with pytest.raises(ValueError, match="post_attention_layernorm"):
        load_llada(str(path))


@pytest.mark.parametrize("flag,value", [
    ("include_qkv_bias", True), ("include_bias", True), ("alibi", True), ("rope", False),
    ("block_type", "sequential"), ("scale_logits", True),
])
def test_llada_refuses_unsupported_flags(tmp_path, flag, value):
    tmp_path.joinpath("config.json").write_text(json.dumps(llada_config(False, **{flag: value})))
    with pytest.raises(ValueError, match=flag):
        load_model(str(tmp_path), device="cpu")


# ---------------------------------------------------------------- Dream


def test_dream_logits_are_qwen2_shifted_right(dream):
    ref, ad = dream
    ids, mask = batch()
    assert ad.family == "dream" and ad.shift_logits
    assert (ad.mask_token_id, ad.eos_token_ids, ad.pad_token_id, ad.context_length) == (MASK, (EOS,), 0, CTX)
    raw = ref_logits(ref, ids)
    expected = torch.cat([raw[:, :1], raw[:, :-1]], dim=1)
    assert (ad.logits(ids, mask) - expected).abs().max() < 1e-6


# ---------------------------------------------------------------- all families


@pytest.mark.parametrize("keep", [1, 3, 8, 9])
def test_keep_window_equals_last_columns_of_full(family, keep):
    _, ad = family
    ids, mask = batch(length=9)
    full = ad.logits(ids, mask)
    part = ad.logits(ids, mask, keep=keep)
    assert part.shape == (2, keep, V)
    torch.testing.assert_close(part, full[:, -keep:], atol=1e-6, rtol=0)


def test_keep_out_of_range_is_refused(native):
    _, ad = native
    ids, mask = batch(length=4)
    for keep in (0, 5):
        with pytest.raises(ValueError, match="keep"):
            ad.logits(ids, mask, keep=keep)


def test_attention_is_bidirectional(family):
    _, ad = family
    ids, mask = batch(rows=1)
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % V
    assert not torch.allclose(ad.logits(ids, mask)[:, 0], ad.logits(changed, mask)[:, 0])


def test_left_padding_matches_row_alone(family):
    _, ad = family
    short, long_ = [5, 9, 14, 20, 33], [7, 8, 9, 10, 11, 12, 13, 40]
    ids, mask = left_pad([short, long_], pad_id=ad.pad_token_id)
    padded = ad.logits(ids, mask)
    alone = ad.logits(torch.tensor([short]), torch.ones(1, len(short), dtype=torch.long))
    # A shift family's first real column reads the pad before it; decoding never masks a row's first token.
    start = 1 if ad.shift_logits else 0
    width = ids.shape[1]
    torch.testing.assert_close(padded[0, width - len(short) + start:], alone[0, start:], atol=1e-5, rtol=0)
    whole = ad.logits(torch.tensor([long_]), torch.ones(1, len(long_), dtype=torch.long))
    torch.testing.assert_close(padded[1], whole[0], atol=1e-5, rtol=0)


# ---------------------------------------------------------------- load_model dispatch


def test_load_model_rejects_unknown_family_and_dtype(tmp_path):
    with pytest.raises(ValueError, match="llada, dream, native"):
        load_model(str(tmp_path), family="mdlm")
    with pytest.raises(ValueError, match="bfloat16"):
        load_model(str(tmp_path), dtype="int8")


def test_load_model_explicit_family_and_dtype(tmp_path):
    path = write_dream(tmp_path, tiny_qwen2())
    ad = load_model(str(path), family="dream", dtype="bfloat16", device="cpu")
    assert ad.family == "dream" and ad.dtype == torch.bfloat16
    assert load_dream(str(path)).dtype == torch.float32
