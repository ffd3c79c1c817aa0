"""A model split over devices (decoder/placement.py): which placement each setting gives, and a split model
decodes token for token as the whole one. On CPU the only split there is puts layers on the CPU and on disk
(accelerate's offload): the same hooks as a split over GPUs move each layer's inputs and weights."""
from __future__ import annotations

import pytest

from decoder.build import load_model
from decoder.offline import decode_prompts
from decoder.placement import Placement, resolve_placement
from embedded.evaluate import load_heldout
from settings.loader import ConfigError, load_config
from stages.preprocess import load_tokenizer
from tests.support import EMBEDDED_MODEL


@pytest.mark.parametrize("device, device_map, gpus, want", [
    ("auto", "auto", 0, Placement("cpu")),
    ("auto", "auto", 1, Placement("cuda")),
    ("auto", "auto", 4, Placement("cuda:0", "balanced")),     # an actor given 4 GPUs splits over them
    ("cuda", "auto", 2, Placement("cuda:0", "balanced")),
    ("cuda:1", "auto", 2, Placement("cuda:1")),               # a pinned device stays whole
    ("cuda", "none", 8, Placement("cuda")),
    ("cuda", "sequential", 2, Placement("cuda:0", "sequential")),
    ("cpu", "auto", 2, Placement("cpu")),
])
def test_placement_for_each_setting(device, device_map, gpus, want):
    assert resolve_placement(device, device_map, gpus) == want


def test_explicit_maps_take_inputs_on_the_first_module_device():
    assert resolve_placement("auto", {"model.embed_tokens": 1, "lm_head": 0}, 2).device == "cuda:1"
    assert resolve_placement("auto", {"model.embed_tokens": "disk"}, 0).device == "cpu"


def test_an_unknown_device_map_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown device_map 'half'"):
        resolve_placement("cuda", "half", 2)
    with pytest.raises(ConfigError, match="model.device_map"):
        load_config(None, ["model.device_map=half"])


def test_a_model_split_over_cpu_and_disk_decodes_as_the_whole_model(tmp_path):
    path = str(EMBEDDED_MODEL)
    split = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
             "model.layers.1": "disk", "model.layers.2": "cpu", "model.layers.3": "disk", "model.norm": "cpu",
             "lm_head": "cpu"}
    whole = load_model(path, device="cpu")
    parts = load_model(path, device_map=split, offload_folder=str(tmp_path))
    assert parts.model.hf_device_map == split and not hasattr(whole.model, "hf_device_map")
    prompts = [r["prompt"] for r in load_heldout(12)]
    tok = load_tokenizer(path)
    for overrides in (["decode.policy=[none]"], ["decode.policy=[sched]", "decode.cache=prefix"]):
        cfg = load_config(None, overrides + ["decode.trace=off"]).decode
        a, b = decode_prompts(whole, tok, prompts, cfg), decode_prompts(parts, tok, prompts, cfg)
        assert [r.output_ids for r in a.results] == [r.output_ids for r in b.results]
        assert [r.steps_taken for r in a.results] == [r.steps_taken for r in b.results]


def test_a_renamed_checkpoint_splits_too(tmp_path):
    """LLaDA's weights are renamed on load (key_mapping): the split map names the renamed (Llama) modules."""
    import torch

    from tests.decoder.test_adapters import tiny_llama, write_llada

    path = str(write_llada(tmp_path / "llada", tiny_llama(seed=2), tied=False))
    whole = load_model(path, device="cpu")
    layers = whole.model.config.num_hidden_layers
    split = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "disk",
             **{f"model.layers.{i}": ("disk" if i % 2 else "cpu") for i in range(layers)}}
    parts = load_model(path, device_map=split, offload_folder=str(tmp_path / "offload"))
    ids = torch.randint(0, whole.model.config.vocab_size, (2, 12))
    with torch.no_grad():
        assert torch.equal(whole.model(ids).logits, parts.model(ids).logits)
