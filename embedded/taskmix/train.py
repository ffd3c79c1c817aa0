"""Train the embedded masked diffusion LM on the task mix (CPU, minutes, seeded).

Objective: LLaDA/MDLM masking (t ~ U(0,1), each answer position masked with probability t, prompt
never masked) with the *unweighted* masked cross-entropy — same optimum as the 1/t-weighted ELBO, far
lower gradient variance; on this CPU it is the one a tiny model learns with (shared/DESIGN.md).
Layout matches inference exactly: left-padded prompt, then `gen_length` answer positions holding the
answer followed by [EOS] fill, attention mask over pads, position ids = cumsum(mask) - 1.

    python embedded/taskmix/train.py --out embedded/taskmix/model --steps 4000
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from embedded.taskmix.tasks import TASKS, exact_match, make_example
from embedded.taskmix.tokenizer import build_tokenizer
from decoder.padding import left_pad, position_ids
from transformers import LlamaConfig, LlamaForCausalLM

PROMPT_WIDTH = 24


def make_batch(rng: random.Random, tok, n: int, gen_length: int):
    """([B, P+G] ids, mask, [B, G] answer targets) for `n` random examples."""
    exs = [make_example(rng, TASKS[rng.randrange(len(TASKS))]) for _ in range(n)]
    prompts = [tok(e.prompt)["input_ids"] for e in exs]
    ids, mask = left_pad(prompts, tok.pad_token_id, PROMPT_WIDTH)
    answers = torch.full((n, gen_length), tok.eos_token_id, dtype=torch.long)
    for i, e in enumerate(exs):
        a = tok(e.answer)["input_ids"]
        answers[i, : len(a)] = torch.tensor(a)
    ids = torch.cat([ids, answers], 1)
    mask = torch.cat([mask, torch.ones_like(answers)], 1)
    return ids, mask, answers


def masked_loss(model, ids, mask, answers, mask_id: int, gen: torch.Generator) -> torch.Tensor:
    b, g = answers.shape
    t = torch.rand(b, 1, generator=gen).clamp(min=1.0 / g)
    masked = torch.rand(b, g, generator=gen) < t
    masked[torch.arange(b), torch.randint(0, g, (b,), generator=gen)] = True  # at least one per row
    x = ids.clone()
    x[:, -g:][masked] = mask_id
    logits = model(input_ids=x, attention_mask=mask, position_ids=position_ids(mask)).logits[:, -g:]
    return F.cross_entropy(logits[masked].float(), answers[masked])


@torch.no_grad()
def one_shot_accuracy(model, tok, seed: int, n: int, gen_length: int) -> float:
    """Exact match of a single all-masked forward's argmax: a cheap lower bound on decode quality."""
    rng = random.Random(seed)
    ids, mask, answers = make_batch(rng, tok, n, gen_length)
    x = ids.clone()
    x[:, -gen_length:] = tok.mask_token_id
    pred = model(input_ids=x, attention_mask=mask, position_ids=position_ids(mask)).logits[:, -gen_length:].argmax(-1)
    return (pred == answers).all(-1).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="embedded/taskmix/model")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--gen-length", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    tok = build_tokenizer()
    cfg = LlamaConfig(
        vocab_size=48, hidden_size=args.hidden, intermediate_size=args.hidden * 3,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
        max_position_embeddings=64, rope_theta=10000.0, tie_word_embeddings=True, is_causal=False,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
        mask_token_id=tok.mask_token_id,
    )
    model = LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, args.steps // 30)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))))
    print(f"params {n_params:,}; steps {args.steps}; batch {args.batch_size}", flush=True)
    t0, ema = time.time(), None
    for step in range(1, args.steps + 1):
        model.train()
        ids, mask, answers = make_batch(rng, tok, args.batch_size, args.gen_length)
        loss = masked_loss(model, ids, mask, answers, tok.mask_token_id, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 250 == 0 or step == args.steps:
            model.eval()
            acc = one_shot_accuracy(model, tok, 10_000 + args.seed, 256, args.gen_length)
            print(f"step {step} loss {ema:.4f} one-shot-exact {acc:.3f} elapsed {time.time() - t0:.0f}s", flush=True)
    out = Path(args.out)
    model.eval()
    model.to(torch.float16).save_pretrained(out)
    tok.save_pretrained(out)
    meta = {"params": n_params, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
            "seed": args.seed, "gen_length": args.gen_length, "final_loss_ema": ema,
            "train_seconds": round(time.time() - t0, 1), "command": " ".join(sys.argv)}
    (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
