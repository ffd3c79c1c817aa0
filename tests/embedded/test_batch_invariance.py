"""Batch invariance for every registered policy combination: a prompt decodes to the same tokens, steps,
exit reason and per-position commit steps and reasons alone, in a static padded batch, and through the
slot scheduler with rows joining and leaving (6 slots, 32 prompts of varied prompt and answer lengths:
`max_new_tokens` 8 or 16 with 8-position blocks, so rows finish at different steps).

Model: the embedded model (embedded/taskmix/model) cast to float64. In float32 a different batch shape may move
a logit by an ULP, which can flip a threshold decision sitting on a tie (Fast-dLLM's 0.9, TSPD's
P >= 0.5, CE's Kalman bounds); in float64 such a tie is out of reach, so a mismatch here is a state bug
(per-row or per-position state lost or misaligned on admission or compaction), not rounding.
A new policy is covered by adding its combination to `COMBOS`.
"""
from __future__ import annotations

import pytest
import torch

from embedded.evaluate import load_heldout
from settings.loader import load_config
from decoder.masked.engine import DecodeEngine
from decoder.types import Request
from decoder.scheduler import SlotScheduler
from stages.preprocess import load_tokenizer
from tests.support import EMBEDDED_MODEL, ROOT
from tests.support.models import embedded_adapter

#: name -> config overrides; each entry is one registered combination (sched once per aggregate).
COMBOS = {
    "none": ["decode.policy=[none]"],
    **{f"sched-{agg}": ["decode.policy=[sched]", f"decode.sched.aggregate={agg}"]
       for agg in ("mean", "median", "min", "quantile")},
    "fastdllm": ["decode.policy=[fastdllm]"],
    "prophet": ["decode.policy=[prophet]"],
    "tspd": ["decode.policy=[tspd]"],
    "tspd+ce": ["decode.policy=[tspd,ce]"],
    "tspd+ce+sched": ["decode.policy=[tspd,ce,sched]"],
    "fastdllm+ce": ["decode.policy=[fastdllm,ce]"],
    **{f"dream-{alg}": ["decode.policy=[dream]", f"decode.dream.alg={alg}"]
       for alg in ("origin", "maskgit_plus", "topk_margin", "entropy")},
    "dream-alg_temp+sched-gated": ["decode.policy=[dream,sched]", "decode.dream.alg_temp=0.5",
                                   "decode.sched.patience_steps=1", "decode.sched.max_change_ratio=0.25",
                                   "decode.sched.min_progress=0.2"],
}
N_PROMPTS, SLOTS = 32, 6
#: Combinations in the default run: each policy once (the rest run with ./test.sh -m slow).
DEFAULT_RUN = {"none", "sched-mean", "fastdllm", "prophet", "tspd+ce+sched", "fastdllm+ce", "dream-entropy",
               "dream-alg_temp+sched-gated"}


@pytest.fixture(scope="module")
def model():
    adapter = embedded_adapter(torch.float64)
    tok = load_tokenizer(str(EMBEDDED_MODEL))
    rows = load_heldout(N_PROMPTS)
    requests = [Request(r["id"], tok(r["prompt"], add_special_tokens=False)["input_ids"], gen_length=8 + 8 * (i % 2))
                for i, r in enumerate(rows)]
    assert len({len(r.prompt_ids) for r in requests}) > 5, "prompt lengths must vary (padding)"
    return adapter, requests


def _key(res) -> tuple:
    return res.output_ids, res.steps_taken, res.exit_reason, res.commit_step, res.commit_reason


@pytest.mark.parametrize("combo", [c if c in DEFAULT_RUN else pytest.param(c, marks=pytest.mark.slow) for c in COMBOS])
def test_alone_static_and_slot_scheduler_agree(model, combo):
    adapter, requests = model
    cfg = load_config("configs/default.yaml", COMBOS[combo] + [
        "decode.trace=off", "decode.block_length=8", f"decode.tspd.controller_path={ROOT / 'embedded/taskmix/controller/tspd.pt'}"]).decode
    alone = {r.id: _key(DecodeEngine(adapter, cfg).generate([r])[0]) for r in requests}
    static = {res.id: _key(res) for res in DecodeEngine(adapter, cfg).generate(requests, batch_size=16)}
    sched = SlotScheduler(DecodeEngine(adapter, cfg), SLOTS, cfg.max_batch_tokens, bucket=True)
    slotted = {res.id: _key(res) for res in sched.run(requests)}

    assert len({k[1] for k in alone.values()}) > 1, "rows must finish at different steps (slots refilled)"
    assert sched.stats()["forwards"] < sum(k[1] for k in alone.values()), "rows must share forwards"
    for r in requests:
        assert static[r.id] == alone[r.id], (combo, r.id, "static")
        assert slotted[r.id] == alone[r.id], (combo, r.id, "slot scheduler")
