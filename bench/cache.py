"""Per-row KV cache (decode.cache = none | prefix | dual) on a random bidirectional Llama, one run.

    .venv/bin/python bench/cache.py [--threads 2] [--quick]
    .venv/bin/python bench/cache.py --workload longform|reasoning [--limit 96] [--policy fastdllm]

Model: random `LlamaForCausalLM` with `is_causal=False` (hidden 512, 4 layers, 8 heads, vocabulary 32,000)
— a realistic layout scaled to this CPU. Workload: batch 16 of random prompts of 256 and 512 tokens,
answer 128 in blocks of 32, 32 fixed steps (8 tokens per step, LLaDA's schedule, greedy), no EOS stop.
Cache modes refresh at each block start (the Fast-dLLM rule). Columns: tokens/s (answer tokens / wall),
speedup vs `none`, forward tokens per generated token (what the forwards ran, pads excluded), refresh
and cached row-steps, agreement with the exact (`none`) decode (share of identical rows and of identical
tokens). Random weights make agreement a stress figure, not a quality one: their logits are nearly flat,
so any perturbation flips picks; the quality figures come from the trained workloads below. Writes
bench/results/cache.json.

`--workload longform`: the trained long-form model (embedded/longform/model, configs/longform.yaml) on its
held-out set, batch 16, the config's answer window and steps (64 and 64: 2 blocks of 32). The plain loop (no exit, no cache, static
batches, every row all steps) is the reference; then none / prefix / dual at fixed steps (static), and
with an early-exit policy (`--policy`, stop at EOS on) in static batches and through the rebatching slot
scheduler. Columns: wall-clock speedup over the plain loop, answer tokens/s, forward tokens per generated
token, exact match and its retention vs the plain loop, token F1, and agreement (identical answers) with
the plain loop and with the same policy without a cache; two more dual rows refresh the cache every 2
steps and every step (`--refresh-steps`; every step is exact, so it shows whether a loss is the
approximation's). Writes bench/results/cache_longform.json.
`--workload reasoning`: the same on the reasoning model (configs/reasoning.yaml), cache_reasoning.json.
"""
from __future__ import annotations

import argparse
import time

import torch

from bench.common import print_table, save_result
from decoder.families.base import ModelAdapter
from decoder.config import DecodeConfig
from decoder.masked.engine import DecodeEngine
from decoder.types import Request
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


def trained(args) -> None:
    """Quality and speed of the cache modes on a trained workload's model (see the module docstring)."""
    import copy

    from embedded.evaluate import WORKLOADS, accuracy, load_heldout, token_score
    from settings.loader import load_config
    from decoder.build import load_model
    from decoder.offline import answer_text
    from decoder.scheduler import SlotScheduler
    from stages.preprocess import load_tokenizer

    cfg = load_config(WORKLOADS[args.workload].config, ["decode.trace=off", *([f"model.path={args.model}"] if args.model else [])])
    adapter = load_model(cfg.model.path, cfg.model.family, cfg.model.dtype, "cpu")
    tok = load_tokenizer(cfg.model.path)
    rows = load_heldout(args.limit, args.workload)
    reqs = [Request(str(i), tok(r["prompt"], add_special_tokens=False)["input_ids"]) for i, r in enumerate(rows)]

    def run(mode: str, policy: str, batching: str, refresh: int = 0):
        d = copy.deepcopy(cfg.decode)
        d.cache, d.policy, d.stop_at_eos, d.max_batch_size = mode, [policy], policy != "none", args.batch
        d.cache_refresh_steps = refresh
        engine = DecodeEngine(adapter, d, keep_finished_in_batch=batching == "static")
        t0 = time.perf_counter()
        if batching == "static":
            out = engine.generate(reqs, batch_size=args.batch)
        else:
            done = {r.id: r for r in SlotScheduler(engine, args.batch, d.max_batch_tokens, bucket=True).run(reqs)}
            out = [done[r.id] for r in reqs]
        seconds = time.perf_counter() - t0
        decoded = [answer_text(tok, r.output_ids, adapter.eos_token_ids) for r in out]
        return out, [t for t, _ in decoded], sum(n for _, n in decoded), seconds

    torch.set_num_threads(args.threads)
    warm = copy.deepcopy(cfg.decode)
    warm.cache, warm.gen_length, warm.steps = "prefix", 32, 4
    DecodeEngine(adapter, warm).generate(reqs[:2], batch_size=2)  # first-call costs out of the timings
    plans = [(m, "none", "static", 0) for m in ("none", "prefix", "dual")]
    # the dual cache refreshed every 2 steps and every step (= exact: the same outputs as no cache)
    plans += [("dual", "none", "static", n) for n in args.refresh_steps]
    plans += [(m, args.policy, b, 0) for b in ("static", "rebatching") for m in ("none", "prefix", "dual")]
    table, texts_of = [], {}
    for mode, policy, batching, refresh in plans:
        out, texts, answer_tokens, seconds = run(mode, policy, batching, refresh)
        if not refresh:
            texts_of[(mode, policy, batching)] = texts
        plain, same = texts_of[("none", "none", "static")], texts_of.get(("none", policy, batching), texts)
        acc = accuracy(texts, rows, args.workload)
        if mode == "none" and policy == "none":  # the first plan: the plain loop every ratio refers to
            base = {"seconds": seconds, "acc": acc}
        table.append({
            "mode": mode, "policy": policy, "batching": batching, "refresh_steps": refresh, "wall_s": seconds,
            "speedup_vs_plain": base["seconds"] / seconds, "answer_tokens_per_s": answer_tokens / seconds,
            "nfe": sum(r.steps_taken for r in out), "refreshes": sum(r.refreshes for r in out),
            "forward_tokens_per_generated": sum(r.forward_tokens for r in out) / max(answer_tokens, 1),
            "exact_match": acc, "retention": acc / base["acc"] if base["acc"] else 0.0,
            "token_f1": token_score(texts, rows, args.workload),
            "agreement_vs_plain": sum(a == b for a, b in zip(texts, plain)) / len(rows),
            "agreement_vs_no_cache": sum(a == b for a, b in zip(texts, same)) / len(rows),
        })
        print(table[-1], flush=True)
    text = print_table(table, ["mode", "policy", "batching", "refresh_steps", "speedup_vs_plain", "answer_tokens_per_s", "nfe",
                               "forward_tokens_per_generated", "exact_match", "retention", "token_f1",
                               "agreement_vs_plain", "agreement_vs_no_cache"])
    save_result(args.out or f"cache_{args.workload}", {"args": vars(args), "prompts": len(rows), "rows": table, "table": text,
                                               "decode": {"gen_length": cfg.decode.gen_length, "steps": cfg.decode.steps,
                                                          "block_length": cfg.decode.block_length}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workload", choices=("random", "longform", "reasoning"), default="random")
    ap.add_argument("--limit", type=int, default=96, help="longform: held-out prompts")
    ap.add_argument("--policy", default="fastdllm", help="longform: the early-exit policy of the exit rows")
    ap.add_argument("--out", default=None, help="trained workloads: result name (default cache_<workload>)")
    ap.add_argument("--model", default=None, help="longform: checkpoint (default: configs/longform.yaml's)")
    ap.add_argument("--refresh-steps", type=int, nargs="*", default=[2, 1],
                    help="trained workloads: extra dual-cache rows refreshed every N steps (decode.cache_refresh_steps)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--prompts", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--quick", action="store_true", help="smoke run: batch 2, prompt 64, gen 64, 8 steps")
    args = ap.parse_args()
    if args.workload != "random":
        return trained(args)
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
