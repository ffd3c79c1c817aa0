"""Golden outputs of Dream's own `diffusion_generate` and SchED's `diffusion_generate_schedule` on a tiny
Dream-layout checkpoint, for tests/decoder/parity/test_dream_parity.py.

Two parts, both deterministic:

1. `make_checkpoint` writes `tests/decoder/parity/tiny_dream/` (config.json with Dream's `model_type`,
   `auto_map` and `mask_token_id`; float32 `model.safetensors` with Dream's (= Qwen2's) weight names;
   random weights, ~0.35 MB) and generation_config.json. One hidden dimension of the residual stream is held constant (embedding
   column 0 = 1, the layers never write it) and the mask token's output row reads only that dimension with
   weight -1e4, so the mask token's logit is ~-1e3 everywhere: Dream never suppresses it, the engine does,
   and this way both softmaxes are the same (exp underflows to exactly 0), so the comparison is exact.
2. `main` runs the reference code on it once per setting and prompt at batch 1 (seeded like the engine's
   per-row generator: torch.manual_seed(crc32(f"{seed}:{id}")), and writes `golden.json`: each case's
   reference arguments, the engine overrides that say the same thing, and per row the answer tokens and
   step count.

The reference code is fetched, never committed. To re-run (a throwaway venv; transformers 4.x, which their
remote code needs):

    python3 -m venv /tmp/dream-venv
    /tmp/dream-venv/bin/pip install torch==2.13.0 'transformers==4.57.*'
    # Dream's code: configuration_dream.py, modeling_dream.py, generation_utils.py of the HF checkpoint
    #   Dream-org/Dream-v0-Instruct-7B (e.g. `huggingface-cli download Dream-org/Dream-v0-Instruct-7B
    #   --include '*.py' --local-dir /tmp/dream-code`)
    # SchED's code: dream_sampling/sched.py of github.com/amr-mohamedd/SchED (saved as /tmp/sched.py)
    /tmp/dream-venv/bin/python tests/decoder/parity/make_dream_golden.py \
        --dream-code /tmp/dream-code --sched /tmp/sched.py

Only the standard library, torch, safetensors and transformers are imported here (nothing from the
project), so it runs in that venv.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import zlib
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
CKPT = HERE / "tiny_dream"
OUT = HERE / "golden.json"
VOCAB, HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 96, 64, 2, 4, 2, 128
MASK, EOS = VOCAB - 1, 0
N_PROMPTS, SEED = 4, 0

#: name -> (reference: dream | sched, reference kwargs). max_new_tokens is the engine's gen_length, one block.
CASES: dict[str, tuple[str, dict]] = {
    "origin-greedy": ("dream", dict(alg="origin", steps=8, max_new_tokens=16)),
    "maskgit_plus-greedy": ("dream", dict(alg="maskgit_plus", steps=8, max_new_tokens=16)),
    "topk_margin-greedy": ("dream", dict(alg="topk_margin", steps=8, max_new_tokens=16)),
    "entropy-greedy": ("dream", dict(alg="entropy", steps=8, max_new_tokens=16)),
    "entropy-greedy-13tok": ("dream", dict(alg="entropy", steps=5, max_new_tokens=13)),
    "maskgit_plus-greedy-topk": ("dream", dict(alg="maskgit_plus", steps=8, max_new_tokens=16, top_k=12)),
    "maskgit_plus-T0.8-top_p0.9": ("dream", dict(alg="maskgit_plus", steps=8, max_new_tokens=16,
                                                 temperature=0.8, top_p=0.9)),
    "topk_margin-T1.0-top_k20": ("dream", dict(alg="topk_margin", steps=8, max_new_tokens=16,
                                               temperature=1.0, top_k=20)),
    "entropy-T0.7-top_p0.95-top_k30": ("dream", dict(alg="entropy", steps=8, max_new_tokens=16,
                                                     temperature=0.7, top_p=0.95, top_k=30)),
    "entropy-T0.5-13tok": ("dream", dict(alg="entropy", steps=6, max_new_tokens=13, temperature=0.5)),
    "entropy-alg_temp0.5": ("dream", dict(alg="entropy", steps=8, max_new_tokens=16, alg_temp=0.5)),
    "maskgit_plus-T0.8-alg_temp0.3": ("dream", dict(alg="maskgit_plus", steps=8, max_new_tokens=16,
                                                    temperature=0.8, alg_temp=0.3)),
    "origin-T0.8-top_p0.9": ("dream", dict(alg="origin", steps=8, max_new_tokens=16, temperature=0.8,
                                           top_p=0.9)),
    "origin-T1.0-top_k20-13tok": ("dream", dict(alg="origin", steps=5, max_new_tokens=13, temperature=1.0,
                                                top_k=20)),
    "sched-linear-T0.7": ("sched", dict(alg="entropy", steps=12, max_new_tokens=16, tau_mode="linear",
                                        tau_high=3.0, tau_low=0.5, max_change_ratio=1.0, temperature=0.7)),
    "sched-origin-T0.9-patience": ("sched", dict(alg="origin", steps=12, max_new_tokens=16, tau_mode="cosine",
                                                 tau_high=3.0, tau_low=0.5, patience_steps=1,
                                                 max_change_ratio=1.0, temperature=0.9)),
    "sched-linear": ("sched", dict(alg="entropy", steps=12, max_new_tokens=16, tau_mode="linear",
                                   tau_high=3.0, tau_low=0.5, max_change_ratio=1.0)),
    "sched-cosine-patience": ("sched", dict(alg="maskgit_plus", steps=12, max_new_tokens=16, tau_mode="cosine",
                                            tau_high=3.0, tau_low=0.5, patience_steps=2, max_change_ratio=0.5)),
    "sched-exp-min_progress": ("sched", dict(alg="topk_margin", steps=12, max_new_tokens=16, tau_mode="exp",
                                             tau_high=4.0, tau_low=0.5, tau_k=4.0, min_progress=0.7,
                                             max_change_ratio=1.0)),
    "sched-released-defaults": ("sched", dict(alg="entropy", steps=12, max_new_tokens=16, tau_high=3.0,
                                              tau_low=0.5)),
    "sched-tail-patience": ("sched", dict(alg="entropy", steps=12, max_new_tokens=16, tau_mode="linear",
                                          tau_high=3.0, tau_low=0.5, answer_region="tail", min_progress=0.3,
                                          patience_steps=1, max_change_ratio=0.25)),
}


def make_checkpoint(path: Path = CKPT) -> None:
    """The tiny Dream checkpoint (see the module docstring for the mask-logit construction)."""
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(1234)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                      num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=256,
                      rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5 if "lm_head" in name else 0.15)
            elif "bias" in name:
                p.normal_(0.0, 0.05)
        model.model.embed_tokens.weight[:, 0] = 1.0           # a constant residual dimension ...
        for layer in model.model.layers:                      # ... that no layer writes
            layer.self_attn.o_proj.weight[0] = 0.0
            layer.mlp.down_proj.weight[0] = 0.0
        model.lm_head.weight[MASK] = 0.0
        model.lm_head.weight[MASK, 0] = -1e4                  # the mask token's logit: about -1e3
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    config = {
        "architectures": ["DreamModel"],
        "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
        "model_type": "Dream", "attention_dropout": 0.0, "hidden_act": "silu", "hidden_size": HIDDEN,
        "initializer_range": 0.02, "intermediate_size": FFN, "max_position_embeddings": 256,
        "max_window_layers": LAYERS, "num_attention_heads": HEADS, "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS, "rms_norm_eps": 1e-6, "rope_scaling": None, "rope_theta": 10000.0,
        "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "float32", "use_cache": False,
        "use_mrope": False, "use_sliding_window": False, "vocab_size": VOCAB,
        "bos_token_id": EOS, "eos_token_id": EOS, "pad_token_id": EOS, "mask_token_id": MASK,
    }
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    gen = {"bos_token_id": EOS, "eos_token_id": EOS, "pad_token_id": EOS, "mask_token_id": MASK}
    (path / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")


def prompts() -> list[dict]:
    g = torch.Generator().manual_seed(99)
    out = []
    for i in range(N_PROMPTS):
        n = int(torch.randint(3, 10, (1,), generator=g))
        out.append({"id": f"p{i}", "prompt_ids": torch.randint(1, MASK, (n,), generator=g).tolist()})
    return out


def row_seed(rid: str, seed: int = SEED) -> int:
    """The engine's per-row generator seed (decoder/masked/engine.py DecodeEngine.add)."""
    return zlib.crc32(f"{seed}:{rid}".encode())


