"""DiffusionGemma in batches: per-row generators make a row's output independent of its batch (alone == in a
batch of 3 == through the slot scheduler with rows joining and leaving), and per-row encoder caches of rows at
different canvases (one past the sliding window) give the logits HF's own cache gives each row alone."""
from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from decoder.canvas.engine import CanvasEngine
from decoder.config import DecodeConfig, DGemmaConfig
from decoder.types import Request
from decoder.build import load_model
from decoder.scheduler import SlotScheduler
from decoder.types import RowError
from tests.support.tiny_dgemma import CANVAS, WINDOW, save_tiny


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return load_model(save_tiny(str(tmp_path_factory.mktemp("dgemma"))))


def requests():
    """Five rows: prompts of 3..13 tokens, 1..3 canvases, their own step budgets (so they leave at different
    steps)."""
    specs = [(3, 8, None), (13, 24, 6), (7, 16, 8), (10, 8, 3), (5, 16, 4)]
    return [Request(f"r{i}", list(range(20 + i, 20 + i + n)), gen, steps=steps)
            for i, (n, gen, steps) in enumerate(specs)]


def engine(adapter, policy=("dgemma",)):
    return CanvasEngine(adapter, DecodeConfig(policy=list(policy), gen_length=16, trace="tokens", seed=7,
                                              dgemma=DGemmaConfig(max_denoising_steps=5, entropy_bound_nats=6.0)))


def key(r):
    return r.output_ids, r.steps_taken, r.exit_reason


@pytest.mark.parametrize("policy", [("dgemma",), ("dgemma", "sched")])
def test_batch_invariance(adapter, policy):
    reqs = requests()
    alone = {r.id: key(engine(adapter, policy).generate([r])[0]) for r in reqs}
    batched = engine(adapter, policy).generate(reqs[:3], batch_size=3)
    assert {r.id: key(r) for r in batched} == {r.id: alone[r.id] for r in reqs[:3]}
    sched = SlotScheduler(engine(adapter, policy), max_batch_size=2, max_batch_tokens=10 ** 6)
    out = list(sched.run(reqs))
    assert not [o for o in out if isinstance(o, RowError)]
    assert {r.id: key(r) for r in out} == alone
    assert sched.stats()["forwards"] < sum(v[1] for v in alone.values())   # rows shared forwards


def test_rows_leave_and_slots_refill(adapter):
    eng = engine(adapter)
    sched = SlotScheduler(eng, max_batch_size=2, max_batch_tokens=10 ** 6)
    sizes = []
    sched.submit(requests())
    while sched.has_work:
        sched.step()
        sizes.append(len(eng.rows))
    assert max(sizes) == 2 and sched.stats()["useful_row_steps"] == sched.stats()["row_steps"]
    assert eng.stats["encoder_passes"] < eng.stats["encoder_rows"]   # prefills/commits grouped per step


def hf_solo_logits(adapter, chunks, canvas, sc_logits):
    """HF's own path for one row: DynamicCache written chunk by chunk by the encoder, then the model's forward."""
    model = adapter.model
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    pos = 0
    for chunk in chunks:
        ids = torch.tensor([chunk])
        model.model.encoder(input_ids=ids, past_key_values=cache, position_ids=torch.arange(pos, pos + len(chunk))[None])
        pos += len(chunk)
    out = model(decoder_input_ids=canvas[None], past_key_values=cache, self_conditioning_logits=sc_logits,
                decoder_position_ids=torch.arange(pos, pos + CANVAS)[None])
    return out.logits[0]


def test_stacked_caches_match_solo_logits(adapter):
    g = torch.Generator().manual_seed(0)
    tok = lambda n: torch.randint(3, 290, (n,), generator=g).tolist()   # noqa: E731
    rows = [[tok(5), tok(CANVAS)],              # canvas 1: 13 tokens, past the window of 8
            [tok(3)],                           # canvas 0
            [tok(12), tok(CANVAS), tok(CANVAS)]]  # canvas 2, prompt itself past the window
    caches = [adapter.new_cache() for _ in rows]
    for depth in range(3):                      # grouped encoder passes, rows at different depths
        todo = [(c, r[depth]) for c, r in zip(caches, rows) if depth < len(r)]
        adapter.encode([c for c, _ in todo], [t for _, t in todo])
    assert caches[2].keys[0].shape[1] == WINDOW - 1 and caches[2].keys[1].shape[1] == 28
    canvas = torch.randint(0, 300, (3, CANVAS), generator=g)
    sc = torch.randn(3, CANVAS, 300, generator=g)
    sc[1] = 0.0
    soft = adapter.soft_embeddings(sc.reshape(-1, 300)).view(3, CANVAS, -1).clone()
    soft[1] = 0.0                               # row 1 at a canvas's first step: no self-conditioning
    view = adapter.batch_view(caches)
    batched = adapter.head(adapter.decoder_hidden(view, canvas, soft).reshape(3 * CANVAS, -1)).view(3, CANVAS, -1)
    for b, chunks in enumerate(rows):
        ref = hf_solo_logits(adapter, chunks, canvas[b], None if b == 1 else sc[b:b + 1])
        assert torch.allclose(batched[b], ref, atol=1e-5), (b, (batched[b] - ref).abs().max())
