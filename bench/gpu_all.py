"""Every GPU measurement in one go, within a budget: `bench/gpu_all.sh` (= python -m bench.gpu_all).

    bench/gpu_all.sh                 # on a CUDA machine: every part, results in bench/results/gpu_*.json
    bench/gpu_all.sh --dry-run       # each part's planned sizes and estimated GPU seconds (no work)
    bench/gpu_all.sh --smoke         # the same parts at tiny shapes on CPU, two at a time (the test suite runs it)

Parts (bench/gpu_parts.py), each in its own process with its own time limit, so a part that fails, runs
out of memory or overruns reports its error and the next one still runs:
  correctness      fp32: the engine and LLaDA's plain loop decode identical tokens; a bf16 run completes
                   with every position decoded
  llada8b          LLaDA-8B's shape (random weights, bf16) at B 1 / 8 / 32 / 64: plain loop, engine at
                   fixed steps, + prefix / dual cache, + early exit replayed from recorded exit steps
                   (static batches), + slot refill; tokens/s, peak memory above the weights, share of time
                   outside the forward
  dgemma           DiffusionGemma at its real per-layer shape, 4 layers: canvas engine (static, refill)
                   vs generate() at B 8 / 32 (bench/diffusion_gemma.py)
  block_diffusion  LLaDA2 at LLaDA2.0-mini's per-layer shape, 2 of its layers (random bf16 weights written
                   in LLaDA2's own checkpoint layout, loaded by load_model): the block engine (exact cache,
                   static batch of 16; slot refill over rows ending at different blocks) vs the transcribed
                   LLaDA2 generate() loop, prompt 512, 256 new tokens (bench/block_diffusion.py)
  pipeline         the Ray pipeline end to end on the GPU (local object store, 2,000 prompts, the embedded
                   model) vs the bare engine (bench/pipeline_overhead.py)

The estimate (`--dry-run`) is a model, not a measurement: forward FLOPs at 35 % of the H200's bf16 peak,
a per-forward launch floor, and each part's fixed cost (process start, imports, model construction),
measured here on CPU by `--smoke` (recorded in gpu_summary.json) and allowed for at GPU sizes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 480.0            # the whole script, on one H200
PEAK_FLOPS = 790e12         # H200 dense bf16
EFFICIENCY = 0.35
LAUNCH_FLOOR_S = 0.012      # per forward of a 32-layer model at small batch (kernel launches)
FIXED_S = {"correctness": 25.0, "llada8b": 40.0, "dgemma": 60.0, "block_diffusion": 50.0, "pipeline": 45.0}
ORDER = ("correctness", "llada8b", "dgemma", "block_diffusion", "pipeline")

LLADA_8B = dict(vocab_size=126464, hidden_size=4096, intermediate_size=12288, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=32, rope_theta=500000.0)
SMALL = dict(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8)
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
MODES = ["plain", "engine", "prefix", "dual", "exit", "refill"]
#: LLaDA2.0-mini per token: 8 routed experts + 1 shared expert of width 512 (the dense first layer, 5120, is close)
LLADA2_MINI_ACTIVE = dict(vocab_size=157184, hidden_size=2048, intermediate_size=9 * 512, num_attention_heads=16)


def sizes(smoke: bool) -> dict[str, dict]:
    """Each part's sizes: GPU sizes chosen to fit BUDGET_S on one H200, smoke sizes to run on CPU in seconds."""
    if smoke:
        return {
            "correctness": {"shape": TINY, "batch": 2, "prompt": 8, "gen": 16, "block": 8, "steps": 4},
            "llada8b": {"shape": TINY, "batches": [1, 2], "waves": 2, "prompt": 8, "gen": 16, "block": 8,
                        "steps": 4, "modes": MODES},
            "dgemma": {"batches": [2], "sequences": 4, "steps": 4, "layers": 2},
            "block_diffusion": {"quick": True, "skip_check": True},
            "pipeline": {"prompts": 32, "shards": 2, "quick": True},
        }
    return {
        "correctness": {"shape": SMALL, "batch": 8, "prompt": 64, "gen": 64, "block": 32, "steps": 16},
        "llada8b": {"shape": LLADA_8B, "batches": [1, 8, 32, 64], "waves": 2, "prompt": 64, "gen": 128,
                    "block": 32, "steps": 32, "modes": MODES},
        "dgemma": {"batches": [8, 32], "sequences": 64, "steps": 24, "layers": 4},
        "block_diffusion": {"layers": 2, "prompt": 512, "new": 256, "batch": 16, "baseline_rows": 8, "sequences": 48,
                            "repeats": 1},
        "pipeline": {"prompts": 2000, "shards": 8},
    }


