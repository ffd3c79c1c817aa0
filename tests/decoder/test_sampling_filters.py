"""decode.top_p / decode.top_k: the filter itself, the samples the projector draws under it (LLaDA's Gumbel
sampler and Dream's), per-chunk application, per-row seeding, on the embedded model (float32, CPU)."""
from __future__ import annotations

import pytest
import torch

from settings.loader import load_config
from decoder.masked.engine import DecodeEngine
from decoder.types import Request
from decoder.masked.projection import Projector, Sampling, StepInputs
from decoder.signals import filter_logits, sampling_probs
from stages.preprocess import load_tokenizer
from tests.support import EMBEDDED_MODEL
from tests.support.models import embedded_adapter

PROMPTS = ["copy:abcde=", "rev:hello=", "sort:dcba=", "next:abz=", "copy:zz=", "rev:ab=", "sort:qwer=", "copy:k="]


@pytest.fixture(scope="module")
def adapter():
    return embedded_adapter()


@pytest.fixture(scope="module")
def reqs():
    tok = load_tokenizer(str(EMBEDDED_MODEL))
    return [Request(f"r{i}", tok(p, add_special_tokens=False)["input_ids"]) for i, p in enumerate(PROMPTS)]


def cfg(*overrides: str):
    return load_config(None, ["decode.trace=off", *overrides]).decode


def decode(adapter, reqs, *overrides, batch=8):
    out = DecodeEngine(adapter, cfg(*overrides)).generate(reqs, batch_size=batch)
    return [(r.output_ids, r.steps_taken) for r in out]


# ----- the filter ------------------------------------------------------------------------------------
def test_top_k_keeps_the_k_largest_logits() -> None:
    z = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0]])
    kept = filter_logits(z, top_k=2) > torch.finfo(torch.float32).min
    assert kept.tolist() == [[False, True, False, True, False]]
    assert torch.equal(filter_logits(z, top_k=0), z) and torch.equal(filter_logits(z, top_p=1.0), z)


def test_top_p_keeps_the_smallest_prefix_over_the_mass() -> None:
    z = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda p: (filter_logits(z, top_p=p) > torch.finfo(torch.float32).min).sum().item()  # noqa: E731
    assert [kept(0.4), kept(0.7), kept(0.85), kept(0.99)] == [1, 2, 3, 4]   # 0.5 | 0.8 | 0.95 | 1.0
    assert kept(1e-9) == 1                                                  # the top token always stays
    q = sampling_probs(z, 1.0, top_p=0.7)
    torch.testing.assert_close(q, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))  # renormalised over the nucleus


# ----- the projector's samples -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["gumbel", "dream"])
@pytest.mark.parametrize("top_p, top_k", [(1.0, 3), (0.6, 0), (0.9, 5)])
def test_samples_stay_inside_the_filter(adapter, reqs, kind, top_p, top_k):
    """At temperature 3 unfiltered samples often leave the top-3 / the nucleus; filtered ones never do."""
    from decoder.padding import left_pad
    seqs = [r.prompt_ids + [adapter.mask_token_id] * 16 for r in reqs]
    ids, attn = left_pad(seqs, adapter.pad_token_id)
    where = torch.ones(len(reqs), 16, dtype=torch.bool)
    logits = adapter.logits(ids, attn, keep=16).float()
    is_mask = torch.arange(logits.shape[-1]) == adapter.mask_token_id
    logits = torch.where(is_mask, torch.finfo(torch.float32).min, logits)   # as the projector suppresses it
    allowed = filter_logits((logits / 3.0).reshape(-1, logits.shape[-1]), top_p, top_k) \
        > torch.finfo(torch.float32).min

    def draw(filtered: bool, max_mb: float = 256.0) -> torch.Tensor:
        gens = [torch.Generator().manual_seed(i) for i in range(len(reqs))]
        smp = Sampling(top_p, top_k, kind) if filtered else Sampling(kind=kind)
        sig = Projector(adapter, max_mb, smp).signals(StepInputs(ids, attn, where, ids[:, -16:], [16] * len(reqs),
                                                                 gens), frozenset({"x0"}), 3.0)
        return sig.x0.reshape(-1)

    def inside(x0):
        return allowed.gather(1, x0[:, None]).squeeze(1)

    assert not inside(draw(False)).all(), "the test needs unfiltered samples outside the filter"
    x0 = draw(True)
    assert inside(x0).all()
    assert torch.equal(x0, draw(True, max_mb=0.001))   # one position per chunk: the filter is per chunk


@pytest.mark.parametrize("policy", ["none", "dream"])
def test_top_k_1_samples_the_greedy_decode(adapter, reqs, policy):
    """With one token left after filtering, sampling at any temperature decodes greedily."""
    greedy = decode(adapter, reqs, f"decode.policy=[{policy}]")
    assert decode(adapter, reqs, f"decode.policy=[{policy}]", "decode.temperature=1.5", "decode.top_k=1") == greedy
    assert decode(adapter, reqs, f"decode.policy=[{policy}]", "decode.temperature=1.5", "decode.top_p=1e-6") == greedy
    assert decode(adapter, reqs, f"decode.policy=[{policy}]", "decode.temperature=1.5") != greedy


@pytest.mark.parametrize("policy", ["none", "sched", "dream"])
def test_filtered_sampling_is_seeded_per_row(adapter, reqs, policy):
    """Same seed and row ids: the same samples whatever the batch; another seed: other samples."""
    opts = [f"decode.policy=[{policy}]", "decode.temperature=1.2", "decode.top_p=0.9", "decode.top_k=8"]
    alone = decode(adapter, reqs, *opts, batch=1)
    assert decode(adapter, reqs, *opts, batch=8) == alone
    assert decode(adapter, reqs, *opts, "decode.seed=7", batch=8) != alone


def test_filters_are_checked_at_load() -> None:
    from settings.schema import ConfigError
    for bad, key in (("decode.top_p=0", "decode.top_p"), ("decode.top_k=-1", "decode.top_k")):
        with pytest.raises((ConfigError, ValueError), match=key):
            load_config(None, [bad])
