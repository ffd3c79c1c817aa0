"""DiffusionGemma: HF `generate()` in static batches vs the canvas engine, static and with slot refill.

    python bench/diffusion_gemma.py [--batch-sizes 8 32] [--sequences 96] [--gpu]

A random DiffusionGemma (CPU-sized by default; `--gpu`: the checkpoint's shape in bf16, random weights) never
becomes confident, so every row gets a scripted plan: its number of canvases (1-4) and, per canvas, the step at
which it stops, drawn from the exit fractions recorded from the embedded model's SchED traces
(bench/results/rebatching.json, `exit_fractions`) times `max_denoising_steps`. Both sides run the same plan:
in `generate()` a scripted stopping criterion replaces StableAndConfident and a scripted EOS ends a row after
its last canvas; in the engine a scripted exit policy ends the canvas (it commits the argmax, as generate()
does) and the row's token budget ends it. So per-row step counts are identical and only the batching differs:
HF moves every row of a batch through each canvas in lockstep (a stopped row is frozen but still computed,
a finished row too), the engine drops finished rows (static) and refills their slots (refill).
Peak temporaries: the same per-position count on both sides (`canvas_signals.bytes_per_position`: raw,
tempered and probability float32 tensors, the entropy's and multinomial's copies, the model-dtype
self-conditioning), over one chunk for the engine (plus its [B, C, H] soft embeddings) and over all B x C
positions for generate(), which materialises them at once; on a GPU also the measured allocator peak above
the weights (`measured_peak_mb`).
"""
from __future__ import annotations

import argparse
import json
import random
import time

import torch

from bench.common import ROOT, check_invariant, print_table, save_result
from decoder.canvas.signals import bytes_per_position
from decoder.config import DecodeConfig, DGemmaConfig
from decoder.types import Request
from decoder.families.diffusion_gemma import HF_SAMPLING_DEFAULTS, CanvasAdapter
from decoder.policies.base import ExitDecision
from decoder.scheduler import SlotScheduler

CPU_SHAPE = dict(vocab_size=8192, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=32, global_head_dim=32, num_experts=4, top_k_experts=2,
                 moe_intermediate_size=64, sliding_window=64, layer_types=["sliding_attention", "full_attention"])
# The checkpoint as quoted in the issue (30 layers, hidden 2816, vocab 262,144, 128 experts top-8, window 1024);
# head counts and the MoE width are Gemma-4-26B-A4B-like assumptions (random weights only measure speed).
GPU_SHAPE = dict(vocab_size=262144, hidden_size=2816, intermediate_size=2112, num_hidden_layers=30,
                 num_attention_heads=16, num_key_value_heads=8, head_dim=256, global_head_dim=512, num_experts=128,
                 top_k_experts=8, moe_intermediate_size=704, sliding_window=1024)
EOS, PAD = 1, 0


