"""Where a long-form checkpoint goes wrong: decode documents of one curriculum shape, print each wrong answer.

    python infra/longform_errors.py <checkpoint> [--frac 0.2] [--first-shape 1-1,1-1,6-12] [--n 24]

`--frac` is the curriculum position (0 = the first stage's shape, 1 = the full DEFAULT shape) as in
embedded/longform/train.py. For each wrong answer it prints the task, the prompt's start, the wanted and the
decoded answer, the first mismatching position and the first picks in decode order (position, token,
confidence): enough to tell a copy that stops at the wrong place from one that looks in the wrong place.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train_longform import greedy_decode, parse_shape, shape_at  # noqa: E402
from embedded.longform.tasks import TASKS, exact_match, make_example  # noqa: E402
from embedded.longform.tokenizer import build_tokenizer  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--frac", type=float, default=1.0)
    ap.add_argument("--first-shape", default="1-1,1-1,6-12")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--seed", type=int, default=99)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tok, model = build_tokenizer(), LlamaForCausalLM.from_pretrained(args.checkpoint).float().eval()
    shape = shape_at(args.frac, parse_shape(args.first_shape))
    rng = random.Random(args.seed)
    exs = [make_example(rng, TASKS[i % len(TASKS)], shape) for i in range(args.n)]
    texts, picks = greedy_decode(model, tok, exs, 128)
    print(shape)
    for e, text, order in zip(exs, texts, picks):
        if exact_match(text, e.answer):
            continue
        got, want = text.split(), e.answer.split()
        bad = next(j for j in range(max(len(got), len(want)) + 1) if got[j:j + 1] != want[j:j + 1])
        print(f"{e.task} | {e.prompt[:100]} ...\n  want {e.answer}\n  got  {text}\n  first mismatch at {bad}; "
              f"first picks {[(p, tok.convert_ids_to_tokens(t), c) for p, t, c in order[:8]]}")
    print(f"exact {sum(exact_match(t, e.answer) for t, e in zip(texts, exs)) / len(exs):.3f}")


if __name__ == "__main__":
    main()
