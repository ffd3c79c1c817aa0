"""Record the engine's decodes of held-out prompts for every policy combination (a regression baseline).

Run once with the engine as it stood before the lean-step refactor (commit c39fb5e) and committed as
tests/decoder/data/golden_policies.json; tests/decoder/test_lean_step.py asserts the current engine still
produces the same tokens, step counts, exit reasons and commit steps. Re-run only on purpose:

    .venv/bin/python -m tests.decoder.make_golden
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from embedded.evaluate import load_heldout
from settings.loader import load_config
from decoder.masked.engine import DecodeEngine
from decoder.types import Request
from stages.preprocess import load_tokenizer
from tests.support import EMBEDDED_MODEL, ROOT
from tests.support.models import embedded_adapter

OUT = Path(__file__).resolve().parent / "data" / "golden_policies.json"
N_PROMPTS = 32
#: name -> config overrides; every policy combination the engine registers, plus the remasking scores.
CASES = {
    "none": ["decode.policy=[none]"],
    "none-margin": ["decode.policy=[none]", "decode.remasking=margin"],
    "none-entropy": ["decode.policy=[none]", "decode.remasking=entropy"],
    "none-random": ["decode.policy=[none]", "decode.remasking=random"],
    "sched-mean": ["decode.policy=[sched]", "decode.sched.aggregate=mean", "decode.sched.schedule=cosine"],
    "sched-median": ["decode.policy=[sched]", "decode.sched.aggregate=median"],
    "sched-min": ["decode.policy=[sched]", "decode.sched.aggregate=min"],
    "sched-quantile": ["decode.policy=[sched]", "decode.sched.aggregate=quantile", "decode.sched.quantile=0.25"],
    "fastdllm": ["decode.policy=[fastdllm]"],
    "prophet": ["decode.policy=[prophet]"],
    "tspd": ["decode.policy=[tspd]"],
    "tspd+ce": ["decode.policy=[tspd,ce]"],
    "tspd+ce+sched": ["decode.policy=[tspd,ce,sched]"],
    "fastdllm+ce": ["decode.policy=[fastdllm,ce]"],
}
TEMPERATURES = (0.0, 0.7)
BATCHES = (1, 16)


def requests(tok) -> list[Request]:
    rows = load_heldout(N_PROMPTS)
    return [Request(r["id"], tok(r["prompt"], add_special_tokens=False)["input_ids"]) for r in rows]


def decode_case(adapter, overrides: list[str], temperature: float, batch: int, reqs: list[Request]) -> dict:
    cfg = load_config(str(ROOT / "configs/default.yaml"),
                      [*overrides, f"decode.temperature={temperature}", "decode.trace=off"]).decode
    out = DecodeEngine(adapter, cfg).generate(reqs, batch_size=batch)
    return {r.id: {"output_ids": r.output_ids, "steps_taken": r.steps_taken, "exit_reason": r.exit_reason,
                   "commit_step": r.commit_step} for r in out}


def main() -> None:
    torch.set_num_threads(1)
    adapter = embedded_adapter()
    reqs = requests(load_tokenizer(str(EMBEDDED_MODEL)))
    golden = {f"{name}|T={t}|B={b}": decode_case(adapter, ov, t, b, reqs)
              for name, ov in CASES.items() for t in TEMPERATURES for b in BATCHES}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(golden, separators=(",", ":")) + "\n")
    print(f"{OUT}: {len(golden)} cases x {len(reqs)} prompts")


if __name__ == "__main__":
    main()
