"""Train the long-form embedded masked diffusion LM (CPU, background, seeded, resumable).

Same objective as embedded/taskmix/train.py (unweighted masked CE on answer positions, prompt never
masked, left-padded prompt, position ids = cumsum(mask) - 1), plus two things the long answers need:
- half the batches are masked *block by block* the way semi-autoregressive decoding sees them: blocks
  before a random block b are clean, block b is masked with probability t, later blocks fully masked;
- a curriculum in `--stages` stages from 2-3 short sections to the full shape, moving on only when the
  held-out probe on the current stage's shape reaches `--advance-at` exact match (the induction-style
  copying is learned cheaply on short prompts, then extended to long ones);
- a third masking, `cut`: a clean left context up to a random cut (what a low-confidence decoder builds).
- `--init`: start from another run's checkpoint (the copy circuit forms once, on the first stage's short
  sections, in ~1,000 steps; a new run over a changed curriculum need not pay for it again).
It writes `<out>/curve.jsonl` (loss and held-out greedy exact match over time) and checkpoints every
evaluation (`<out>/latest/` holds the last one, for looking at a running stage's errors), so a run cut
short still leaves the best model so far.

    python embedded/longform/train.py --out embedded/longform/model --minutes 110
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

from embedded.longform.tasks import DEFAULT, MAX_PROMPT_TOKENS, TASKS, Shape, exact_match, make_example
from embedded.longform.tokenizer import build_tokenizer
from decoder.padding import left_pad, position_ids
from transformers import LlamaConfig, LlamaForCausalLM

BLOCK = 32
#: bf16 autocast for the training forward (CPUs with avx512_bf16); set from --bf16.
BF16 = False


FIRST = Shape(sections=(1, 1), sentences=(1, 1), words=(6, 12), notes=(0, 0))


def parse_shape(text: str) -> Shape:
    """"1-1,1-2,2-5[,0-40]" -> Shape(sections=(1, 1), sentences=(1, 2), words=(2, 5), notes=(0, 40));
    notes default to none."""
    parts = [tuple(int(x) for x in part.split("-")) for part in text.split(",")]
    (a, b), (c, d), (e, f) = parts[:3]
    return Shape(sections=(a, b), sentences=(c, d), words=(e, f), notes=parts[3] if len(parts) > 3 else (0, 0))


def shape_at(frac: float, first: Shape = FIRST) -> Shape:
    """Curriculum: the document shape at `frac` of the way from `first` to the full shape (1.0 = DEFAULT)."""
    f = min(1.0, frac)
    lerp = lambda lo, hi: (lo[0] + round((hi[0] - lo[0]) * f), lo[1] + round((hi[1] - lo[1]) * f))  # noqa: E731
    return Shape(sections=lerp(first.sections, DEFAULT.sections), sentences=lerp(first.sentences, DEFAULT.sentences),
                 words=lerp(first.words, DEFAULT.words), notes=lerp(first.notes, DEFAULT.notes))


def make_batch(rng: random.Random, tok, batch_tokens: int, gen_length: int, shape: Shape):
    """([B, P+G] ids, mask, [B, G] answer targets with [EOS] fill) for as many random examples as fit
    `batch_tokens` (at least 4): short curriculum documents train on many more examples per step.

    G is the batch's longest answer + 1, rounded up to a block and capped at `gen_length`: short
    curriculum batches do not pay for a 128-position [EOS] tail (at least one [EOS] block position each).
    """
    exs: list = []
    while True:
        e = make_example(rng, TASKS[rng.randrange(len(TASKS))], shape)
        trial = exs + [e]
        longest = max(len(x.answer.split()) for x in trial) + 1
        g = min(gen_length, BLOCK * -(-longest // BLOCK))
        p = max(len(x.prompt.split()) for x in trial)
        if len(trial) > 4 and len(trial) * (p + g) > batch_tokens:
            break
        exs = trial
    prompts = [tok(e.prompt)["input_ids"] for e in exs]
    longest = max(len(e.answer.split()) for e in exs) + 1
    gen_length = min(gen_length, BLOCK * -(-longest // BLOCK))
    ids, mask = left_pad(prompts, tok.pad_token_id, max(map(len, prompts)))
    answers = torch.full((len(exs), gen_length), tok.eos_token_id, dtype=torch.long)
    for i, e in enumerate(exs):
        a = tok(e.answer)["input_ids"][:gen_length]
        answers[i, : len(a)] = torch.tensor(a)
    return torch.cat([ids, answers], 1), torch.cat([mask, torch.ones_like(answers)], 1), answers


MASKINGS = ("uniform", "blockwise", "cut")


def answer_mask(b: int, g: int, gen: torch.Generator, mode: str) -> torch.Tensor:
    """[B, G] bool: which answer positions are masked (at least one per row).

    `uniform`: each position with probability t ~ U(0, 1) (the MDLM objective); `blockwise`: blocks before
    a random block clean, that block at rate t, later blocks fully masked (what semi-AR decoding sees);
    `cut`: everything left of a random cut clean, the cut position masked, the rest at rate t — the clean
    left context a low-confidence decoder builds up, where copying the next token is learnable at once.
    """
    t = torch.rand(b, 1, generator=gen).clamp(min=1.0 / g)
    masked = torch.rand(b, g, generator=gen) < t
    pos = torch.arange(g).unsqueeze(0)
    if mode == "blockwise":
        start = torch.randint(0, g // BLOCK, (b, 1), generator=gen) * BLOCK
        masked = (masked & (pos >= start)) | (pos >= start + BLOCK)
    elif mode == "cut":
        cut = torch.randint(0, g, (b, 1), generator=gen)
        masked = (masked & (pos > cut)) | (pos == cut)
    masked[torch.arange(b), torch.randint(0, g, (b,), generator=gen)] = True
    return masked


def masked_loss(model, ids, mask, answers, mask_id: int, gen: torch.Generator, mode: str,
                eos_id: int | None = None) -> torch.Tensor:
    """Unweighted masked CE; with `eos_id`, the loss counts only content positions and each row's first EOS
    (the EOS tail of a short answer otherwise dominates the targets). The tail stays masked in the input."""
    b, g = answers.shape
    masked = answer_mask(b, g, gen, mode)
    x = ids.clone()
    x[:, -g:][masked] = mask_id
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=BF16):
        logits = model(input_ids=x, attention_mask=mask, position_ids=position_ids(mask)).logits[:, -g:]
    scored = masked
    if eos_id is not None:
        is_eos = answers == eos_id
        first = is_eos & (is_eos.cumsum(-1) == 1)
        scored = masked & (~is_eos | first)
        if not scored.any():
            scored = masked
    return F.cross_entropy(logits[scored].float(), answers[scored])


@torch.no_grad()
def greedy_decode(model, tok, exs: list, gen_length: int) -> tuple[list[str], list[list[tuple[int, int, float]]]]:
    """A plain low-confidence greedy loop (semi-AR blocks of 32, one token per step) over `exs`' prompts:
    (answer texts, per row the (position, token id, confidence) of each pick in decode order). The answer
    window is the examples' longest answer + 1, rounded up to blocks and capped at `gen_length`."""
    n = len(exs)
    gen_length = min(gen_length, BLOCK * -(-(max(len(e.answer.split()) for e in exs) + 1) // BLOCK))
    prompts = [tok(e.prompt)["input_ids"] for e in exs]
    ids, mask = left_pad(prompts, tok.pad_token_id, max(map(len, prompts)))
    x = torch.cat([ids, torch.full((n, gen_length), tok.mask_token_id)], 1)
    mask = torch.cat([mask, torch.ones(n, gen_length, dtype=mask.dtype)], 1)
    pos, p = position_ids(mask), ids.shape[1]
    rows, picks = torch.arange(n), [[] for _ in range(n)]
    for blk in range(gen_length // BLOCK):
        lo, hi = p + blk * BLOCK, p + (blk + 1) * BLOCK
        for _ in range(BLOCK):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=BF16):
                logits = model(input_ids=x, attention_mask=mask, position_ids=pos).logits[:, lo:hi].float()
            conf, cand = logits.softmax(-1).max(-1)
            still = x[:, lo:hi] == tok.mask_token_id
            best = conf.masked_fill(~still, -1.0).argmax(-1)
            x[rows, lo + best] = cand[rows, best]
            for i, b in enumerate(best.tolist()):
                picks[i].append((blk * BLOCK + b, cand[i, b].item(), round(conf[i, b].item(), 3)))
    texts = [tok.decode([t for t in row.tolist() if t != tok.eos_token_id]) for row in x[:, p:]]
    return texts, picks


def greedy_exact(model, tok, seed: int, n: int, gen_length: int, shape: Shape = DEFAULT) -> dict:
    """Held-out exact match of `greedy_decode` on documents of `shape` — a cheap training-time probe;
    embedded/evaluate.py and the benchmarks run the project's engine."""
    rng = random.Random(seed)
    exs = [make_example(rng, TASKS[i % len(TASKS)], shape) for i in range(n)]
    texts, _ = greedy_decode(model, tok, exs, gen_length)
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
    global BF16
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="embedded/longform/model")
    ap.add_argument("--minutes", type=float, default=110.0, help="wall-clock training budget")
    ap.add_argument("--batch-tokens", type=int, default=8192, help="tokens (prompt + answer window) per batch")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--gen-length", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--stages", type=int, default=5, help="curriculum stages from short documents to the full shape (1: the full shape only)")
    ap.add_argument("--content-loss", action="store_true",
                    help="score only content positions and the first EOS (not the EOS tail)")
    ap.add_argument("--init", default=None, help="start from this checkpoint's weights (same tokenizer and shape)")
    ap.add_argument("--first-shape", default="1-1,1-1,6-12",
                    help="first stage's sections,sentences,words[,notes] ranges (e.g. 1-1,1-2,2-5,0-40)")
    ap.add_argument("--advance-at", type=float, default=0.9, help="probe exact match that moves to the next stage")
    ap.add_argument("--decay", type=float, default=0.15, help="final fraction of the budget with a cosine lr decay")
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--eval-n", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CPUs with avx512_bf16)")
    ap.add_argument("--maskings", default=",".join(MASKINGS), help="masking per batch, cycled (of: %s)" % ", ".join(MASKINGS))
    args = ap.parse_args()
    maskings = args.maskings.split(",")
    if unknown := set(maskings) - set(MASKINGS):
        ap.error(f"unknown masking {sorted(unknown)}; known: {MASKINGS}")

    BF16 = args.bf16
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng, gen = random.Random(args.seed), torch.Generator().manual_seed(args.seed)
    tok = build_tokenizer()
    model = build_model(tok, args)
    if args.init:  # warm start, e.g. from a run whose first stage already formed the copy circuit
        model.load_state_dict(LlamaForCausalLM.from_pretrained(args.init).float().state_dict())
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    budget_s, out = args.minutes * 60, Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curve = (out / "curve.jsonl").open("w")
    print(f"params {n_params:,}; budget {args.minutes} min; {args.batch_tokens} tokens/batch", flush=True)
    first = parse_shape(args.first_shape)
    # one stage = the full shape throughout (a continuation of a run that already reached it)
    shapes = [shape_at(i / (args.stages - 1), first) for i in range(args.stages)] if args.stages > 1 else [DEFAULT]
    t0, ema, step, tokens, stage, best = time.time(), None, 0, 0, 0, -1.0
    while (elapsed := time.time() - t0) < budget_s:
        frac = elapsed / budget_s
        decay = max(0.0, (frac - (1 - args.decay)) / args.decay)
        lr = args.lr * min(1.0, (step + 1) / 200) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * decay)))
        for group in opt.param_groups:
            group["lr"] = lr
        if decay > 0:
            stage = args.stages - 1  # the decay always trains on the full shape
        model.train()
        ids, mask, answers = make_batch(rng, tok, args.batch_tokens, args.gen_length, shapes[stage])
        loss = masked_loss(model, ids, mask, answers, tok.mask_token_id, gen, maskings[step % len(maskings)],
                           tok.eos_token_id if args.content_loss else None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step, tokens = step + 1, tokens + ids.numel()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 50 == 0:
            print(f"step {step} stage {stage} loss {ema:.4f} {tokens / (time.time() - t0):.0f} tok/s", flush=True)
        if step % args.eval_every == 0:
            model.eval()
            ev = greedy_exact(model, tok, 10_000 + args.seed, args.eval_n, args.gen_length, shapes[stage])
            row = {"step": step, "elapsed_s": round(time.time() - t0), "loss_ema": round(ema, 4), "lr": lr,
                   "tokens": tokens, "stage": stage, **ev}
            if stage == args.stages - 1:
                row.update({f"full_{k}": v for k, v in ev.items()})
            curve.write(json.dumps(row) + "\n")
            curve.flush()
            save(model, tok, out / "latest", {"params": n_params, **row, "command": " ".join(sys.argv)})
            print(json.dumps(row), flush=True)
            if stage == args.stages - 1 and ev["exact"] >= best:
                best = ev["exact"]
                save(model, tok, out, {"params": n_params, **row, "command": " ".join(sys.argv), "seed": args.seed})
            if ev["exact"] >= args.advance_at and stage < args.stages - 1:
                stage += 1
                save(model, tok, out, {"params": n_params, **row, "command": " ".join(sys.argv), "seed": args.seed})
    model.eval()
    ev = greedy_exact(model, tok, 10_000 + args.seed, 64, args.gen_length)
    meta = {"params": n_params, "steps": step, "batch_tokens": args.batch_tokens, "lr": args.lr, "seed": args.seed,
            "gen_length": args.gen_length, "final_loss_ema": ema, "tokens": tokens, "stage": stage,
            "train_seconds": round(time.time() - t0, 1), "command": " ".join(sys.argv), **ev}
    if ev["exact"] >= best:
        save(model, tok, out, meta)
    (out / "final.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta), flush=True)


if __name__ == "__main__":
    main()
