"""DiffusionGemma: the canvas engine with `decode.dgemma.rng=global` reproduces `model.generate()` token for
token at batch 1 (same seed), for HF's defaults, a deterministic one-hot processor and a forced EOS."""
from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

from decoder.config import DecodeConfig, DGemmaConfig
from decoder.types import Request
from decoder.build import load_model, make_engine
from tests.support.tiny_dgemma import EOS, VOCAB, save_tiny

PROMPT = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]   # longer than the sliding window (8)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return load_model(save_tiny(str(tmp_path_factory.mktemp("dgemma"))))


def one_hot(z, positions):
    """Every position's logits one-hot on a token of its canvas position (deterministic decoding)."""
    keep = (7 * positions + 11) % VOCAB
    out = torch.full_like(z, -float("inf"))
    return out.scatter(-1, keep[:, None], 0.0)


def eos_at_5(z, positions):
    """Push EOS far ahead at canvas position 5: the first canvas ends the row."""
    return z + 100.0 * ((positions == 5)[:, None] & (torch.arange(z.shape[-1]) == EOS))


class HFProcessor(LogitsProcessor):
    """The same function over generate()'s (B, C, V) scores."""
    def __init__(self, fn):
        self.fn = fn

    def __call__(self, input_ids, scores):
        b, c, v = scores.shape
        return self.fn(scores.reshape(-1, v), torch.arange(c).repeat(b)).view(b, c, v)


def ours(adapter, fn, gen_length, **dgemma):
    cfg = DecodeConfig(policy=["dgemma"], gen_length=gen_length, trace="off", dgemma=DGemmaConfig(rng="global", **dgemma))
    engine = make_engine(adapter, cfg, logits_processors=[fn] if fn else None)
    torch.manual_seed(1234)
    return engine.generate([Request("r", PROMPT)])[0]


def theirs(adapter, fn, gen_length, **kwargs):
    torch.manual_seed(1234)
    procs = LogitsProcessorList([HFProcessor(fn)]) if fn else None
    out = adapter.model.generate(torch.tensor([PROMPT]), max_new_tokens=gen_length, logits_processor=procs, **kwargs)
    return out.sequences[0, len(PROMPT):].tolist()


@pytest.mark.parametrize("case", ["defaults", "one_hot", "forced_eos", "short_canvases"])
def test_token_parity_with_generate(adapter, case):
    fn, gen, ours_kw, hf_kw = {
        "defaults": (None, 16, {}, {}),
        "one_hot": (one_hot, 24, {}, {}),
        "forced_eos": (eos_at_5, 24, {"max_denoising_steps": 6}, {"max_denoising_steps": 6}),
        "short_canvases": (None, 16, {"max_denoising_steps": 5, "t_min": 0.5, "t_max": 1.5, "entropy_bound_nats": 9.0},
                           {"max_denoising_steps": 5, "t_min": 0.5, "t_max": 1.5,
                            "sampler_config": EntropyBoundSamplerConfig(entropy_bound=9.0)}),
    }[case]
    res = ours(adapter, fn, gen, **ours_kw)
    hf = theirs(adapter, fn, gen, **hf_kw)
    if case == "forced_eos":   # generate() stops after the canvas holding EOS; we stop there too
        assert res.exit_reason == "eos" and res.output_ids[5] == EOS and len(hf) == 8
        assert res.output_ids[:8] == hf and set(res.output_ids[6:]) == {0}
        return
    assert res.output_ids == hf
    if case == "one_hot":      # entropy 0: all accepted, stable at the second step of each canvas
        assert res.steps_taken == 2 * 3 and res.exit_reason == "dgemma"
        assert res.output_ids == [(7 * (i % 8) + 11) % VOCAB for i in range(24)]


def test_defaults_come_from_generation_config(tmp_path):
    path = save_tiny(str(tmp_path), generation={"max_denoising_steps": 3, "t_min": 0.3})
    ad = load_model(path)
    assert ad.sampling["max_denoising_steps"] == 3 and ad.sampling["t_min"] == 0.3 and ad.sampling["t_max"] == 0.8
    res = make_engine(ad, DecodeConfig(policy=["dgemma"], gen_length=8, trace="off")).generate([Request("a", PROMPT)])
    assert res[0].steps_taken == 3 and res[0].step_budget == 3
