"""A Parquet dataset through the processor, written back with Ray Data's own `write_parquet`.

    .venv/bin/python examples/parquet_processor.py [OUT_DIR]

Builds a small Parquet dataset of the shipped prompts (with a column of its own), decodes it on a local
Ray with the embedded model, and writes prompts + outputs + the extra column as Parquet.
"""
import json
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray

import dllm

ROOT = Path(__file__).resolve().parents[1]
out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="dllm-example-"))
rows = [json.loads(x) for x in (ROOT / "embedded/taskmix/prompts/shard-000.jsonl").read_text().splitlines()[:24]]
pq.write_table(pa.table({"id": [r["id"] for r in rows], "prompt": [r["prompt"] for r in rows],
                         "batch": ["demo"] * len(rows)}), out / "prompts.parquet")

ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
processor = dllm.build_processor(overrides=["decode.trace=off"], concurrency=1, batch_size=8)   # default.yaml
processor(ray.data.read_parquet(str(out / "prompts.parquet"))).write_parquet(str(out / "outputs"))
result = pq.read_table(out / "outputs")
print(result.select(["id", "prompt", "output", "nfe", "error", "batch"]).slice(0, 5).to_pandas().to_string())
print(f"{result.num_rows} rows -> {out / 'outputs'}")
