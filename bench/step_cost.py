"""The cost of one decode step: the project's fixed-step engine vs a plain LLaDA-style loop, one run.

    .venv/bin/python bench/step_cost.py [--threads 2] [--quick]

Models: random bidirectional Llamas (`is_causal=False`) — LLaDA's vocabulary (126,464) under a small body
(hidden 512, 4 layers), and a body-heavy shape (hidden 1024, 8 layers, vocabulary 32,000). Workload: equal
prompts of `--prompt` random tokens, answer 64 in blocks of 32, fixed steps (LLaDA's uniform schedule,
greedy low-confidence remasking, no EOS stop): the same decode both ways, checked token-identical.

- plain: what LLaDA's reference `generate()` does each step — full forward, full [B, L, V] logits,
  softmax over all of them, argmax, confidence gathered, -inf outside the current block, top-k per row
  (plus the mask token's logit suppressed, as the engine does, so the two decode the same tokens);
- engine: decoder/masked/engine.py with `decode.policy=[none]`, `decode.trace=off`: body over the batch,
  head and signals only at the current block's still-masked positions, chunked under max_logits_mb.

Columns: tokens/s (answer tokens / wall), forward share (model body + head matmuls / step time; the
rest is `outside`), peak bytes of the step's logits + signal temporaries (from their shapes: plain =
logits + softmax [B, L, V] float32; engine = the largest chunk), and `identical`. The prompt/steps are
scaled down from the issue's (prompt 128, 64 steps) so the run fits ~10 minutes on 2 CPU cores; the
vocabulary is kept. Writes bench/results/step_cost.json; exits non-zero if outputs differ.
"""
from __future__ import annotations

import argparse
import time

import torch

from bench.common import check_invariant, print_table, save_result
from decoder.families.base import ModelAdapter
from decoder.config import DecodeConfig
from decoder.masked.engine import DecodeEngine
from decoder.types import Request
from decoder.transfer import num_transfer_tokens
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "llada-vocab": dict(vocab_size=126_464, hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
                        num_attention_heads=8),
    "body-heavy": dict(vocab_size=32_000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                       num_attention_heads=16),
}
MASK, EOS, PAD = 5, 4, 3


def random_adapter(shape: dict, seed: int = 0) -> ModelAdapter:
    torch.manual_seed(seed)
    cfg = LlamaConfig(**shape, num_key_value_heads=shape["num_attention_heads"], max_position_embeddings=1024,
                      is_causal=False, tie_word_embeddings=False, mask_token_id=MASK, eos_token_id=EOS,
                      pad_token_id=PAD)
    model = LlamaForCausalLM(cfg).eval()
    return ModelAdapter(model, MASK, (EOS,), PAD, 1024, False, "native")


@torch.inference_mode()
def plain_loop(model, prompts: torch.Tensor, gen: int, block: int, steps: int) -> tuple[torch.Tensor, dict]:
    """LLaDA's generate(): x = [prompt; MASK*gen]; per block, per step: full logits, softmax, argmax, top-k."""
    b, p = prompts.shape
    x = torch.cat([prompts, torch.full((b, gen), MASK)], 1)
    per_block, fwd_s, total0, peak = steps // (gen // block), 0.0, time.perf_counter(), 0
    for blk in range(gen // block):
        lo, hi = p + blk * block, p + (blk + 1) * block
        plan = num_transfer_tokens(block, per_block)
        for s in range(per_block):
            t0 = time.perf_counter()
            logits = model(input_ids=x).logits
            fwd_s += time.perf_counter() - t0
            logits[..., MASK] = torch.finfo(logits.dtype).min
            probs = torch.softmax(logits.float(), dim=-1)
            peak = max(peak, logits.numel() * 4 + probs.numel() * 4)
            x0 = logits.argmax(-1)
            conf = probs.gather(-1, x0[..., None]).squeeze(-1)
            conf[:, :lo] = -torch.inf
            conf[:, hi:] = -torch.inf
            masked = x == MASK
            x0 = torch.where(masked, x0, x)
            conf = torch.where(masked, conf, -torch.inf)
            pick = conf.topk(plan[s], dim=-1).indices
            x.scatter_(1, pick, x0.gather(1, pick))
    return x[:, p:], {"seconds": time.perf_counter() - total0, "forward_s": fwd_s, "peak_bytes": peak}


def engine_loop(adapter, prompts: torch.Tensor, gen: int, block: int, steps: int, max_logits_mb: float):
    cfg = DecodeConfig(gen_length=gen, block_length=block, steps=steps, policy=["none"], trace="off",
                       stop_at_eos=False, max_batch_size=len(prompts), max_batch_tokens=10 ** 9,
                       max_logits_mb=max_logits_mb)
    engine = DecodeEngine(adapter, cfg)
    reqs = [Request(str(i), row.tolist()) for i, row in enumerate(prompts)]
    t0 = time.perf_counter()
    out = engine.generate(reqs, batch_size=len(reqs))
    seconds = time.perf_counter() - t0
    st = engine.projector.stats
    return torch.tensor([r.output_ids for r in out]), {"seconds": seconds, "forward_s": st.forward_s,
                                                       "peak_bytes": st.peak_temp_bytes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--max-logits-mb", type=float, default=256.0)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (batch 2, 4 steps)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cases = [("llada-vocab", 8), ("llada-vocab", 32), ("body-heavy", 32)]
    if args.quick:
        cases, args.steps, args.prompt = [("llada-vocab", 2), ("body-heavy", 2)], 4, 16
    rows = []
    for shape, batch in cases:
        adapter = random_adapter(SHAPES[shape])
        prompts = torch.randint(6, SHAPES[shape]["vocab_size"], (batch, args.prompt),
                                generator=torch.Generator().manual_seed(1))
        plain_out, plain = plain_loop(adapter.model, prompts, args.gen, args.block, args.steps)
        eng_out, eng = engine_loop(adapter, prompts, args.gen, args.block, args.steps, args.max_logits_mb)
        tokens = batch * args.gen
        for name, st in (("plain", plain), ("engine", eng)):
            rows.append({"shape": shape, "batch": batch, "loop": name, "tokens_per_s": tokens / st["seconds"],
                         "step_s": st["seconds"] / args.steps, "forward_share": st["forward_s"] / st["seconds"],
                         "outside_share": 1 - st["forward_s"] / st["seconds"],
                         "peak_logits_mb": st["peak_bytes"] / 2 ** 20,
                         "speedup_vs_plain": plain["seconds"] / st["seconds"],
                         "identical": bool(torch.equal(plain_out, eng_out))})
        print(rows[-2:], flush=True)
    table = print_table(rows, ["shape", "batch", "loop", "tokens_per_s", "step_s", "outside_share",
                               "peak_logits_mb", "speedup_vs_plain", "identical"])
    save_result("step_cost_quick" if args.quick else "step_cost",
                {"args": vars(args), "shapes": SHAPES, "rows": rows, "table": table})
    check_invariant(all(r["identical"] for r in rows), "engine and plain loop decoded different tokens")


if __name__ == "__main__":
    main()