def build(gpu: bool, layers: int | None = None) -> CanvasAdapter:
    """A random DiffusionGemma; `layers`: only that many of the shape's layers (the real per-layer shape,
    loaded faster; the config's own sliding/full pattern over them)."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion
    shape, canvas = (GPU_SHAPE, 256) if gpu else (CPU_SHAPE, 32)
    if layers:
        shape = dict(shape, num_hidden_layers=layers)
        if "layer_types" in shape:
            shape["layer_types"] = [shape["layer_types"][i % len(shape["layer_types"])] for i in range(layers)]
    vision = dict(model_type="gemma4_vision", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=2, head_dim=8)
    cfg = DiffusionGemmaConfig(text_config=dict(shape, max_position_embeddings=8192, pad_token_id=PAD,
                                                eos_token_id=EOS, bos_token_id=2),
                               vision_config=vision, canvas_length=canvas, image_token_id=shape["vocab_size"] - 1,
                               boi_token_id=shape["vocab_size"] - 3, eoi_token_id=shape["vocab_size"] - 2)
    cfg._attn_implementation = "sdpa"
    device, dtype = ("cuda", torch.bfloat16) if gpu else ("cpu", torch.float32)
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = DiffusionGemmaForBlockDiffusion(cfg).eval()
    torch.set_default_dtype(torch.float32)
    return CanvasAdapter(model, canvas, (EOS,), PAD, 8192, frozenset(), dict(HF_SAMPLING_DEFAULTS))


def plans(n: int, steps: int, seed: int = 0) -> list[list[int]]:
    """Per row, the stop step (1-based) of each of its canvases, from the recorded exit fractions."""
    fractions = json.loads((ROOT / "bench" / "results" / "rebatching.json").read_text())["exit_fractions"]
    rng = random.Random(seed)
    return [[max(1, round(rng.choice(fractions) * steps)) for _ in range(rng.randint(1, 4))] for _ in range(n)]


def prompts(n: int, vocab: int, seed: int = 1) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab - 4) for _ in range(rng.randint(16, 64))] for _ in range(n)]


class ScriptedStop:
    """generate()'s canvas stopping criterion, scripted per row: stop at its plan's step of this canvas."""
    def __init__(self, plan: list[list[int]]):
        self.plan, self.canvas, self.step = plan, -1, 0

    def reset(self):
        self.canvas, self.step = self.canvas + 1, 0

    def __call__(self, argmax_canvas, logits, **kwargs):
        self.step += 1
        return torch.tensor([self.canvas >= len(p) or self.step >= p[self.canvas] for p in self.plan],
                            device=logits.device)


class ScriptedEos:
    """A logits processor ending each row after its last canvas: EOS at that canvas's last position."""
    def __init__(self, plan, width: int, canvas: int):
        self.last, self.width, self.c = torch.tensor([len(p) - 1 for p in plan]), width, canvas

    def __call__(self, input_ids, scores, cur_step=None):
        k = (input_ids.shape[1] - self.width) // self.c
        rows = (self.last == k).to(scores.device)
        scores[rows, -1, EOS] += 1000.0
        return scores


def run_hf(ad: CanvasAdapter, reqs, plan, batch: int, steps: int) -> dict:
    from transformers import LogitsProcessorList
    model, calls, row_steps = ad.model, [0], 0
    inner = model.forward

    def counting(*a, **k):
        calls[0] += 1
        return inner(*a, **k)
    model.forward = counting
    try:
        for lo in range(0, len(reqs), batch):
            rows, p = reqs[lo:lo + batch], plan[lo:lo + batch]
            width = max(len(r) for r in rows)
            ids = torch.tensor([[PAD] * (width - len(r)) + r for r in rows], device=ad.device)
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=ad.device)
            stop, before = ScriptedStop(p), calls[0]
            model._prepare_diffusion_stopping_criteria = lambda gc, s=stop: s
            model.generate(ids, attention_mask=mask, max_new_tokens=max(map(len, p)) * ad.canvas_length,
                           max_denoising_steps=steps, eos_token_id=EOS, pad_token_id=PAD,
                           logits_processor=LogitsProcessorList([ScriptedEos(p, width, ad.canvas_length)]))
            row_steps += (calls[0] - before) * len(rows)
    finally:
        model.forward = inner
        del model._prepare_diffusion_stopping_criteria
    positions = batch * ad.canvas_length   # generate() materialises every [B, C, V] temporary at once
    return {"decoder_forwards": calls[0], "row_steps": row_steps,
            "peak_temporaries_mb": positions * bytes_per_position(ad.vocab_size, ad.dtype) / 2 ** 20}


class ScriptedCanvasExit:
    """Exit policy ending each row's canvas at its plan's step (the engine then commits the argmax)."""
    kind, name = "exit", "dgemma"   # stands in for the stable-and-confident stop rule

    def __init__(self, plan: dict):
        self.plan = plan

    def should_exit(self, ctx) -> ExitDecision:
        flags = [r.canvas_step + 1 >= self.plan[r.request.id][r.canvas_index] for r in ctx.rows]
        nan = torch.full_like(ctx.progress, float("nan"))
        return ExitDecision(torch.tensor(flags, device=ctx.masked.device), nan, nan)


