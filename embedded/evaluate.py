"""Task-metric evaluation of an embedded workload's held-out set (used by bench/ and the quality tests).

Three workloads: `toy` (embedded/taskmix/model: copy/rev/sort/next of short strings; exact match), `longform`
(embedded/longform/model: summarization-shaped documents; exact match plus bag-of-words token F1 for
partial credit) and `reasoning` (embedded/reasoning/model: reasoning-gym's palindrome_generation, answer
tokens that depend on each other; the library's verifier, any palindrome of the prompt's letters). `WORKLOADS[name]` gives the held-out file, the model and the config of each.
`python -m embedded.evaluate --workload longform --model <checkpoint> --limit 96` scores a checkpoint.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from embedded.taskmix import tasks as taskmix
from embedded.longform import tasks as longform
from embedded.reasoning import tasks as reasoning

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Workload:
    heldout: Path
    model: Path
    config: str | None                      # config layered on default.yaml (None: default.yaml alone)
    exact_match: Callable[[str, str], bool]  # the task metric (prediction, reference answer); tables call it exact_match
    token_score: Callable[[str, str], float] | None = None   # partial credit per answer (0..1)


WORKLOADS = {
    "toy": Workload(HERE / "taskmix" / "eval" / "heldout.jsonl", HERE / "taskmix" / "model", None, taskmix.exact_match),
    "longform": Workload(HERE / "longform" / "eval" / "heldout.jsonl", HERE / "longform" / "model",
                         "configs/longform.yaml", longform.exact_match, longform.token_f1),
    "reasoning": Workload(HERE / "reasoning" / "eval" / "heldout.jsonl", HERE / "reasoning" / "model",
                          "configs/reasoning.yaml", reasoning.correct),
}
HELDOUT = WORKLOADS["toy"].heldout


def load_heldout(limit: int | None = None, workload: str = "toy") -> list[dict]:
    path = WORKLOADS[workload].heldout
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def accuracy(texts: list[str], rows: list[dict], workload: str = "toy") -> float:
    match = WORKLOADS[workload].exact_match
    return sum(match(t, r["answer"]) for t, r in zip(texts, rows)) / max(len(rows), 1)


def token_score(texts: list[str], rows: list[dict], workload: str = "toy") -> float | None:
    """Mean partial-credit score (token F1 on the long-form workload); None where the workload has none."""
    score = WORKLOADS[workload].token_score
    if score is None:
        return None
    return sum(score(t, r["answer"]) for t, r in zip(texts, rows)) / max(len(rows), 1)


def accuracy_by_task(texts: list[str], rows: list[dict], workload: str = "toy") -> dict[str, float]:
    match = WORKLOADS[workload].exact_match
    tasks: dict[str, list[bool]] = {}
    for t, r in zip(texts, rows):
        tasks.setdefault(r["task"], []).append(match(t, r["answer"]))
    return {k: sum(v) / len(v) for k, v in sorted(tasks.items())}


def main(argv: list[str] | None = None) -> dict:
    """Evaluate a checkpoint (the workload's committed model by default) on the held-out set through the
    project's engine at the workload config's full budget (no early exit, no cache); prints one JSON line.

        python -m embedded.evaluate --workload longform --model /tmp/lf/model --limit 96
    """
    import argparse

    import torch

    from settings.loader import load_config
    from decoder.build import load_model
    from decoder.offline import decode_prompts
    from stages.preprocess import load_tokenizer

    ap = argparse.ArgumentParser(description=main.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="longform")
    ap.add_argument("--model", default=None, help="checkpoint directory (default: the workload's model)")
    ap.add_argument("--limit", type=int, default=None, help="first N held-out rows (default: all)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    wl = WORKLOADS[args.workload]
    model = args.model or str(wl.model)
    rows = load_heldout(args.limit, args.workload)
    cfg = load_config(wl.config, ["decode.policy=[none]", "decode.trace=off", "decode.cache=none"]).decode
    run = decode_prompts(load_model(model), load_tokenizer(model), [r["prompt"] for r in rows], cfg,
                         args.batch_size)
    result = {"workload": args.workload, "model": model, "rows": len(rows),
              "exact_match": accuracy(run.texts, rows, args.workload),
              "by_task": accuracy_by_task(run.texts, rows, args.workload),
              "token_score": token_score(run.texts, rows, args.workload), "seconds": round(run.seconds, 1)}
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
