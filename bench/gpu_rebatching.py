"""Rebatching on a GPU with an LLaDA-8B-shaped model (random weights, bf16, SDPA, bidirectional).

    python bench/gpu_rebatching.py --out bench/results/gpu_rebatching.json [--batch-sizes 8 32 64]

No real checkpoint can be fetched on the GPU machine, so speed is measured on a model of LLaDA-8B's
shape with random weights. Its margins are meaningless, so SchED's exit decision is replaced by a
scripted per-row exit at a step drawn from the exit-step distribution recorded from the embedded model's
traces (bench/results/rebatching.json, `exit_fractions`): rows finish at realistic, varied steps while
everything else (signals, commits, compaction, refill) is the real engine. Modes as in
bench/rebatching.py plus a plain fixed-step loop; tokens/s counts generated answer positions.
Imports only decoder (torch, transformers, pyarrow): no Ray, no omegaconf needed.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from decoder.families.base import ModelAdapter
from decoder.config import DecodeConfig
from decoder.masked.engine import DecodeEngine
from decoder.types import Request
from decoder.policies.base import ExitDecision
from decoder.scheduler import SlotScheduler

ROOT = Path(__file__).resolve().parents[1]
LLADA_8B = dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32, vocab_size=126464, max_position_embeddings=4096, rope_theta=500000.0)
MASK_ID, EOS_IDS = 126336, (126081, 126348)


class ScriptedExit:
    """Exit each row at its planned step (a stand-in for SchED on a model whose margins mean nothing)."""
    kind, name = "exit", "sched"

    def __init__(self, engine: DecodeEngine, plan: dict[str, int]) -> None:
        self.engine, self.plan = engine, plan

    def should_exit(self, ctx) -> ExitDecision:
        flags = [r.step + 1 >= self.plan[r.request.id] for r in self.engine.rows]
        exit_now = torch.tensor(flags, device=ctx.masked.device) & ctx.masked.any(-1)
        nan = torch.full_like(ctx.progress, float("nan"))
        return ExitDecision(exit_now, nan, nan)


def build_model(tiny: bool):
    from transformers import LlamaConfig, LlamaForCausalLM
    shape = dict(LLADA_8B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4) if tiny else LLADA_8B
    cfg = LlamaConfig(**shape, is_causal=False, mask_token_id=MASK_ID, tie_word_embeddings=False,
                      attn_implementation="sdpa")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).eval()
    torch.set_default_dtype(torch.float32)
    return ModelAdapter(model, MASK_ID, EOS_IDS, EOS_IDS[0], 4096, False, "llada")


def make_engine(adapter, dcfg, plan, keep=False):
    engine = DecodeEngine(adapter, dcfg, keep_finished_in_batch=keep)
    if plan is not None:
        engine.policies.exits = [ScriptedExit(engine, plan)]
    return engine


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def run_mode(mode, adapter, dcfg, requests, b, plan):
    if mode == "rebatching":
        engine = make_engine(adapter, dcfg, plan)
        sched = SlotScheduler(engine, b, dcfg.max_batch_tokens, bucket=True)
        results, seconds = timed(lambda: list(sched.run(requests)))
    else:
        engine = make_engine(adapter, dcfg, None if mode == "plain" else plan, keep=(mode == "static-keep"))
        results, seconds = timed(lambda: engine.generate(requests, batch_size=b))
    s = engine.stats
    return {"B": b, "mode": mode, "sequences": len(results), "seconds": seconds,
            "sequences_per_s": len(results) / seconds,
            "tokens_per_s": sum(len(r.output_ids) for r in results) / seconds,
            "forwards": s["forwards"], "slot_utilisation": s["useful_row_steps"] / (s["forwards"] * b),
            "padding_fraction": s["pad_tokens"] / s["tokens"],
            "mean_steps": sum(r.steps_taken for r in results) / len(results)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 64])
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--batches", type=int, default=2, help="prompts per mode = batches x B")
    ap.add_argument("--modes", nargs="+", default=["plain", "static-keep", "static-compact", "rebatching"])
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model of the same vocabulary (CPU smoke test)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_rebatching.json"))
    args = ap.parse_args()
    fractions = json.loads((ROOT / "bench" / "results" / "rebatching.json").read_text())["exit_fractions"]
    adapter = build_model(args.tiny)
    dcfg = DecodeConfig(gen_length=args.gen_length, block_length=args.block_length, steps=args.steps,
                        policy=["sched"], trace="off", stop_at_eos=False, max_batch_tokens=1 << 30)
    rng = random.Random(0)
    warm = [Request(f"w{i}", [rng.randrange(1000, 100000) for _ in range(48)]) for i in range(4)]
    make_engine(adapter, dcfg, None).generate(warm, batch_size=4)
    rows = []
    for b in args.batch_sizes:
        n = b * args.batches
        requests = [Request(f"b{b}-{i}", [rng.randrange(1000, 100000) for _ in range(rng.randint(32, 96))])
                    for i in range(n)]
        plan = {r.id: max(1, round(rng.choice(fractions) * args.steps)) for r in requests}
        for mode in args.modes:
            reqs = requests[:b] if mode == "plain" else requests
            rows.append(run_mode(mode, adapter, dcfg, reqs, b, plan))
            print(json.dumps(rows[-1]), flush=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    payload = {"device": device, "model": "LLaDA-8B shape, random weights" if not args.tiny else "tiny",
               "dtype": "bfloat16" if torch.cuda.is_available() else "float32", "gen_length": args.gen_length,
               "block_length": args.block_length, "steps": args.steps, "torch": torch.__version__,
               "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
