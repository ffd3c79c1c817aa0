"""The engine reproduces Dream's own `diffusion_generate` and SchED's `diffusion_generate_schedule` token for
token and step count for step count.

Goldens: tests/decoder/parity/golden.json, produced once by the reference code itself on the tiny Dream
checkpoint next to it (tests/decoder/parity/make_dream_golden.py says how). Every alg (origin greedy;
maskgit_plus, topk_margin, entropy greedy and sampled with top-p / top-k; alg_temp), a 13-token answer in
a 16-position block (3 EOS-fixed positions), and SchED's linear / cosine / exp schedules with patience,
min_progress, the change-ratio gate and the tail region. At batch 1 each row matches the reference; the
same rows twice over (8 rows, the copies seeded like the originals) through the slot scheduler at 8 slots
give the same tokens and step counts (per-row schedules, per-row generators). CPU, float32.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from settings.loader import load_config
from decoder.build import load_model
from decoder.masked.engine import DecodeEngine
from decoder.types import Request
from decoder.scheduler import SlotScheduler

HERE = Path(__file__).resolve().parent
GOLDEN = json.loads((HERE / "golden.json").read_text())
CASES = {c["name"]: c for c in GOLDEN["cases"]}


@pytest.fixture(scope="module")
def adapter():
    ad = load_model(str(HERE / "tiny_dream"), dtype="float32", device="cpu")
    assert ad.family == "dream"
    return ad


def engine(adapter, case) -> DecodeEngine:
    cfg = load_config(None, [*case["overrides"], "decode.trace=steps"], defaults=False).decode
    return DecodeEngine(adapter, cfg)


@pytest.mark.parametrize("name", sorted(CASES))
def test_batch_1_matches_the_reference(adapter, name):
    case = CASES[name]
    reqs = [Request(r["id"], r["prompt_ids"]) for r in case["rows"]]
    got = {r.id: r for r in engine(adapter, case).generate(reqs, batch_size=1)}
    for want in case["rows"]:
        res = got[want["id"]]
        assert res.output_ids == want["output_ids"], (name, want["id"])
        assert res.steps_taken == want["steps_taken"], (name, want["id"])
        assert len(res.output_ids) == case["kwargs"]["max_new_tokens"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_batch_of_8_through_the_slot_scheduler(adapter, name):
    case = CASES[name]
    rows = case["rows"]
    reqs = [Request(f"{r['id']}{suffix}", r["prompt_ids"], seed_key=r["id"]) for suffix in ("", "-copy")
            for r in rows]
    assert len(reqs) == 8
    eng = engine(adapter, case)
    done = {res.id: res for res in SlotScheduler(eng, max_batch_size=8, max_batch_tokens=10 ** 6).run(reqs)}
    assert eng.stats["forwards"] < sum(r.steps_taken for r in done.values())   # rows shared forwards
    for want in rows:
        for rid in (want["id"], want["id"] + "-copy"):
            assert (done[rid].output_ids, done[rid].steps_taken) == (want["output_ids"], want["steps_taken"]), \
                (name, rid)


def test_dream_is_the_dream_family_default(adapter):
    """decode.policy naming no commit policy gives a Dream checkpoint Dream's own loop."""
    case = CASES["entropy-greedy"]
    overrides = [o for o in case["overrides"] if not o.startswith("decode.policy")] + ["decode.policy=[sched]",
                                                                                       "decode.sched.tau_high_logit=1e9",
                                                                                       "decode.sched.tau_low_logit=1e9"]
    cfg = load_config(None, overrides, defaults=False).decode
    eng = DecodeEngine(adapter, cfg)
    assert type(eng.policies.commit).__name__ == "DreamPolicy"
    got = eng.generate([Request(r["id"], r["prompt_ids"]) for r in case["rows"]], batch_size=4)
    assert [r.output_ids for r in got] == [r["output_ids"] for r in case["rows"]]
