"""Helpers shared by the benchmark scripts: argument defaults, table printing, JSON results."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
#: Where results go; BENCH_RESULTS_DIR redirects them (smoke runs, e.g. bench/gpu_all.py --smoke in the tests).
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or ROOT / "bench" / "results")


def print_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    widths = {c: max(len(c), *(len(fmt(r[c])) for r in rows)) for c in columns}
    lines = [" | ".join(c.ljust(widths[c]) for c in columns), "-|-".join("-" * widths[c] for c in columns)]
    lines += [" | ".join(fmt(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    text = "\n".join(lines)
    print(text)
    return text


def check_invariant(ok: bool, what: str) -> None:
    """Fail the benchmark (non-zero exit) when an invariant it checks is broken; call after saving the JSON,
    so the failing run is on record."""
    if not ok:
        raise SystemExit(f"invariant broken: {what}")


def save_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": {"platform": platform.platform(), "torch": torch.__version__,
                           "threads": torch.get_num_threads(),
                           "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"},
               "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **payload}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
    return path