def llama_params(shape: dict) -> float:
    h, layers = shape["hidden_size"], shape["num_hidden_layers"]
    return layers * (4 * h * h + 3 * h * shape["intermediate_size"]) + shape["vocab_size"] * h


def forward_s(shape: dict, tokens: int) -> float:
    return max(2 * llama_params(shape) * tokens / (EFFICIENCY * PEAK_FLOPS), LAUNCH_FLOOR_S)


def estimate(part: str, s: dict) -> float:
    """Estimated GPU seconds of one part at sizes `s` (see the module docstring)."""
    if part == "correctness":
        seq = s["batch"] * (s["prompt"] + s["gen"])
        return FIXED_S[part] + 3 * s["steps"] * forward_s(s["shape"], seq)     # plain + fp32 and bf16 engine
    if part == "llada8b":
        share = {"plain": 1.0, "engine": 1.0, "prefix": 0.6, "dual": 0.35, "exit": 0.5, "refill": 0.5}
        total = FIXED_S[part]
        for b in s["batches"]:
            seq = b * (s["prompt"] + s["gen"])
            for mode in s["modes"]:
                waves = s["waves"] if mode in ("exit", "refill") else 1
                total += waves * s["steps"] * forward_s(s["shape"], max(1, int(seq * share[mode])))
        return total
    if part == "dgemma":   # ~2.5 canvases of 256 per row, ~40 % of the steps each, generate() + 2 engine runs
        active = dict(vocab_size=262144, hidden_size=2816, intermediate_size=8 * 704, num_hidden_layers=s["layers"],
                      num_attention_heads=16)
        forwards = 3 * 2.5 * 0.4 * s["steps"] * s["sequences"] / min(s["batches"])
        return FIXED_S[part] + forwards * forward_s(active, min(s["batches"]) * 256)
    if part == "block_diffusion" and not s.get("quick"):
        # 8 steps per block assumed (the JSON records the real count); the slowest row sets a static batch's steps
        active = dict(LLADA2_MINI_ACTIVE, num_hidden_layers=s["layers"])
        blocks, steps, window = s["new"] // 32, 8, s["prompt"] + s["new"] // 2
        baseline = s["baseline_rows"] * blocks * steps * forward_s(active, window)
        batch = 1.5 * blocks * steps * (forward_s(active, s["batch"] * window) + forward_s(active, s["batch"] * 32))
        refill = 2 * s["sequences"] / s["batch"] * 4.5 * (steps + 1) * forward_s(active, s["batch"] * 32)
        step_cost = 51 * forward_s(active, s["batch"] * 32)
        return FIXED_S[part] + s["repeats"] * (baseline + batch + refill) + step_cost
    if part == "pipeline":  # the embedded model: host-bound, ~170 sequences/s, four passes (bare x2, cold, warm)
        return FIXED_S[part] + 4 * s["prompts"] / 170
    return 0.0


