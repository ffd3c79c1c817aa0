"""The parts of bench/gpu_all.py: each builds its own random-weight model at the sizes it is given and
returns its rows. Run one with `python -m bench.gpu_parts PART [--smoke] --out DIR` (gpu_all.py does).

Random weights only measure speed and exactness: their logits are nearly flat, so early exit is replayed
from exit steps recorded on the embedded model (bench/results/rebatching.json, `exit_fractions`), as in
bench/gpu_rebatching.py, and correctness is token identity with a plain reference loop, not quality.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

from bench.common import ROOT
from bench.gpu_rebatching import ScriptedExit
from bench.step_cost import plain_loop
from decoder.config import DecodeConfig
from decoder.families.base import ModelAdapter
from decoder.masked.engine import DecodeEngine
from decoder.scheduler import SlotScheduler
from decoder.types import Request

MASK, EOS, PAD = 5, 4, 3


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def llama_adapter(shape: dict, dtype: torch.dtype, seed: int = 0) -> ModelAdapter:
    """A random bidirectional Llama of `shape` on this machine's device, built there directly."""
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(**shape, num_key_value_heads=shape.get("num_key_value_heads", shape["num_attention_heads"]),
                      max_position_embeddings=4096, is_causal=False, tie_word_embeddings=False,
                      mask_token_id=MASK, eos_token_id=EOS, pad_token_id=PAD, attn_implementation="sdpa")
    torch.manual_seed(seed)
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device()):
            model = LlamaForCausalLM(cfg).eval()
    finally:
        torch.set_default_dtype(torch.float32)
    return ModelAdapter(model, MASK, (EOS,), PAD, 4096, False, "native")


