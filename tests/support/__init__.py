"""What several test packages share, in one place (not collected: no test_ prefix).

- this module: paths of the checkout and of the embedded model and prompts;
- `models`: a scripted-logits model, tiny random Llama / Qwen2 builders and the embedded model in float64;
- `tiny_dgemma`: a tiny random DiffusionGemma checkpoint;
- `files`: readers of the Arrow outputs, Parquet and zstd bytes for inputs, every id a run wrote;
- `cli`: `pipeline.py` as users run it (a subprocess);
- `events`: waiting on an observable event with a timeout as a failure guard (no sleeps that must be
  "long enough");
- `faults`: a fault-injecting S3 proxy and a restartable S3 server (`s3_proxy`), SIGKILL at a seeded
  point of a running job (`killer`); bench/soak.py uses them too.
"""
from __future__ import annotations

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
EMBEDDED_MODEL = ROOT / "embedded" / "taskmix" / "model"
EMBEDDED_PROMPTS = ROOT / "embedded" / "taskmix" / "prompts"