def engine_overrides(ref: str, kw: dict) -> list[str]:
    """The engine config that states the same sampler."""
    n = kw["max_new_tokens"]
    out = [f"decode.gen_length={n}", f"decode.block_length={-(-n // 16) * 16}", f"decode.steps={kw['steps']}",
           f"decode.policy={'[dream,sched]' if ref == 'sched' else '[dream]'}", f"decode.dream.alg={kw['alg']}",
           f"decode.dream.alg_temp={kw.get('alg_temp') or 0.0}", f"decode.dream.eps={kw.get('eps', 1e-3)}",
           f"decode.temperature={kw.get('temperature', 0.0)}", f"decode.top_p={kw.get('top_p') or 1.0}",
           f"decode.top_k={kw.get('top_k') or 0}", f"decode.seed={SEED}", "decode.stop_at_eos=false"]
    if ref == "sched":
        out += [f"decode.sched.schedule={kw.get('tau_mode', 'cosine')}",
                f"decode.sched.tau_high_logit={kw.get('tau_high', 7.5)}",
                f"decode.sched.tau_low_logit={kw.get('tau_low', 2.5)}", f"decode.sched.k={kw.get('tau_k', 4.0)}",
                "decode.sched.aggregate=mean", "decode.sched.progress_mode=t_over_T_minus_1",
                f"decode.sched.min_progress={kw.get('min_progress', 0.0)}",
                f"decode.sched.patience_steps={kw.get('patience_steps', 0)}",
                f"decode.sched.max_change_ratio={kw.get('max_change_ratio', 0.0)}",
                f"decode.sched.region={kw.get('answer_region', 'all')}", "decode.exit_fill=argmax"]
    return out


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dream-code", required=True, help="folder with Dream's configuration_dream.py, "
                                                        "modeling_dream.py, generation_utils.py")
    ap.add_argument("--sched", required=True, help="SchED's dream_sampling/sched.py")
    args = ap.parse_args()
    from transformers import AutoModel

    if not (CKPT / "model.safetensors").exists():
        make_checkpoint()
    work = Path(tempfile.mkdtemp(prefix="tiny-dream-"))
    for f in CKPT.iterdir():
        shutil.copy(f, work / f.name)
    for f in ("configuration_dream.py", "modeling_dream.py", "generation_utils.py"):
        shutil.copy(Path(args.dream_code) / f, work / f)
    model = AutoModel.from_pretrained(str(work), trust_remote_code=True, dtype=torch.float32).eval()
    sched = _load_module(Path(args.sched), "sched_reference")
    rows = prompts()
    cases = []
    for name, (ref, kw) in CASES.items():
        got = []
        for r in rows:
            x = torch.tensor([r["prompt_ids"]])
            torch.manual_seed(row_seed(r["id"]))
            # every sampling argument explicit: under transformers 4.57 Dream's generation config otherwise
            # inherits the model config's generation defaults (temperature 1.0, ...)
            call = {"temperature": 0.0, "top_p": None, "top_k": None, "alg_temp": None, "eps": 1e-3, **kw}
            if ref == "dream":
                seq = model.diffusion_generate(x, mask_token_id=MASK, output_history=False,
                                               return_dict_in_generate=False, **call)
                steps = kw["steps"]
            else:
                seq, stats = sched.diffusion_generate_schedule(model, x, mask_token_id=MASK, **call)
                steps = stats[0]["steps_taken"]
            got.append({"id": r["id"], "prompt_ids": r["prompt_ids"], "output_ids": seq[0, x.shape[1]:].tolist(),
                        "steps_taken": int(steps)})
        cases.append({"name": name, "reference": ref, "kwargs": kw, "overrides": engine_overrides(ref, kw),
                      "rows": got})
        print(name, [g["steps_taken"] for g in got], [g["output_ids"][:6] for g in got][:2])
    import transformers
    OUT.write_text(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__,
                               "seed": SEED, "cases": cases}, indent=1) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    sys.exit(main())