def run_engine(ad, reqs, plan, batch: int, steps: int, refill: bool) -> dict:
    from decoder.canvas.engine import CanvasEngine
    cfg = DecodeConfig(policy=["dgemma"], gen_length=ad.canvas_length, trace="off",
                       dgemma=DGemmaConfig(max_denoising_steps=steps), max_logits_mb=256.0)
    engine = CanvasEngine(ad, cfg)
    engine.policies.exits = [ScriptedCanvasExit({str(i): p for i, p in enumerate(plan)})]
    requests = [Request(str(i), r, len(p) * ad.canvas_length) for i, (r, p) in enumerate(zip(reqs, plan))]
    if refill:
        results = [r for r in SlotScheduler(engine, batch, 1 << 30).run(requests)]
    else:
        results = engine.generate(requests, batch_size=batch)
    by_id = {r.id: r.steps_taken for r in results}
    check_invariant(all(by_id[str(i)] == sum(p) for i, p in enumerate(plan)), "engine steps follow the plan")
    s = engine.stats
    return {"decoder_forwards": s["forwards"], "row_steps": s["row_steps"], "encoder_passes": s["encoder_passes"],
            "peak_temporaries_mb": s["peak_temporaries_bytes"] / 2 ** 20}


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        out["measured_peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    ap.add_argument("--sequences", type=int, default=None, help="rows per batch size (default 4 x B)")
    ap.add_argument("--steps", type=int, default=48, help="max_denoising_steps per canvas")
    ap.add_argument("--gpu", action="store_true", help="checkpoint shape, bf16, random weights (needs CUDA)")
    ap.add_argument("--layers", type=int, default=None, help="only this many layers of the shape (loads faster)")
    args = ap.parse_args()
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device")
    batches = args.batch_sizes or ([8, 32, 64] if args.gpu else [8, 32])
    ad = build(args.gpu, args.layers)
    rows, table = [], None
    for b in batches:
        n = args.sequences or 4 * b
        reqs, plan = prompts(n, ad.vocab_size), plans(n, args.steps)
        useful = sum(map(sum, plan))
        for mode in ("hf-static", "engine-static", "engine-refill"):
            fn = (lambda: run_hf(ad, reqs, plan, b, args.steps)) if mode == "hf-static" else \
                (lambda m=mode: run_engine(ad, reqs, plan, b, args.steps, m == "engine-refill"))
            try:
                out, secs = timed(fn)
            except torch.OutOfMemoryError as e:
                rows.append({"B": b, "mode": mode, "fits": False, "error": str(e)[:200]})
                torch.cuda.empty_cache()
                continue
            steps = out["row_steps"]
            rows.append({"B": b, "mode": mode, "fits": True, "sequences": n, "seconds": secs,
                         "sequences_per_s": n / secs, "decoder_forwards": out["decoder_forwards"],
                         "useful_row_steps": useful, "finished_row_steps": (steps - useful) if steps else -1,
                         "peak_temporaries_mb": out["peak_temporaries_mb"], **out})
        hf = next(r for r in rows if r["B"] == b and r["mode"] == "hf-static")
        for r in rows:
            if r["B"] == b and r.get("fits") and hf.get("fits"):
                r["speedup_vs_hf"] = r["sequences_per_s"] / hf["sequences_per_s"]
    ok = [r for r in rows if r.get("fits")]
    cols = ["B", "mode", "sequences_per_s", "speedup_vs_hf", "decoder_forwards", "useful_row_steps",
            "finished_row_steps", "peak_temporaries_mb"]
    table = print_table([{c: r.get(c, float("nan")) for c in cols} for r in ok], cols)
    name = "gpu_diffusion_gemma" if args.gpu else "diffusion_gemma"
    save_result(name, {"shape": GPU_SHAPE if args.gpu else CPU_SHAPE, "steps": args.steps, "results": rows,
                       "table": table, "notes": __doc__})


if __name__ == "__main__":
    main()
