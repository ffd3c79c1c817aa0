"""Write the long-form workload's prompt shards, held-out set and TSPD prompts (seeded; disjoint from training).

    python -m embedded.longform.make_data

embedded/longform/prompts/shard-00{0..3}.jsonl   the longform config's input: {"id", "task", "prompt"}
embedded/longform/eval/heldout.jsonl             {"id", "task", "prompt", "answer"}: the evaluation set
embedded/longform/tspd/prompts.jsonl             prompts whose traces train its TSPD controller

Training (embedded/longform/train.py) draws from seed `--seed` (0 by default) and its probe from 10,000 + seed;
these files use their own seeds, and `main` checks that none of their prompts is a training-probe prompt.
"""
from __future__ import annotations

from pathlib import Path

from embedded.longform.tasks import sample_examples
from embedded.taskmix.make_data import write_jsonl

HERE = Path(__file__).resolve().parent
PROMPT_SEED, EVAL_SEED, TSPD_SEED = 1_000_012, 2_000_012, 3_000_012
#: training seeds whose probe sets must not overlap the held-out set: the trainer's default and train.sh's
TRAIN_SEEDS = (0, 80)


def main(n_shards: int = 4, per_shard: int = 32, n_eval: int = 200, n_tspd: int = 200) -> None:
    examples = sample_examples(PROMPT_SEED, n_shards * per_shard)
    for s in range(n_shards):
        chunk = examples[s * per_shard:(s + 1) * per_shard]
        write_jsonl(HERE / "prompts" / f"shard-{s:03d}.jsonl",
                    [{"id": f"lf{s}-{i:03d}", "task": e.task, "prompt": e.prompt} for i, e in enumerate(chunk)])
    heldout = sample_examples(EVAL_SEED, n_eval)
    write_jsonl(HERE / "eval" / "heldout.jsonl",
                [{"id": f"lf-eval-{i:04d}", "task": e.task, "prompt": e.prompt, "answer": e.answer}
                 for i, e in enumerate(heldout)])
    write_jsonl(HERE / "tspd" / "prompts.jsonl",
                [{"id": f"lf-tspd-{i:04d}", "prompt": e.prompt} for i, e in enumerate(sample_examples(TSPD_SEED, n_tspd))])
    probe = {e.prompt for seed in TRAIN_SEEDS for e in sample_examples(10_000 + seed, 64)}
    assert not probe & {e.prompt for e in heldout}, "held-out prompts overlap the training probe"


if __name__ == "__main__":
    main()
