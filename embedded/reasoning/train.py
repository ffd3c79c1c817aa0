"""Train the reasoning workload's masked diffusion LM from scratch (CPU, seeded, a budget in steps).

The objective and the pieces are the long-form trainer's (embedded/longform/train.py, imported): unweighted
masked CE on the answer window (prompt never masked, left-padded prompt, position ids = cumsum(mask) - 1),
stock `LlamaForCausalLM` with `is_causal=False` and `mask_token_id` in its config, saved in float16.
Batches alternate two maskings: `uniform` (t ~ U(0, 1), the MDLM objective) and `cut` (a clean answer
prefix, the rest masked at rate t), which is what a one-token-per-step decoder sees as it fills the answer
left to right.

Examples come from the committed pool embedded/reasoning/data/train.jsonl.gz (make_data.py), drawn by a
seeded generator; its last `PROBE` rows are never trained on and are the training-time probe. The probe
decodes them with a plain low-confidence loop (blocks of 8) at one token per step, 2 per step and 4 per
step (1/4 of the steps), scored with the task metric (`tasks.correct`), so the curve shows both the
accuracy and the gap early exit is about; the held-out set is scored through the engine by
`python -m embedded.evaluate --workload reasoning`.

    python embedded/reasoning/train.py --out /tmp/rs/model --steps 4000
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

from decoder.padding import left_pad, position_ids
from embedded.longform.train import build_model, masked_loss, save
from embedded.reasoning.tasks import BLOCK_LENGTH, GEN_LENGTH, correct
from embedded.reasoning.tokenizer import build_tokenizer

POOL = Path(__file__).resolve().parent / "data" / "train.jsonl.gz"
PROBE = 128
MASKINGS = ("uniform", "cut")


def load_pool(path: Path = POOL) -> list[dict]:
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def encode(tok, rows: list[dict]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) per row; one token per character."""
    return [(tok.convert_tokens_to_ids(list(r["prompt"])), tok.convert_tokens_to_ids(list(r["answer"]))) for r in rows]


def make_batch(pairs: list[tuple[list[int], list[int]]], tok, gen_length: int = GEN_LENGTH):
    """([B, P+G] ids, mask, [B, G] answer targets with [EOS] fill)."""
    ids, mask = left_pad([p for p, _ in pairs], tok.pad_token_id, max(len(p) for p, _ in pairs))
    answers = torch.full((len(pairs), gen_length), tok.eos_token_id, dtype=torch.long)
    for i, (_, a) in enumerate(pairs):
        answers[i, : len(a)] = torch.tensor(a)
    return torch.cat([ids, answers], 1), torch.cat([mask, torch.ones_like(answers)], 1), answers


@torch.no_grad()
def greedy_decode(model, tok, pairs, per_step: int, gen_length: int = GEN_LENGTH, block: int = BLOCK_LENGTH) -> list[str]:
    """Semi-autoregressive low-confidence decoding, `per_step` tokens committed per step in each block of
    `block` (1: the full budget, steps == gen_length). Returns the answer texts without [EOS]."""
    ids, mask, _ = make_batch(pairs, tok, gen_length)
    x, p, rows = ids.clone(), ids.shape[1] - gen_length, torch.arange(len(pairs))
    x[:, p:] = tok.mask_token_id
    pos = position_ids(mask)
    for lo in range(p, p + gen_length, block):
        for _ in range(-(-block // per_step)):
            conf, cand = model(input_ids=x, attention_mask=mask, position_ids=pos).logits[:, lo:lo + block].softmax(-1).max(-1)
            still = x[:, lo:lo + block] == tok.mask_token_id
            k = min(per_step, int(still.sum(-1).max()))
            if k == 0:
                break
            top = conf.masked_fill(~still, -1.0).topk(k, -1).indices
            for j in range(k):
                pick = still[rows, top[:, j]]
                x[rows[pick], lo + top[pick, j]] = cand[rows[pick], top[pick, j]]
    return [tok.decode([t for t in row.tolist() if t != tok.eos_token_id]) for row in x[:, p:]]


def probe(model, tok, rows: list[dict], pairs) -> dict:
    """The task metric on the probe rows at 1, 2 and 4 tokens per step (all, 1/2 and 1/4 of the steps)."""
    out = {}
    for per_step, name in ((1, "full"), (2, "half"), (4, "quarter")):
        hits = [correct(t, r["answer"]) for t, r in zip(greedy_decode(model, tok, pairs, per_step), rows)]
        out[f"{name}_correct"] = round(sum(hits) / len(hits), 4)
    return out


def lr_at(step: int, args) -> float:
    """Linear warm-up over 200 steps, constant, then a cosine decay to 5 % over the last `decay` fraction."""
    decay = max(0.0, (step / args.steps - (1 - args.decay)) / args.decay)
    return args.lr * min(1.0, (step + 1) / 200) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, decay))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=4000, help="the budget: optimizer steps")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--decay", type=float, default=0.3, help="final fraction of the steps with a cosine lr decay")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--eval-every", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    args.gen_length = GEN_LENGTH  # build_model reads it

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng, gen = random.Random(args.seed), torch.Generator().manual_seed(args.seed)
    tok = build_tokenizer()
    rows = load_pool()
    train, probe_rows = encode(tok, rows[:-PROBE]), rows[-PROBE:]
    probe_pairs = encode(tok, probe_rows)
    model = build_model(tok, args)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curve = (out / "curve.jsonl").open("w")
    print(f"params {n_params:,}; pool {len(train):,}; steps {args.steps}; batch {args.batch_size}", flush=True)
    t0, ema, tokens = time.time(), None, 0
    for step in range(1, args.steps + 1):
        for group in opt.param_groups:
            group["lr"] = lr_at(step - 1, args)
        model.train()
        ids, mask, answers = make_batch([train[rng.randrange(len(train))] for _ in range(args.batch_size)], tok)
        loss = masked_loss(model, ids, mask, answers, tok.mask_token_id, gen, MASKINGS[step % len(MASKINGS)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += ids.numel()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 100 == 0:
            print(f"step {step} loss {ema:.4f} {tokens / (time.time() - t0):.0f} tok/s", flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            row = {"step": step, "elapsed_s": round(time.time() - t0), "loss_ema": round(ema, 4),
                   "lr": round(lr_at(step - 1, args), 6), "tokens": tokens, **probe(model, tok, probe_rows, probe_pairs)}
            curve.write(json.dumps(row) + "\n")
            curve.flush()
            print(json.dumps(row), flush=True)
            save(model, tok, out / "latest", {"params": n_params, **row, "command": " ".join(sys.argv)})
    meta = {**row, "params": n_params, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
            "seed": args.seed, "hidden": args.hidden, "layers": args.layers, "heads": args.heads,
            "gen_length": GEN_LENGTH, "train_seconds": round(time.time() - t0, 1), "command": " ".join(sys.argv)}
    save(model, tok, out, meta)
    print(json.dumps(meta), flush=True)


if __name__ == "__main__":
    main()