def dry_run(smoke: bool = False) -> list[dict]:
    plan = [{"part": p, "estimate_s": round(estimate(p, s), 1),
             "sizes": {k: v for k, v in s.items() if k != "shape"}} for p, s in sizes(smoke).items()]
    total = sum(r["estimate_s"] for r in plan)
    for r in plan:
        print(f"{r['part']:<16} ~{r['estimate_s']:>6.1f} s  {json.dumps(r['sizes'])}")
    print(f"{'total':<16} ~{total:>6.1f} s of the {BUDGET_S:.0f} s budget ({'within' if total <= BUDGET_S else 'OVER'})")
    return plan


def run_part(part: str, smoke: bool, out: Path, limit_s: float) -> dict:
    """One part in its own process; its status, seconds and (on failure) the end of its output."""
    from bench.gpu_parts import NOT_AVAILABLE
    if part in NOT_AVAILABLE:
        row = {"part": part, "status": f"not run: {NOT_AVAILABLE[part]}", "seconds": 0.0}
        print(f"{part:<16} {row['status']}", flush=True)
        return row
    cmd = [sys.executable, "-m", "bench.gpu_parts", part, "--out", str(out), *(["--smoke"] if smoke else [])]
    env = {**os.environ, "BENCH_RESULTS_DIR": str(out), "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit_s)
        status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
        tail = (done.stdout + done.stderr)[-1500:]
    except subprocess.TimeoutExpired as e:
        status, tail = f"timed out after {limit_s:.0f} s", str(e.stdout or "")[-1500:]
    if "NotImplementedError" in tail:
        status = "not run: " + tail.strip().splitlines()[-1].split("NotImplementedError: ", 1)[-1]
    row = {"part": part, "status": status, "seconds": round(time.perf_counter() - t0, 1)}
    if status != "ok" and not status.startswith("not run"):
        row["output_tail"] = tail
    print(f"{part:<16} {status:<60} {row['seconds']:>7.1f} s", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU (under a minute)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and the estimated GPU time only")
    ap.add_argument("--parts", nargs="+", choices=ORDER, default=list(ORDER))
    ap.add_argument("--out", default=None, help="results folder (default bench/results; --smoke: a temporary one)")
    args = ap.parse_args(argv)
    if args.dry_run:
        dry_run(args.smoke)
        return 0
    import torch
    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA device: run with --smoke (CPU) or --dry-run", file=sys.stderr)
        return 2
    out = Path(args.out or (tempfile.mkdtemp(prefix="gpu-smoke-") if args.smoke else ROOT / "bench" / "results"))
    out.mkdir(parents=True, exist_ok=True)
    plan = {r["part"]: r for r in dry_run(args.smoke)}
    started = time.perf_counter()

    def one(part: str) -> dict:
        left = BUDGET_S * (4 if args.smoke else 1.15) - (time.perf_counter() - started)
        limit = max(30.0, min(left, 3 * plan[part]["estimate_s"] + 60))
        return {**run_part(part, args.smoke, out, limit), "estimate_s": plan[part]["estimate_s"]}

    if args.smoke:   # CPU: the pipeline part (mostly Ray's start-up) beside the others, one thread each
        with ThreadPoolExecutor(2) as pool:
            lanes = [pool.submit(lambda ps: [one(p) for p in ps], [p for p in args.parts if p != "pipeline"]),
                     pool.submit(lambda ps: [one(p) for p in ps], [p for p in args.parts if p == "pipeline"])]
            done = {r["part"]: r for lane in lanes for r in lane.result()}
        rows = [done[p] for p in args.parts]
    else:            # the GPU: one part at a time, so each has the device to itself
        rows = [one(p) for p in args.parts]
    summary = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "smoke": args.smoke,
               "budget_s": BUDGET_S, "wall_s": round(time.perf_counter() - started, 1), "parts": rows}
    (out / ("gpu_smoke_summary.json" if args.smoke else "gpu_summary.json")).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wall {summary['wall_s']} s; results in {out}")
    return 0 if all(r["status"] == "ok" or r["status"].startswith("not run") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
