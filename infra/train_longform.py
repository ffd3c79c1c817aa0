"""Train the long-form embedded masked diffusion LM (CPU, background, seeded, resumable).

Same objective as infra/train_embedded.py (unweighted masked CE on answer positions, prompt never
masked, left-padded prompt, position ids = cumsum(mask) - 1), plus two things the long answers need:
- half the batches are masked *block by block* the way semi-autoregressive decoding sees them: blocks
  before a random block b are clean, block b is masked with probability t, later blocks fully masked;
- a curriculum: documents grow from 2-3 short sections to the full shape over `--curriculum` of the run
  (the induction-style copying is learned cheaply on short prompts, then extended to long ones).
It writes `<out>/curve.jsonl` (loss and held-out greedy exact match over time) and checkpoints every
`--save-every` steps, so a run cut short still leaves the best model so far.

    python infra/train_longform.py --out embedded/longform/model --minutes 110
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from embedded.longform.tasks import DEFAULT, MAX_PROMPT_TOKENS, TASKS, Shape, exact_match, make_example  # noqa: E402
from embedded.longform.tokenizer import build_tokenizer  # noqa: E402
from stages.decode.padding import left_pad, position_ids  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

BLOCK = 32


def shape_at(frac: float) -> Shape:
    """Curriculum: the document shape at `frac` of the curriculum (1.0 = DEFAULT)."""
    f = min(1.0, frac)
    lerp = lambda lo, hi: (lo[0] + round((hi[0] - lo[0]) * f), lo[1] + round((hi[1] - lo[1]) * f))  # noqa: E731
    return Shape(sections=lerp((2, 3), DEFAULT.sections), sentences=lerp((2, 3), DEFAULT.sentences),
                 words=lerp((3, 6), DEFAULT.words))


def make_batch(rng: random.Random, tok, n: int, gen_length: int, shape: Shape):
    """([B, P+G] ids, mask, [B, G] answer targets with [EOS] fill) for `n` random examples.

    G is the batch's longest answer + 1, rounded up to a block and capped at `gen_length`: short
    curriculum batches do not pay for a 128-position [EOS] tail (at least one [EOS] block position each).
    """
    exs = [make_example(rng, TASKS[rng.randrange(len(TASKS))], shape) for _ in range(n)]
    prompts = [tok(e.prompt)["input_ids"] for e in exs]
    longest = max(len(e.answer.split()) for e in exs) + 1
    gen_length = min(gen_length, BLOCK * -(-longest // BLOCK))
    ids, mask = left_pad(prompts, tok.pad_token_id, max(map(len, prompts)))
    answers = torch.full((n, gen_length), tok.eos_token_id, dtype=torch.long)
    for i, e in enumerate(exs):
        a = tok(e.answer)["input_ids"][:gen_length]
        answers[i, : len(a)] = torch.tensor(a)
    return torch.cat([ids, answers], 1), torch.cat([mask, torch.ones_like(answers)], 1), answers


def answer_mask(b: int, g: int, gen: torch.Generator, blockwise: bool) -> torch.Tensor:
    """[B, G] bool: which answer positions are masked (at least one per row)."""
    t = torch.rand(b, 1, generator=gen).clamp(min=1.0 / g)
    masked = torch.rand(b, g, generator=gen) < t
    if blockwise:
        pos = torch.arange(g).unsqueeze(0)
        start = torch.randint(0, g // BLOCK, (b, 1), generator=gen) * BLOCK
        masked = (masked & (pos >= start)) | (pos >= start + BLOCK)
    masked[torch.arange(b), torch.randint(0, g, (b,), generator=gen)] = True
    return masked


def masked_loss(model, ids, mask, answers, mask_id: int, gen: torch.Generator, blockwise: bool) -> torch.Tensor:
    b, g = answers.shape
    masked = answer_mask(b, g, gen, blockwise)
    x = ids.clone()
    x[:, -g:][masked] = mask_id
    logits = model(input_ids=x, attention_mask=mask, position_ids=position_ids(mask)).logits[:, -g:]
    return F.cross_entropy(logits[masked].float(), answers[masked])


@torch.no_grad()
def greedy_exact(model, tok, seed: int, n: int, gen_length: int, steps: int) -> dict:
    """Held-out exact match, plain low-confidence greedy loop, semi-AR blocks of 32, `steps` steps (a cheap
    training-time probe; embedded/longform/evaluate.py runs the project's engine at the full budget)."""
    rng = random.Random(seed)
    exs = [make_example(rng, TASKS[i % len(TASKS)]) for i in range(n)]
    prompts = [tok(e.prompt)["input_ids"] for e in exs]
    ids, mask = left_pad(prompts, tok.pad_token_id, max(map(len, prompts)))
    x = torch.cat([ids, torch.full((n, gen_length), tok.mask_token_id)], 1)
    mask = torch.cat([mask, torch.ones(n, gen_length, dtype=mask.dtype)], 1)
    pos, p = position_ids(mask), ids.shape[1]
    per_block = steps // (gen_length // BLOCK)
    for blk in range(gen_length // BLOCK):
        lo, hi = p + blk * BLOCK, p + (blk + 1) * BLOCK
        for s in range(per_block):
            logits = model(input_ids=x, attention_mask=mask, position_ids=pos).logits[:, lo:hi].float()
            conf, cand = logits.softmax(-1).max(-1)
            still = x[:, lo:hi] == tok.mask_token_id
            k = math.ceil(BLOCK / per_block)
            conf = conf.masked_fill(~still, -1.0)
            top = conf.topk(min(k, BLOCK), -1).indices
            pick = torch.zeros_like(still).scatter_(1, top, True) & still
            x[:, lo:hi] = torch.where(pick, cand, x[:, lo:hi])
    texts = [tok.decode([t for t in row.tolist() if t != tok.eos_token_id]) for row in x[:, p:]]
    hits = [exact_match(t, e.answer) for t, e in zip(texts, exs)]
    by_task = {t: sum(h for h, e in zip(hits, exs) if e.task == t) / max(1, sum(e.task == t for e in exs)) for t in TASKS}
    return {"exact": sum(hits) / n, **{f"exact_{t}": v for t, v in by_task.items()}}


def build_model(tok, args) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=args.hidden * 3,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
        max_position_embeddings=MAX_PROMPT_TOKENS + args.gen_length + 12, rope_theta=10000.0,
        tie_word_embeddings=True, is_causal=False, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=None, mask_token_id=tok.mask_token_id,
    )
    return LlamaForCausalLM(cfg)


def save(model, tok, out: Path, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    half = LlamaForCausalLM(model.config)
    half.load_state_dict(model.state_dict())
    half.to(torch.float16).save_pretrained(out)
    tok.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="embedded/longform/model")
    ap.add_argument("--minutes", type=float, default=110.0, help="wall-clock training budget")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--gen-length", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--curriculum", type=float, default=0.4, help="fraction of the budget spent growing documents")
    ap.add_argument("--eval-every", type=int, default=300)
    ap.add_argument("--eval-n", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng, gen = random.Random(args.seed), torch.Generator().manual_seed(args.seed)
    tok = build_tokenizer()
    model = build_model(tok, args)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    budget_s, out = args.minutes * 60, Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curve = (out / "curve.jsonl").open("w")
    print(f"params {n_params:,}; budget {args.minutes} min; batch {args.batch_size}", flush=True)
    t0, ema, step, tokens = time.time(), None, 0, 0
    while (elapsed := time.time() - t0) < budget_s:
        frac = elapsed / budget_s
        lr = args.lr * min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        ids, mask, answers = make_batch(rng, tok, args.batch_size, args.gen_length, shape_at(frac / args.curriculum))
        loss = masked_loss(model, ids, mask, answers, tok.mask_token_id, gen, blockwise=step % 2 == 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step, tokens = step + 1, tokens + ids.numel()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 50 == 0:
            print(f"step {step} loss {ema:.4f} {tokens / (time.time() - t0):.0f} tok/s", flush=True)
        if step % args.eval_every == 0:
            model.eval()
            ev = greedy_exact(model, tok, 10_000 + args.seed, args.eval_n, args.gen_length, args.gen_length // 2)
            row = {"step": step, "elapsed_s": round(time.time() - t0), "loss_ema": round(ema, 4), "lr": lr,
                   "tokens": tokens, "curriculum": round(min(1.0, frac / args.curriculum), 3), **ev}
            curve.write(json.dumps(row) + "\n")
            curve.flush()
            print(json.dumps(row), flush=True)
            save(model, tok, out, {"params": n_params, **row, "command": " ".join(sys.argv), "seed": args.seed})
    model.eval()
    ev = greedy_exact(model, tok, 10_000 + args.seed, 64, args.gen_length, args.gen_length // 2)
    meta = {"params": n_params, "steps": step, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
            "gen_length": args.gen_length, "final_loss_ema": ema, "tokens": tokens,
            "train_seconds": round(time.time() - t0, 1), "command": " ".join(sys.argv), **ev}
    save(model, tok, out, meta)
    print(json.dumps(meta), flush=True)


if __name__ == "__main__":
    main()
