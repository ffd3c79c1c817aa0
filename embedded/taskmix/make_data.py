"""Write the shipped prompt shards and the held-out eval set (deterministic; seeds differ from training).

    python -m embedded.taskmix.make_data

embedded/taskmix/prompts/shard-00{0..3}.jsonl   the default run's input: {"id", "prompt"} per line
embedded/taskmix/eval/heldout.jsonl             {"id", "task", "prompt", "answer"} for exact-match evaluation
embedded/taskmix/tspd/prompts.jsonl             prompts whose traces train the TSPD controller (disjoint seed)
"""
from __future__ import annotations

import json
from pathlib import Path

from embedded.taskmix.tasks import EVAL_TASKS, sample_examples

HERE = Path(__file__).resolve().parent
PROMPT_SEED, EVAL_SEED, TSPD_SEED = 1_000_003, 2_000_003, 3_000_003


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def main(n_shards: int = 4, per_shard: int = 32, n_eval: int = 500, n_tspd: int = 400) -> None:
    examples = sample_examples(PROMPT_SEED, n_shards * per_shard, EVAL_TASKS)
    for s in range(n_shards):
        chunk = examples[s * per_shard:(s + 1) * per_shard]
        write_jsonl(HERE / "prompts" / f"shard-{s:03d}.jsonl",
                    [{"id": f"s{s}-{i:03d}", "prompt": e.prompt} for i, e in enumerate(chunk)])
    write_jsonl(HERE / "eval" / "heldout.jsonl",
                [{"id": f"eval-{i:04d}", "task": e.task, "prompt": e.prompt, "answer": e.answer}
                 for i, e in enumerate(sample_examples(EVAL_SEED, n_eval, EVAL_TASKS))])
    write_jsonl(HERE / "tspd" / "prompts.jsonl",
                [{"id": f"tspd-{i:04d}", "prompt": e.prompt} for i, e in enumerate(sample_examples(TSPD_SEED, n_tspd, EVAL_TASKS))])


if __name__ == "__main__":
    main()

