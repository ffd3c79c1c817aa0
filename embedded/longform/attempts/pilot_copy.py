"""Pilot: how fast a tiny bidirectional Llama learns to copy 2-12 distinct tokens drawn from a vocabulary of V.

    python embedded/longform/attempts/pilot_copy.py V MINUTES [PREFIX [HEADS [uniform|cut]]]
    (1 thread; hidden 128, 4 layers, HEADS heads (4), batch 64)

Prompt `f1 .. fm [COPY] w1 .. wk [=]` with m ~ U(0, PREFIX) distinct filler tokens (PREFIX 0 by default: no
filler; with filler, the copied words no longer sit at a fixed distance from the prompt's start), answer `w1 .. wk` then [EOS] up to 16 positions; LLaDA masking, unweighted
masked CE, AdamW lr 1e-3. Prints the loss and the argmax accuracy at masked content positions every 50
steps. What it showed (embedded/longform/README.md, "Attempts"): the copy circuit forms at ~1,000 steps
with V = 48, 256 or 512, and had not started by step 850 with V = 2,000 — the long-form word pool's size.
"""
from __future__ import annotations

import random
import sys
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

PAD, MASK, EOS, COPY, EQ, OFFSET, G = 0, 1, 2, 3, 4, 5, 16


def batch(rng: random.Random, vocab: int, prefix: int, n: int = 64):
    prompts, answers = [], []
    for _ in range(n):
        k, m = rng.randint(2, 12), rng.randint(0, prefix)
        drawn = [OFFSET + x for x in rng.sample(range(vocab), k + m)]
        words, filler = drawn[:k], drawn[k:]
        prompts.append([*filler, COPY, *words, EQ])
        answers.append(words + [EOS] * (G - len(words)))
    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p + a for p, a in zip(prompts, answers)])
    return ids, (ids != PAD).long(), torch.tensor(answers)


def main() -> None:
    vocab, minutes = int(sys.argv[1]), float(sys.argv[2])
    prefix = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    heads = int(sys.argv[4]) if len(sys.argv) > 4 else 4  # head dim = 128 / heads
    masking = sys.argv[5] if len(sys.argv) > 5 else "uniform"  # or "cut": clean left of a random cut
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=OFFSET + vocab, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                      num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=256,
                      tie_word_embeddings=True, is_causal=False, pad_token_id=PAD)
    model = LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, betas=(0.9, 0.98))
    rng, t0, step, acc_ema = random.Random(0), time.time(), 0, None
    while time.time() - t0 < minutes * 60:
        ids, attn, ans = batch(rng, vocab, prefix)
        b, g = ans.shape
        t = torch.rand(b, 1).clamp(min=1 / g)
        masked = torch.rand(b, g) < t
        if masking == "cut":
            pos, cut = torch.arange(g).unsqueeze(0), torch.randint(0, g, (b, 1))
            masked = (masked & (pos > cut)) | (pos == cut)
        masked[torch.arange(b), torch.randint(0, g, (b,))] = True
        x = ids.clone()
        x[:, -g:][masked] = MASK
        logits = model(input_ids=x, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0)).logits[:, -g:]
        loss = F.cross_entropy(logits[masked], ans[masked])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        content = masked & (ans != EOS)
        acc = (logits[content].argmax(-1) == ans[content]).float().mean().item()
        acc_ema = acc if acc_ema is None else 0.95 * acc_ema + 0.05 * acc
        if step % 50 == 0:
            print(f"{time.time() - t0:.0f}s step {step} loss {loss.item():.3f} content-acc {acc_ema:.3f}", flush=True)


if __name__ == "__main__":
    main()
