"""Per-row KV cache (decode.cache = none | prefix | dual) on a random bidirectional Llama, one run.

    .venv/bin/python bench/cache.py [--threads 2] [--quick]

Model: random `LlamaForCausalLM` with `is_causal=False` (hidden 512, 4 layers, 8 heads, vocabulary 32,000)
— a realistic layout scaled to this CPU. Workload: batch 16 of random prompts of 256 and 512 tokens,
answer 128 in blocks of 32, 32 fixed steps (8 tokens per step, LLaDA's schedule, greedy), no EOS stop.
Cache modes refresh at each block start (the Fast-dLLM rule). Columns: tokens/s (answer tokens / wall),
speedup vs `none`, forward tokens per generated token (what the forwards ran, pads excluded), refresh
and cached row-steps, agreement with the exact (`none`) decode (share of identical rows and of identical
tokens). Random weights make agreement a stress figure, not a quality one: their logits are nearly flat,
so any perturbation flips picks; the quality figure needs a trained model (the long-form workload, not
yet trained). Writes bench/results/cache.json.
"""
from __future__ import annotations

import argparse
import time

import torch

from common import print_table, save_result  # noqa: I001
from stages.decode.adapters import ModelAdapter
from stages.decode.config import DecodeConfig
from stages.decode.engine import DecodeEngine, Request
from transformers import LlamaConfig, LlamaForCausalLM

MASK, EOS, PAD = 5, 4, 3
SHAPE = dict(vocab_size=32_000, hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8)


def random_adapter() -> ModelAdapter:
    torch.manual_seed(0)
    cfg = LlamaConfig(**SHAPE, num_key_value_heads=8, max_position_embeddings=2048, is_causal=False,
                      tie_word_embeddings=False, mask_token_id=MASK, eos_token_id=EOS, pad_token_id=PAD)
    return ModelAdapter(LlamaForCausalLM(cfg).eval(), MASK, (EOS,), PAD, 2048, False, "native")


def decode(adapter, reqs, gen: int, steps: int, mode: str):
    cfg = DecodeConfig(gen_length=gen, block_length=32, steps=steps, policy=["none"], trace="off",
                       stop_at_eos=False, max_batch_size=len(reqs), max_batch_tokens=10 ** 9, cache=mode)
    engine = DecodeEngine(adapter, cfg)
    t0 = time.perf_counter()
    out = engine.generate(reqs, batch_size=len(reqs))
    return out, time.perf_counter() - t0, engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--prompts", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--quick", action="store_true", help="smoke run: batch 2, prompt 64, gen 64, 8 steps")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.gen, args.steps, args.prompts = 2, 64, 8, [64]
    torch.set_num_threads(args.threads)
    adapter, rows = random_adapter(), []
    decode(adapter, [Request("warm", list(range(6, 38)))], 32, 4, "prefix")   # first-call costs out of the timings
    for plen in args.prompts:
        gen = torch.Generator().manual_seed(plen)
        reqs = [Request(str(i), torch.randint(6, SHAPE["vocab_size"], (plen,), generator=gen).tolist())
                for i in range(args.batch)]
        base = None
        for mode in ("none", "prefix", "dual"):
            out, seconds, engine = decode(adapter, reqs, args.gen, args.steps, mode)
            if base is None:
                base = (out, seconds)
            generated = sum(len(r.output_ids) for r in out)
            same_rows = sum(a.output_ids == b.output_ids for a, b in zip(out, base[0])) / len(out)
            same_tokens = sum(x == y for a, b in zip(out, base[0]) for x, y in zip(a.output_ids, b.output_ids))
            refresh = sum(r.refreshes for r in out) if mode != "none" else sum(r.steps_taken for r in out)
            rows.append({"prompt": plen, "batch": args.batch, "mode": mode, "tokens_per_s": generated / seconds,
                         "speedup_vs_none": base[1] / seconds,
                         "forward_tokens_per_generated": sum(r.forward_tokens for r in out) / generated,
                         "refresh_row_steps": refresh,
                         "cached_row_steps": sum(r.steps_taken for r in out) - refresh,
                         "agreement_rows": same_rows, "agreement_tokens": same_tokens / generated})
            print(rows[-1], flush=True)
    table = print_table(rows, ["prompt", "batch", "mode", "tokens_per_s", "speedup_vs_none",
                               "forward_tokens_per_generated", "refresh_row_steps", "cached_row_steps",
                               "agreement_tokens"])
    save_result("cache_quick" if args.quick else "cache", {"args": vars(args), "shape": SHAPE, "rows": rows,
                                                          "table": table})


if __name__ == "__main__":
    main()
