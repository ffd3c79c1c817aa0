"""Generate the reasoning workload's data once with reasoning-gym (pinned in requirements-reasoning.txt)
and write it as jsonl, so that training, the runtime and the tests never import the library.

    /work/reason-venv/bin/python -m embedded.reasoning.make_data     # a venv holding reasoning-gym

embedded/reasoning/data/train.jsonl.gz     the training pool: {"task", "prompt", "answer"}
embedded/reasoning/eval/heldout.jsonl      {"id", "task", "prompt", "answer"}: the held-out set
embedded/reasoning/tspd/prompts.jsonl      prompts whose traces train its TSPD controller
embedded/reasoning/prompts/shard-00{0..3}.jsonl   configs/reasoning.yaml's input: {"id", "task", "prompt"}

Each file draws from its own seed (reasoning-gym entry i of seed s uses Random(s + i), and the seeds are
further apart than the sizes); the training pool then drops every prompt that occurs in another file.
Every rendered reference is checked with the library's own `score_answer` (it must score 1.0), and
`tasks.correct` must agree with it on the reference and on wrong answers made from it.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from embedded.reasoning.tasks import SETTINGS, TASKS, correct, render, well_formed
from embedded.taskmix.make_data import write_jsonl

HERE = Path(__file__).resolve().parent
TRAIN_SEED, EVAL_SEED, TSPD_SEED, PROMPT_SEED = 0, 10_000_000, 20_000_000, 30_000_000


def examples(seed: int, n: int) -> list[dict]:
    """`n` rendered entries, alternating the tasks (n // len(TASKS) of each, interleaved), each verified
    with the library's `score_answer`."""
    import reasoning_gym

    per_task = []
    for task in TASKS:
        data = reasoning_gym.create_dataset(task, seed=seed, size=n // len(TASKS), **SETTINGS[task])
        rows = []
        for entry in data:
            prompt, answer = render(entry)
            assert well_formed(task, answer), (task, answer)
            assert data.score_answer(answer, entry) == 1.0, (entry, answer)
            for wrong in _variants(answer):  # the metric is the library's verifier
                assert correct(wrong, answer) == (data.score_answer(wrong, entry) == 1.0), (entry, wrong)
            rows.append({"task": task, "prompt": prompt, "answer": answer})
        per_task.append(rows)
    return [row for group in zip(*per_task) for row in group]


def _variants(answer: str) -> list[str]:
    """Answers made from a right one: its halves swapped (right), two letters swapped, one changed, one
    dropped, the mirror broken (mostly wrong)."""
    half = len(answer) // 2
    changed = ("a" if answer[0] != "a" else "b") + answer[1:]
    return [answer[half:] + answer[:half], answer[1] + answer[0] + answer[2:], changed, answer[1:],
            answer[:half] + answer[:half], answer.upper(), f" {answer} "]


def main(n_train: int = 200_000, n_eval: int = 512, n_tspd: int = 400, n_shards: int = 4, per_shard: int = 32) -> None:
    heldout, tspd = examples(EVAL_SEED, n_eval), examples(TSPD_SEED, n_tspd)
    shards = examples(PROMPT_SEED, n_shards * per_shard)
    write_jsonl(HERE / "eval" / "heldout.jsonl",
                [{"id": f"rs-eval-{i:04d}", **r} for i, r in enumerate(heldout)])
    write_jsonl(HERE / "tspd" / "prompts.jsonl",
                [{"id": f"rs-tspd-{i:04d}", "task": r["task"], "prompt": r["prompt"]} for i, r in enumerate(tspd)])
    for s in range(n_shards):
        write_jsonl(HERE / "prompts" / f"shard-{s:03d}.jsonl",
                    [{"id": f"rs{s}-{i:03d}", "task": r["task"], "prompt": r["prompt"]}
                     for i, r in enumerate(shards[s * per_shard:(s + 1) * per_shard])])
    other = {r["prompt"] for r in heldout + tspd + shards}
    train = [r for r in examples(TRAIN_SEED, n_train) if r["prompt"] not in other]
    path = HERE / "data" / "train.jsonl.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", compresslevel=9) as f:
        f.writelines(json.dumps(r, separators=(",", ":")) + "\n" for r in train)
    print(f"train {len(train)} (dropped {n_train - len(train)} shared prompts), heldout {len(heldout)}, "
          f"tspd {len(tspd)}, shards {n_shards} x {per_shard}")


if __name__ == "__main__":
    main()