def prompts(n: int, length: int, vocab: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(6, vocab, (n, length), generator=torch.Generator().manual_seed(seed))


def engine_cfg(s: dict, batch: int, **kw) -> DecodeConfig:
    return DecodeConfig(gen_length=s["gen"], block_length=s["block"], steps=s["steps"], trace="off",
                        stop_at_eos=False, max_batch_size=batch, max_batch_tokens=1 << 30, **kw)


def correctness(s: dict) -> list[dict]:
    """fp32: the engine (fixed steps, no cache) and LLaDA's plain loop decode the same tokens; bf16: the
    engine completes with sane outputs (every position decoded, ids in the vocabulary)."""
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        adapter = llama_adapter(s["shape"], dtype)
        p = prompts(s["batch"], s["prompt"], s["shape"]["vocab_size"])
        engine = DecodeEngine(adapter, engine_cfg(s, s["batch"], policy=["none"]))
        t0 = time.perf_counter()
        out = engine.generate([Request(str(i), r.tolist()) for i, r in enumerate(p)], batch_size=s["batch"])
        sync()
        seconds = time.perf_counter() - t0
        ids = torch.tensor([r.output_ids for r in out])
        row = {"dtype": str(dtype).removeprefix("torch."), "batch": s["batch"], "seconds": seconds,
               "all_decoded": bool((ids != MASK).all()), "in_vocab": bool((ids < s["shape"]["vocab_size"]).all())}
        if dtype == torch.float32:
            ref, _ = plain_loop(adapter.model, p.to(device()), s["gen"], s["block"], s["steps"])
            row["identical_to_plain_loop"] = bool(torch.equal(ref.cpu(), ids))
        rows.append(row)
        del adapter, engine
    return rows


def _plan(reqs: list[Request], steps: int, seed: int = 0) -> dict[str, int]:
    fractions = json.loads((ROOT / "bench" / "results" / "rebatching.json").read_text())["exit_fractions"]
    rng = random.Random(seed)
    return {r.id: max(1, round(rng.choice(fractions) * steps)) for r in reqs}


def llada8b(s: dict) -> list[dict]:
    """tokens/s of the plain loop, the engine at fixed steps, + prefix / dual cache, + replayed early exit
    (static batches), + slot refill, per batch size; peak memory above the weights; time outside the forward."""
    adapter = llama_adapter(s["shape"], torch.bfloat16 if device() == "cuda" else torch.float32)
    vocab, rows = s["shape"]["vocab_size"], []
    for b in s["batches"]:
        p = prompts(b * s["waves"], s["prompt"], vocab, seed=b)
        reqs = [Request(f"{b}-{i}", r.tolist()) for i, r in enumerate(p)]
        plan = _plan(reqs, s["steps"])
        for mode in s["modes"]:
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
            sync()
            t0 = time.perf_counter()
            forward_s, generated = float("nan"), 0
            if mode == "plain":
                out, st = plain_loop(adapter.model, p[:b].to(device()), s["gen"], s["block"], s["steps"])
                generated, forward_s = out.numel(), st["forward_s"]
            else:
                cache = {"prefix": "prefix", "dual": "dual"}.get(mode, "none")
                exits = mode in ("exit", "refill")
                engine = DecodeEngine(adapter, engine_cfg(s, b, policy=["sched"] if exits else ["none"], cache=cache))
                if exits:
                    engine.policies.exits = [ScriptedExit(engine, plan)]
                batch = reqs if mode in ("exit", "refill") else reqs[:b]
                if mode == "refill":
                    out = list(SlotScheduler(engine, b, 1 << 30, bucket=True).run(batch))
                else:
                    out = engine.generate(batch, batch_size=b)
                generated = sum(len(r.output_ids) for r in out)
                forward_s = engine.projector.stats.forward_s
            sync()
            seconds = time.perf_counter() - t0
            peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20 if torch.cuda.is_available() else float("nan")
            rows.append({"B": b, "mode": mode, "seconds": seconds, "tokens_per_s": generated / seconds,
                         "outside_forward_share": 1 - forward_s / seconds, "peak_mb_above_weights": peak})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _script(args: list[str], result: str) -> list[dict]:
    """Run another benchmark script in this (the part's own) process; its rows are in the JSON it writes
    under BENCH_RESULTS_DIR (`result`.json)."""
    import runpy
    from bench.common import RESULTS
    argv = sys.argv
    sys.argv = [str(ROOT / args[0]), *args[1:]]
    try:
        runpy.run_path(str(ROOT / args[0]), run_name="__main__")
    except SystemExit as e:
        if e.code:
            raise RuntimeError(f"{' '.join(args)} exited {e.code}") from None
    finally:
        sys.argv = argv
    data = json.loads((RESULTS / f"{result}.json").read_text())
    return data.get("results") or data.get("rows") or []


def dgemma(s: dict) -> list[dict]:
    """bench/diffusion_gemma.py: the canvas engine (static, refill) vs generate() at the given batch sizes."""
    args = ["bench/diffusion_gemma.py", "--batch-sizes", *map(str, s["batches"]), "--sequences", str(s["sequences"]),
            "--steps", str(s["steps"])]
    if device() == "cuda":
        args += ["--gpu", "--layers", str(s["layers"])]
    return _script(args, "gpu_diffusion_gemma" if device() == "cuda" else "diffusion_gemma")


def pipeline(s: dict) -> list[dict]:
    """bench/pipeline_overhead.py on this device: the whole Ray pipeline vs the bare engine, same prompts."""
    return _script(["bench/pipeline_overhead.py", "--sizes", str(s["prompts"]), "--shards", str(s["shards"]),
                    "--device", device(), *(["--quick"] if s.get("quick") else [])], "pipeline_overhead")


def block_diffusion(s: dict) -> list[dict]:
    """bench/block_diffusion.py: a random LLaDA2 (written in its own layout, loaded by load_model) through the
    block engine (exact cache, static batch; slot refill) vs the transcribed LLaDA2 generate() loop; on CUDA
    LLaDA2.0-mini's per-layer shape in bf16, `layers` of its layers; on CPU (smoke) its --quick sizes."""
    args = ["bench/block_diffusion.py", "--threads", str(torch.get_num_threads())]
    if s.get("skip_check"):
        args.append("--skip-check")
    if device() != "cuda":
        return _script(args + ["--quick"], "block_diffusion")
    args += ["--gpu", "--layers", str(s["layers"]), "--prompt", str(s["prompt"]), "--new", str(s["new"]),
             "--batch", str(s["batch"]), "--baseline-rows", str(s["baseline_rows"]),
             "--sequences", str(s["sequences"]), "--repeats", str(s["repeats"])]
    from bench.block_diffusion import GPU_RESULT
    return _script(args, GPU_RESULT)


#: Parts whose subject is not in the project yet: reported as "not run" with the reason, no process started.
NOT_AVAILABLE: dict[str, str] = {}


PARTS = {"correctness": correctness, "llada8b": llada8b, "dgemma": dgemma, "block_diffusion": block_diffusion,
         "pipeline": pipeline}


def main() -> None:
    from bench.gpu_all import sizes
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=sorted(PARTS))
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", required=True, help="folder for gpu_<part>.json")
    args = ap.parse_args()
    torch.set_num_threads(1 if args.smoke else 8)   # smoke: two parts at a time on a small CPU
    s = sizes(args.smoke)[args.part]
    t0 = time.perf_counter()
    rows = PARTS[args.part](s)
    payload = {"part": args.part, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
               "torch": torch.__version__, "sizes": {k: v for k, v in s.items() if k != "shape"},
               "shape": s.get("shape"), "seconds": time.perf_counter() - t0, "rows": rows}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"gpu_{args.part}.json").write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
