"""A run and its cost report from Python: the same commands as `pipeline.py run` and `pipeline.py report`.

    .venv/bin/python examples/cost_report.py [OUT_DIR]

Decodes the shipped prompts twice, once with SchED's early exit and once at the full budget, then reports
the first against the second: steps and accelerator time saved, agreement, and what it costs at a price
per GPU-hour. The report's files (HTML page, summary tables) are under OUT_DIR/report.
"""
import sys
import tempfile
from pathlib import Path

import pipeline

ROOT = Path(__file__).resolve().parents[1]
out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="dllm-report-"))
prompts = ROOT / "embedded/taskmix/prompts/shard-000.jsonl"
common = [f"input.url={prompts}", "progress=false"]
for argv in ([*common, f"output.url={out}/sched", "decode.policy=[sched]"],
             [*common, f"output.url={out}/full", "decode.policy=[none]"],
             ["report", str(out / "sched"), "--baseline", str(out / "full"), "--price-per-gpu-hour", "2.5",
              "--out", str(out / "report")]):
    if pipeline.main(argv):
        raise SystemExit(f"pipeline.py {' '.join(argv)} failed")
print(f"report: {out / 'report'}")
