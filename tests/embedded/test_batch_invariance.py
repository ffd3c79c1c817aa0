"""Greedy output does not depend on batching, on the embedded model (CPU, float32): a prompt decodes to
the same tokens alone, in a static padded batch, and through the rebatching scheduler with other
prompts coming and going."""
from __future__ import annotations

from conftest import EMBEDDED_MODEL
from embedded.evaluate import load_heldout
from stages.config import load_config
from stages.decode.adapters import load_model
from stages.decode.engine import DecodeEngine, Request
from stages.decode.scheduler import SlotScheduler
from stages.preprocess import load_tokenizer


def test_alone_static_and_rebatched_agree():
    adapter = load_model(str(EMBEDDED_MODEL), dtype="float32", device="cpu")
    tok = load_tokenizer(str(EMBEDDED_MODEL))
    cfg = load_config("configs/default.yaml", ["decode.trace=off"]).decode   # SchED on: rows exit at varied steps
    rows = load_heldout(40)
    requests = [Request(r["id"], tok(r["prompt"], add_special_tokens=False)["input_ids"]) for r in rows]
    assert len({len(r.prompt_ids) for r in requests}) > 5, "prompt lengths must vary (padding)"

    alone = {r.id: DecodeEngine(adapter, cfg).generate([r])[0] for r in requests}
    static = {res.id: res for res in DecodeEngine(adapter, cfg).generate(requests, batch_size=16)}
    sched = SlotScheduler(DecodeEngine(adapter, cfg), 6, cfg.max_batch_tokens, bucket=True)
    rebatched = {res.id: res for res in sched.run(requests)}

    assert len({r.steps_taken for r in alone.values()}) > 2, "exit steps must vary (slots refilled)"
    for r in requests:
        assert static[r.id].output_ids == alone[r.id].output_ids, r.id
        assert rebatched[r.id].output_ids == alone[r.id].output_ids, r.id
        assert rebatched[r.id].steps_taken == alone[r.id].steps_taken, r.id
