"""Golden outputs of the block-diffusion families' OWN released decode code (LLaDA2.0 / LLaDA2.1, SDAR,
Fast-dLLM v2) on tiny random checkpoints, for token-for-token parity tests of the project's block decoder.

Three parts, all deterministic (torch.manual_seed everywhere, one CPU thread):

1. `make_checkpoint` builds each family's model from the family's own modeling class with random weights and
   saves `tiny_llada2/`, `tiny_sdar/`, `tiny_fast_dllm_v2/` here: config.json in the hub's field names (original
   `model_type`, `architectures`, `auto_map`, family fields) plus `mask_token_id` / `eos_token_id`; float32
   `model.safetensors` with the reference's own state_dict keys; generation_config.json. One residual dimension
   is held constant (embedding column 0 = 1; every attention output projection, MLP / expert / shared-expert
   down projection writes 0 into dimension 0; no biases there) and the mask token's lm_head row reads only that
   dimension with weight -1e4, so the mask logit is about -2e3..-4e3 everywhere: its softmax probability
   underflows to exactly 0, no reference ever predicts the mask, and a decoder that suppresses the mask token
   computes the same softmax.
2. Logits goldens: one fixed 3-block input (12 ids, some of them the mask) through the reference forward with
   the reference's block-causal mask, the full [12, vocab] logits in float32 and in bfloat16 (model loaded with
   from_pretrained(dtype=torch.bfloat16)).
3. Decode goldens: each family's reference decode function at batch 1 for every setting in CASES and every
   prompt of prompts() (lengths PROMPT_LENS), the global RNG seeded with torch.manual_seed(row_seed(id)) right
   before each call (row_seed = crc32(f"{seed}:{id}"), seed 0). Recorded: the function, all its keyword
   arguments, the prompt, the returned ids after the prompt, the family's own answer, whether EOS ended it, the
   model forward trace.

Everything lands in golden.json next to this file. Re-running must reproduce golden.json byte for byte.

The reference code is fetched, never committed. To re-run (a throwaway venv; transformers 4.57.6, which their
code needs; einops is imported by the SDAR and Fast-dLLM modeling files):

    python3.11 -m venv /work/bd-ref-venv
    /work/bd-ref-venv/bin/pip install torch==2.13.0 'transformers==4.57.6' safetensors numpy einops
    # SDAR: github.com/JetAstra/SDAR @ c2041a8333333d685f6e15122c84f60f51f85ebd
    #   training/model/SDAR-4B-Chat/configuration_sdar.py, training/model/SDAR-4B-Chat/modeling_sdar.py, generate.py
    # LLaDA2.0 / 2.1: github.com/ZHZisZZ/dllm @ ca176752fbceec49c6b4777a2c18ae88e4eb10ed
    #   dllm/pipelines/llada2/models/{configuration,modeling}_llada2_moe.py,
    #   dllm/pipelines/llada21/models/{configuration,modeling}_llada21_moe.py
    # Fast-dLLM v2: github.com/wangziyannb/Fast-dLLM @ fd27cb3b4cb017db5058cd97ff315e67ba14e6ff
    #   v2/modeling_ori.py, v2/configuration.py
    for r in JetAstra/SDAR ZHZisZZ/dllm wangziyannb/Fast-dLLM; do
        git clone -q https://github.com/$r /tmp/src-${r#*/}; done
    git -C /tmp/src-SDAR checkout -q c2041a8333333d685f6e15122c84f60f51f85ebd
    git -C /tmp/src-dllm checkout -q ca176752fbceec49c6b4777a2c18ae88e4eb10ed
    git -C /tmp/src-Fast-dLLM checkout -q fd27cb3b4cb017db5058cd97ff315e67ba14e6ff
    mkdir -p /tmp/bd-ref/sdar /tmp/bd-ref/llada2 /tmp/bd-ref/fast_dllm_v2
    cp /tmp/src-SDAR/training/model/SDAR-4B-Chat/{configuration,modeling}_sdar.py /tmp/src-SDAR/generate.py \
        /tmp/bd-ref/sdar/
    cp /tmp/src-dllm/dllm/pipelines/llada2/models/*_llada2_moe.py \
        /tmp/src-dllm/dllm/pipelines/llada21/models/*_llada21_moe.py /tmp/bd-ref/llada2/
    cp /tmp/src-Fast-dLLM/v2/{modeling_ori,configuration}.py /tmp/bd-ref/fast_dllm_v2/
    /work/bd-ref-venv/bin/python tests/decoder/parity/block/make_block_golden.py \
        --sdar-code /tmp/bd-ref/sdar --llada2-code /tmp/bd-ref/llada2 --fast-dllm-code /tmp/bd-ref/fast_dllm_v2

(--remake-checkpoints rebuilds the three tiny_* folders first; without it, existing checkpoints are reused.)

What is stubbed, all of it written by this script into a temporary folder, none of the reference files edited:
- `flash_attn` (CUDA-only; SDAR's modeling file imports it unconditionally): `flash_attn.ops.triton.layer_norm.
  rms_norm_fn` computes like the Triton kernel, in float32 with a float32 weight multiply
  (x.float() * rsqrt(mean(x^2) + eps) * w.float(), cast back to x.dtype); `flash_attn.flash_attn_func` (used by
  SDAR for a block against its cache, causal=False) is torch SDPA with enable_gqa.
- SDAR's `fused_linear_diffusion_cross_entropy.py` (a training-only Triton loss, imports triton) is replaced by a
  module whose class raises if used.
- `transformers.utils.LossKwargs` (gone in transformers >= 4.54; SDAR's modeling names it in a typing-only
  class) is aliased to `TransformersKwargs` before SDAR is imported.
- LLaDA2.x generate() builds its 0/-inf block mask in bfloat16 whatever the model dtype, and torch SDPA rejects
  a bfloat16 mask with float32 queries (and the LLaDA2.0 port's eager path inverts a 4-D mask as if it were
  1/0, masking everything), so in the float32 LLaDA2.x runs the mask is cast to float32 on its way into the
  model's forward (values unchanged); bfloat16 runs take it as is.
- LLaDA2.1 runs load tiny_llada2 (model_type llada2_moe) through the llada21 port's own config class
  (model_type llada21_moe; same fields, same network: the script asserts identical logits).
(Checked separately: under transformers 4.53.1, Fast-dLLM v2's pinned version, where SDAR imports without the
LossKwargs alias, the SDAR and Fast-dLLM v2 logits and every decode row come out identical.)

Only the standard library, torch, safetensors and transformers are imported here (nothing from the project).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
OUT = HERE / "golden.json"
CKPT = {"llada2": HERE / "tiny_llada2", "sdar": HERE / "tiny_sdar", "fast_dllm_v2": HERE / "tiny_fast_dllm_v2"}
VOCAB, HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN, MOE_FFN = 128, 64, 4, 2, 16, 128, 32
MASK = VOCAB - 1
BLOCK = 4
ROPE_THETA = 10000.0
LM_HEAD_STD = {"llada2": 1.0, "sdar": 1.5, "fast_dllm_v2": 1.0}  # peaked enough that thresholds matter
# The EOS ids: tokens that greedy decoding of these checkpoints emits early (chosen once by looking at the
# outputs; no prompt contains them), so that EOS ends some answers in the middle of a block.
EOS = {"llada2": 37, "sdar": 15, "fast_dllm_v2": 35}
# SDAR ships a generation_config.json whose eos_token_id is a list ([<|im_end|>, <|endoftext|>]) while config.json
# has one id; its generate.py CLI passes that list as stopping_criteria_idx. The tiny checkpoint does the same.
SDAR_STOP_IDS = [91, EOS["sdar"]]
SEED = 0

# Prompts shared by all families: shorter than a block, exactly one block, unaligned, aligned, unaligned.
PROMPT_LENS = {"p0": 3, "p1": 4, "p2": 6, "p3": 8, "p4": 9}
# The logits-golden input: 3 blocks, the mask token at a few positions (of the 2nd and 3rd block).
LOGITS_MASKED_POS = (6, 9, 10, 11)

F32, BF16 = "float32", "bfloat16"

# family -> case name -> (function, dtype, keyword arguments other than the model / prompt / mask / eos).
# Every argument the reference function takes is written out (no hidden defaults); the mask and EOS ids
# are added from MASK / EOS when the case runs.
CASES: dict[str, dict[str, tuple[str, str, dict]]] = {
    "llada2": {
        "greedy-thr0.95-steps4": ("LLaDA2MoeModelLM.generate", F32, dict(
            temperature=0.0, block_length=4, steps=4, gen_length=16, top_p=None, top_k=None,
            eos_early_stop=False, minimal_topk=1, threshold=0.95)),
        "greedy-thr0.5-steps2": ("LLaDA2MoeModelLM.generate", F32, dict(
            temperature=0.0, block_length=4, steps=2, gen_length=16, top_p=None, top_k=None,
            eos_early_stop=False, minimal_topk=1, threshold=0.5)),
        "greedy-thr0.5-steps4-early_stop": ("LLaDA2MoeModelLM.generate", F32, dict(
            temperature=0.0, block_length=4, steps=4, gen_length=16, top_p=None, top_k=None,
            eos_early_stop=True, minimal_topk=1, threshold=0.5)),
        "greedy-thr0.8-steps3-gen13": ("LLaDA2MoeModelLM.generate", F32, dict(
            temperature=0.0, block_length=4, steps=3, gen_length=13, top_p=None, top_k=None,
            eos_early_stop=False, minimal_topk=1, threshold=0.8)),
        "T0.8-topk20-topp0.9-thr0.5-steps4": ("LLaDA2MoeModelLM.generate", F32, dict(
            temperature=0.8, block_length=4, steps=4, gen_length=16, top_p=0.9, top_k=20,
            eos_early_stop=False, minimal_topk=1, threshold=0.5)),
        "T1.0-thr0.95-steps2-early_stop": ("LLaDA2MoeModelLM.generate", F32, dict(
            temperature=1.0, block_length=4, steps=2, gen_length=16, top_p=None, top_k=None,
            eos_early_stop=True, minimal_topk=1, threshold=0.95)),
        "bf16-greedy-thr0.95-steps4": ("LLaDA2MoeModelLM.generate", BF16, dict(
            temperature=0.0, block_length=4, steps=4, gen_length=16, top_p=None, top_k=None,
            eos_early_stop=False, minimal_topk=1, threshold=0.95)),
    },
    "llada21": {
        "greedy-thr0.95-edit0.9-post16": ("LLaDA21.generate", F32, dict(
            temperature=0.0, block_length=4, steps=4, gen_length=16, top_p=None, top_k=None,
            eos_early_stop=False, minimal_topk=1, threshold=0.95, editing_threshold=0.9, max_post_steps=16,
            num_to_transfer=1)),
        "greedy-thr0.5-edit0.5-post4-early_stop": ("LLaDA21.generate", F32, dict(
            temperature=0.0, block_length=4, steps=4, gen_length=16, top_p=None, top_k=None,
            eos_early_stop=True, minimal_topk=1, threshold=0.5, editing_threshold=0.5, max_post_steps=4,
            num_to_transfer=1)),
        "greedy-thr0.7-edit0.0-post2-ntt2": ("LLaDA21.generate", F32, dict(
            temperature=0.0, block_length=4, steps=4, gen_length=16, top_p=None, top_k=None,
            eos_early_stop=False, minimal_topk=1, threshold=0.7, editing_threshold=0.0, max_post_steps=2,
            num_to_transfer=2)),
        "T0.8-topk20-thr0.7-edit0.5-post3": ("LLaDA21.generate", F32, dict(
            temperature=0.8, block_length=4, steps=4, gen_length=16, top_p=None, top_k=20,
            eos_early_stop=False, minimal_topk=1, threshold=0.7, editing_threshold=0.5, max_post_steps=3,
            num_to_transfer=1)),
        "T1.0-topp0.9-thr0.5-edit0.3-post2-early_stop": ("LLaDA21.generate", F32, dict(
            temperature=1.0, block_length=4, steps=4, gen_length=16, top_p=0.9, top_k=None,
            eos_early_stop=True, minimal_topk=1, threshold=0.5, editing_threshold=0.3, max_post_steps=2,
            num_to_transfer=1)),
    },
    "sdar": {
        "T1.0-thr0.85-steps4": ("block_diffusion_generate", F32, dict(
            gen_length=16, block_length=4, denoising_steps=4, temperature=1.0, top_k=0, top_p=1.0,
            remasking_strategy="low_confidence_dynamic", confidence_threshold=0.85, eb_threshold=None,
            stopping_criteria_idx=None)),
        "T1.0-thr0.9-steps4-stop": ("block_diffusion_generate", F32, dict(
            gen_length=16, block_length=4, denoising_steps=4, temperature=1.0, top_k=0, top_p=1.0,
            remasking_strategy="low_confidence_dynamic", confidence_threshold=0.9, eb_threshold=None,
            stopping_criteria_idx="EOS")),  # -> SDAR_STOP_IDS
        "T0.5-thr0.5-steps2-stop": ("block_diffusion_generate", F32, dict(
            gen_length=16, block_length=4, denoising_steps=2, temperature=0.5, top_k=0, top_p=1.0,
            remasking_strategy="low_confidence_dynamic", confidence_threshold=0.5, eb_threshold=None,
            stopping_criteria_idx="EOS")),  # -> SDAR_STOP_IDS
        "T0.7-topk10-topp0.9-thr0.9-steps4-stop": ("block_diffusion_generate", F32, dict(
            gen_length=16, block_length=4, denoising_steps=4, temperature=0.7, top_k=10, top_p=0.9,
            remasking_strategy="low_confidence_dynamic", confidence_threshold=0.9, eb_threshold=None,
            stopping_criteria_idx="EOS")),  # -> SDAR_STOP_IDS
        "T1.0-thr0.5-steps2-gen13": ("block_diffusion_generate", F32, dict(
            gen_length=13, block_length=4, denoising_steps=2, temperature=1.0, top_k=0, top_p=1.0,
            remasking_strategy="low_confidence_dynamic", confidence_threshold=0.5, eb_threshold=None,
            stopping_criteria_idx=None)),
        "bf16-T1.0-thr0.9-steps4-stop": ("block_diffusion_generate", BF16, dict(
            gen_length=16, block_length=4, denoising_steps=4, temperature=1.0, top_k=0, top_p=1.0,
            remasking_strategy="low_confidence_dynamic", confidence_threshold=0.9, eb_threshold=None,
            stopping_criteria_idx="EOS")),  # -> SDAR_STOP_IDS
    },
    "fast_dllm_v2": {
        "greedy-thr1": ("Fast_dLLM_QwenForCausalLM.generate", F32, dict(
            max_new_tokens=16, max_length=None, tokenizer=None, threshold=1, small_block_size=2, block_size=4,
            stopping_criteria=None, top_p=0.95, temperature=0, use_block_cache=False,
            return_dict_in_generate=False, output_scores=False, output_hidden_states=False)),
        "greedy-thr0.9": ("Fast_dLLM_QwenForCausalLM.generate", F32, dict(
            max_new_tokens=16, max_length=None, tokenizer=None, threshold=0.9, small_block_size=2, block_size=4,
            stopping_criteria=None, top_p=0.95, temperature=0, use_block_cache=False,
            return_dict_in_generate=False, output_scores=False, output_hidden_states=False)),
        "greedy-thr0.5": ("Fast_dLLM_QwenForCausalLM.generate", F32, dict(
            max_new_tokens=16, max_length=None, tokenizer=None, threshold=0.5, small_block_size=2, block_size=4,
            stopping_criteria=None, top_p=0.95, temperature=0, use_block_cache=False,
            return_dict_in_generate=False, output_scores=False, output_hidden_states=False)),
        "greedy-thr0.9-sbs4": ("Fast_dLLM_QwenForCausalLM.generate", F32, dict(
            max_new_tokens=16, max_length=None, tokenizer=None, threshold=0.9, small_block_size=4, block_size=4,
            stopping_criteria=None, top_p=0.95, temperature=0, use_block_cache=False,
            return_dict_in_generate=False, output_scores=False, output_hidden_states=False)),
        "T0.8-topp0.95-thr0.9": ("Fast_dLLM_QwenForCausalLM.generate", F32, dict(
            max_new_tokens=16, max_length=None, tokenizer=None, threshold=0.9, small_block_size=2, block_size=4,
            stopping_criteria=None, top_p=0.95, temperature=0.8, use_block_cache=False,
            return_dict_in_generate=False, output_scores=False, output_hidden_states=False)),
        "T1.0-topp0.9-thr0.5": ("Fast_dLLM_QwenForCausalLM.generate", F32, dict(
            max_new_tokens=16, max_length=None, tokenizer=None, threshold=0.5, small_block_size=2, block_size=4,
            stopping_criteria=None, top_p=0.9, temperature=1.0, use_block_cache=False,
            return_dict_in_generate=False, output_scores=False, output_hidden_states=False)),
        "bf16-greedy-thr0.9": ("Fast_dLLM_QwenForCausalLM.generate", BF16, dict(
            max_new_tokens=16, max_length=None, tokenizer=None, threshold=0.9, small_block_size=2, block_size=4,
            stopping_criteria=None, top_p=0.95, temperature=0, use_block_cache=False,
            return_dict_in_generate=False, output_scores=False, output_hidden_states=False)),
    },
}
CKPT_OF = {"llada2": "llada2", "llada21": "llada2", "sdar": "sdar", "fast_dllm_v2": "fast_dllm_v2"}


def row_seed(rid: str, seed: int = SEED) -> int:
    """The engine's per-row generator seed (same rule as make_dream_golden.py)."""
    return zlib.crc32(f"{seed}:{rid}".encode())


def prompts() -> list[dict]:
    """Deterministic prompts, ids in 1..MASK-1 (the EOS ids were chosen among ids no prompt contains)."""
    g = torch.Generator().manual_seed(7)
    out = []
    for rid, n in PROMPT_LENS.items():
        ids = torch.randint(1, MASK, (n,), generator=g).tolist()
        assert not set(ids) & (set(EOS.values()) | set(SDAR_STOP_IDS)), (rid, ids)
        out.append({"id": rid, "prompt_ids": ids})
    return out


def logits_input() -> list[int]:
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(1, MASK, (3 * BLOCK,), generator=g)
    ids[list(LOGITS_MASKED_POS)] = MASK
    return ids.tolist()


# ---------------------------------------------------------------------------------------------------------
# Stubs and loading of the reference code
# ---------------------------------------------------------------------------------------------------------

_FLASH_ATTN_INIT = '''"""CPU stand-in for flash_attn (written by make_block_golden.py): flash_attn_func via torch SDPA."""
import torch
import torch.nn.functional as F


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, **kwargs):
    # q: [batch, q_len, heads, dim]; k, v: [batch, kv_len, kv_heads, dim]  (flash-attn layout)
    if causal or dropout_p:
        raise NotImplementedError("stub: only causal=False, dropout 0 (all SDAR inference uses)")
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         scale=softmax_scale, enable_gqa=True)
    return out.transpose(1, 2)
'''

_FLASH_RMS = '''"""CPU stand-in for flash_attn.ops.triton.layer_norm.rms_norm_fn (written by make_block_golden.py).

Like the Triton kernel: the input and the weight are upcast to float32, y = x * rstd * w, cast back to x.dtype.
"""
import torch


def rms_norm_fn(x, weight, bias=None, residual=None, x1=None, weight1=None, bias1=None, eps=1e-6, dropout_p=0.0,
                rowscale=None, prenorm=False, residual_in_fp32=False, **kwargs):
    if residual is not None or x1 is not None or prenorm or dropout_p or rowscale is not None:
        raise NotImplementedError("stub: plain rms_norm_fn(x, weight, bias, eps) only")
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    y = y * weight.float()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)
'''

_FUSED_CE_STUB = '''"""Stand-in for SDAR's training-only Triton loss (written by make_block_golden.py)."""


class FusedLinearDiffusionCrossEntropyLoss:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("training-only loss, not available in this CPU reference run")
'''


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def setup_reference(args, work: Path) -> dict:
    """Import the reference modules from a private temp folder. Returns a namespace dict."""
    # flash_attn stub package
    _write(work / "stubs/flash_attn/__init__.py", _FLASH_ATTN_INIT)
    _write(work / "stubs/flash_attn/ops/__init__.py", "")
    _write(work / "stubs/flash_attn/ops/triton/__init__.py", "")
    _write(work / "stubs/flash_attn/ops/triton/layer_norm.py", _FLASH_RMS)
    sys.path.insert(0, str(work / "stubs"))
    # SDAR as a package (its modeling file uses relative imports)
    sd = Path(args.sdar_code)
    (work / "sdar_ref").mkdir()
    _write(work / "sdar_ref/__init__.py", "")
    for f in ("configuration_sdar.py", "modeling_sdar.py"):
        shutil.copy(sd / f, work / "sdar_ref" / f)
    _write(work / "sdar_ref/fused_linear_diffusion_cross_entropy.py", _FUSED_CE_STUB)
    # LLaDA2.0 and LLaDA2.1 (dllm ports) as packages
    ld = Path(args.llada2_code)
    for pkg, files in (("llada2_ref", ("configuration_llada2_moe.py", "modeling_llada2_moe.py")),
                       ("llada21_ref", ("configuration_llada21_moe.py", "modeling_llada21_moe.py"))):
        (work / pkg).mkdir()
        _write(work / pkg / "__init__.py", "")
        for f in files:
            shutil.copy(ld / f, work / pkg / f)
    sys.path.insert(0, str(work))
    import transformers.utils as tu
    if not hasattr(tu, "LossKwargs"):
        tu.LossKwargs = tu.TransformersKwargs
    ns = {}
    ns["sdar_cfg"] = importlib.import_module("sdar_ref.configuration_sdar").SDARConfig
    ns["sdar_cls"] = importlib.import_module("sdar_ref.modeling_sdar").SDARForCausalLM
    spec = importlib.util.spec_from_file_location("sdar_generate", sd / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    ns["sdar_generate"] = gen.block_diffusion_generate
    ns["llada2_cfg"] = importlib.import_module("llada2_ref.configuration_llada2_moe").LLaDA2MoeConfig
    ns["llada2_cls"] = importlib.import_module("llada2_ref.modeling_llada2_moe").LLaDA2MoeModelLM
    ns["llada21_cfg"] = importlib.import_module("llada21_ref.configuration_llada21_moe").LLaDA2MoeConfig
    ns["llada21_cls"] = importlib.import_module("llada21_ref.modeling_llada21_moe").LLaDA2MoeModelLM
    # Fast-dLLM v2: modeling_ori.py does `from configuration import Fast_dLLM_QwenConfig` (absolute)
    sys.path.insert(0, str(Path(args.fast_dllm_code).resolve()))
    ns["fast_cfg"] = importlib.import_module("configuration").Fast_dLLM_QwenConfig
    ns["fast_cls"] = importlib.import_module("modeling_ori").Fast_dLLM_QwenForCausalLM
    return ns


# ---------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------

def _config_json(family: str) -> dict:
    import transformers
    tv = transformers.__version__
    eos = EOS[family]
    if family == "llada2":
        # field names of inclusionAI LLaDA2.0-mini's config.json (dFactory configs/model_configs/llada2_mini),
        # with the hub's model_type llada2_moe
        return {
            "architectures": ["LLaDA2MoeModelLM"],
            "attention_dropout": 0.0,
            "auto_map": {"AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
                         "AutoModel": "modeling_llada2_moe.LLaDA2MoeModel",
                         "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM"},
            "num_hidden_layers": 3, "hidden_size": HIDDEN, "intermediate_size": FFN, "first_k_dense_replace": 1,
            "hidden_act": "silu", "max_position_embeddings": 256, "model_type": "llada2_moe",
            "moe_intermediate_size": MOE_FFN, "norm_topk_prob": True, "num_experts_per_tok": 2,
            "norm_head": False, "num_attention_heads": HEADS, "num_experts": 8, "num_key_value_heads": KV_HEADS,
            "rope_theta": ROPE_THETA, "rope_scaling": None, "tie_word_embeddings": False,
            "torch_dtype": "float32", "transformers_version": tv, "use_bias": False, "use_rmsnorm": True,
            "rms_norm_eps": 1e-06, "head_dim": HEAD_DIM, "num_shared_experts": 1, "use_cache": False,
            "use_qkv_bias": False, "use_qk_norm": True, "embedding_dropout": 0.0, "norm_softmax": False,
            "output_dropout": 0.0, "vocab_size": VOCAB, "rotary_dim": HEAD_DIM // 2,
            "using_split_qkv_in_self_attention": False, "router_dtype": "fp32",
            "moe_router_enable_expert_bias": True, "routed_scaling_factor": 2.5, "n_group": 4, "topk_group": 2,
            "score_function": "sigmoid", "initializer_range": 0.02, "max_window_layers": 28,
            "output_router_logits": False, "pad_token_id": eos, "partial_rotary_factor": 0.5,
            "use_sliding_window": False, "eos_token_id": eos, "mask_token_id": MASK,
        }
    if family == "sdar":
        # field names of JetAstra/SDAR training/model/SDAR-4B-Chat/config.json
        return {
            "architectures": ["SDARForCausalLM"],
            "auto_map": {"AutoConfig": "configuration_sdar.SDARConfig", "AutoModel": "modeling_sdar.SDARModel",
                         "AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM"},
            "attention_bias": False, "attention_dropout": 0.0, "attn_implementation": "flex_attention",
            "bos_token_id": eos, "debug": False, "eos_token_id": eos, "block_size": BLOCK, "mask_token_id": MASK,
            "ep_size": 1, "fuse_cross_entropy": True, "head_dim": HEAD_DIM, "hidden_act": "silu",
            "hidden_size": HIDDEN, "initializer_range": 0.02, "intermediate_size": FFN,
            "max_position_embeddings": 256, "max_window_layers": 3, "micro_forward": False, "model_type": "sdar",
            "num_attention_heads": HEADS, "num_hidden_layers": 3, "num_key_value_heads": KV_HEADS,
            "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": ROPE_THETA, "skip_checkpoint": False,
            "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "float32",
            "transformers_version": tv, "use_cache": False, "use_deepep": False, "use_sliding_window": False,
            "vocab_size": VOCAB,
        }
    # Fast-dLLM v2: a Qwen2.5 config.json with the Fast_dLLM_Qwen model_type / architecture / auto_map and bd_size
    return {
        "architectures": ["Fast_dLLM_QwenForCausalLM"],
        "auto_map": {"AutoConfig": "configuration.Fast_dLLM_QwenConfig",
                     "AutoModelForCausalLM": "modeling.Fast_dLLM_QwenForCausalLM"},
        "attention_dropout": 0.0, "bd_size": BLOCK, "bos_token_id": eos, "eos_token_id": eos,
        "hidden_act": "silu", "hidden_size": HIDDEN, "initializer_range": 0.02, "intermediate_size": FFN,
        "max_position_embeddings": 256, "max_window_layers": 3, "model_type": "Fast_dLLM_Qwen",
        "num_attention_heads": HEADS, "num_hidden_layers": 3, "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": ROPE_THETA, "sliding_window": None,
        "tie_word_embeddings": False, "torch_dtype": "float32", "transformers_version": tv, "use_cache": True,
        "use_sliding_window": False, "vocab_size": VOCAB, "mask_token_id": MASK,
    }


def _generation_config_json(family: str) -> dict:
    eos = EOS[family]
    if family == "sdar":  # the SDAR hub file: sampling defaults + eos list
        return {"bos_token_id": eos, "do_sample": True, "eos_token_id": SDAR_STOP_IDS, "pad_token_id": eos,
                "temperature": 0.6, "top_k": 20, "top_p": 0.95}
    return {"bos_token_id": eos, "eos_token_id": eos, "pad_token_id": eos}


def make_checkpoint(family: str, ns: dict) -> None:
    """Build the family's model from its reference class, randomize, save (see module docstring)."""
    from safetensors.torch import save_file

    cfg_json = _config_json(family)
    cls_cfg, cls = {"llada2": (ns["llada2_cfg"], ns["llada2_cls"]), "sdar": (ns["sdar_cfg"], ns["sdar_cls"]),
                    "fast_dllm_v2": (ns["fast_cfg"], ns["fast_cls"])}[family]
    kw = {k: v for k, v in cfg_json.items() if k not in ("architectures", "auto_map", "model_type",
                                                         "transformers_version", "torch_dtype")}
    torch.manual_seed({"llada2": 101, "sdar": 202, "fast_dllm_v2": 303}[family])
    model = cls(cls_cfg(**kw)).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif p.dim() == 2:
                p.normal_(0.0, LM_HEAD_STD[family] if name.startswith("lm_head") else 0.15)
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.05)
            else:
                raise AssertionError(f"unhandled parameter {name}")
        if family == "llada2":
            emb = model.model.word_embeddings.weight
            for layer in model.model.layers:
                layer.attention.dense.weight[0] = 0.0
                mlp = layer.mlp
                if hasattr(mlp, "experts"):
                    for e in mlp.experts:
                        e.down_proj.weight[0] = 0.0
                    mlp.shared_experts.down_proj.weight[0] = 0.0
                    mlp.gate.expert_bias.copy_(0.1 * torch.randn_like(mlp.gate.expert_bias))
                else:
                    mlp.down_proj.weight[0] = 0.0
        else:
            emb = model.model.embed_tokens.weight
            for layer in model.model.layers:
                layer.self_attn.o_proj.weight[0] = 0.0
                layer.mlp.down_proj.weight[0] = 0.0
                assert layer.self_attn.o_proj.bias is None
        emb[:, 0] = 1.0                                    # the constant residual dimension
        model.model.norm.weight[0] = 1.0                   # the final norm keeps it positive
        model.lm_head.weight[MASK] = 0.0
        model.lm_head.weight[MASK, 0] = -1e4               # mask logit = -1e4 * 1 / rms(h): about -1e3..-1e4
    path = CKPT[family]
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "model.safetensors").chmod(0o644)
    (path / "config.json").write_text(json.dumps(cfg_json, indent=2) + "\n")
    (path / "generation_config.json").write_text(json.dumps(_generation_config_json(family), indent=2) + "\n")


def load_model(family: str, ns: dict, dtype: str):
    """from_pretrained(dtype=...) of the reference class on the tiny checkpoint; asserts exact key match."""
    cls = {"llada2": ns["llada2_cls"], "llada21": ns["llada21_cls"], "sdar": ns["sdar_cls"],
           "fast_dllm_v2": ns["fast_cls"]}[family]
    kw = {}
    if family == "llada21":  # the same checkpoint through the LLaDA2.1 port's own config class
        kw["config"] = ns["llada21_cfg"].from_pretrained(str(CKPT["llada2"]))
    model, info = cls.from_pretrained(str(CKPT[CKPT_OF[family]]), dtype=getattr(torch, dtype),
                                      output_loading_info=True, **kw)
    bad = {k: v for k, v in info.items() if v}
    assert not bad, f"{family}: loading info {bad}"
    return model.eval()


# ---------------------------------------------------------------------------------------------------------
# Tracing the reference's model forwards
# ---------------------------------------------------------------------------------------------------------

class ForwardTrace:
    """Replaces model.forward on the instance (every reference calls self.forward / model(...)).

    Per call it records [first position, number of input tokens, KV-cache length before the call, whether the
    call stores its KV (SDAR store_kv / Fast-dLLM update_past_key_values)], the input ids, the largest logit
    of the mask token, and keeps the tensor the input ids are a view of (the reference's decode canvas).
    """

    def __init__(self, model):
        self.model, self.orig = model, model.forward
        self.calls, self.inputs = [], []
        self.canvas = None
        self.max_mask_logit = -float("inf")
        self.mask_cast = False
        model.forward = self

    def __call__(self, *args, **kwargs):
        ids = args[0] if args else kwargs["input_ids"]
        pkv = kwargs.get("past_key_values")
        cache_len = pkv.get_seq_length() if pkv is not None else 0
        pos = kwargs.get("position_ids")
        first = int(pos[0, 0]) if pos is not None else cache_len
        store = bool(kwargs.get("store_kv", False) or kwargs.get("update_past_key_values", False))
        self.calls.append([first, int(ids.shape[1]), int(cache_len), store])
        self.inputs.append(ids[0].tolist())
        self.canvas = ids._base if ids._base is not None else ids
        am = kwargs.get("attention_mask")
        if am is not None and am.is_floating_point() and am.dim() == 4 and am.dtype != self.model.dtype:
            # LLaDA2.x generate() builds its 0/-inf block mask in bfloat16 whatever the model dtype, and torch
            # SDPA rejects a bfloat16 mask with float32 queries: cast it (0 and -inf are exact in both dtypes)
            kwargs["attention_mask"] = am.to(self.model.dtype)
            self.mask_cast = True
        out = self.orig(*args, **kwargs)
        self.max_mask_logit = max(self.max_mask_logit, float(out.logits[..., MASK].max()))
        return out

    def close(self):
        del self.model.forward

    def denoise_forwards_per_block(self) -> list[list[int]]:
        """[[end position of the block, number of forwards that do not store KV], ...] in decode order."""
        out: list[list[int]] = []
        for first, n, _, store in self.calls:
            if store:
                continue
            end = first + n
            if out and out[-1][0] == end:
                out[-1][1] += 1
            else:
                out.append([end, 1])
        return out


def count_edits(inputs: list[list[int]], final: list[int], block: int) -> int:
    """LLaDA2.1: tokens that changed from a decoded (non-mask) token to another one between consecutive
    forwards of the same block window (the window's last `block` positions), and after the last forward."""
    edits = 0
    states = inputs + [final]
    for a, b in zip(states, states[1:]):
        end = len(a)
        bb = b[:end]
        for i in range(end - block, end):
            if a[i] != MASK and bb[i] != a[i]:
                edits += 1
    return edits


# ---------------------------------------------------------------------------------------------------------
# Goldens
# ---------------------------------------------------------------------------------------------------------

def _block_mask_llada2(n_blocks: int) -> torch.Tensor:
    """Exactly the mask LLaDA2MoeModelLM.generate builds: [1, 1, L, L], 0 / -inf, bfloat16."""
    m = torch.tril(torch.ones(n_blocks, n_blocks))
    return m.repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1).unsqueeze(0).unsqueeze(0).log() \
        .to(torch.bfloat16)


def _block_mask_sdar(n_blocks: int) -> torch.Tensor:
    """Exactly the mask block_diffusion_generate builds: [1, L, L], 1.0 = attend (cast to bool in the model)."""
    m = torch.tril(torch.ones(n_blocks, n_blocks))
    return m.repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1).unsqueeze(0)


@torch.no_grad()
def logits_golden(family: str, model) -> list[list[float]]:
    ids = torch.tensor([logits_input()])
    L = ids.shape[1]
    pos = torch.arange(L).unsqueeze(0)
    if family in ("llada2", "llada21"):
        out = model(ids, attention_mask=_block_mask_llada2(L // BLOCK).to(model.dtype), position_ids=pos)
    elif family == "sdar":
        out = model(ids, attention_mask=_block_mask_sdar(L // BLOCK), position_ids=pos)
    else:  # Fast-dLLM builds its block-causal mask itself from block_size (no cache: query offset 0)
        out = model(input_ids=ids, block_size=BLOCK)
    return out.logits[0].float().tolist()


LOGITS_MASK_DOC = {
    "llada2": "forward(input_ids, attention_mask=tril(ones(3,3)).repeat_interleave(4,0).repeat_interleave(4,1)"
              "[None,None].log() (generate()'s 0/-inf block mask; generate() makes it bfloat16, here it is in the "
              "model dtype, see the float32 note of the cases), position_ids=arange(12)); SDPA",
    "sdar": "forward(input_ids, attention_mask=tril(ones(3,3)).repeat_interleave(4,0).repeat_interleave(4,1)[None] "
            "(block_diffusion_generate's 1/0 float mask; the model casts it to bool), position_ids=arange(12)); "
            "no cache",
    "fast_dllm_v2": "forward(input_ids=..., block_size=4): the model builds eval_block_diff_mask "
                    "(q//4 >= kv//4) itself, positions arange(12); raw logits, i.e. BEFORE generate()'s one-position "
                    "shift",
}


def run_case(family: str, fn: str, kw: dict, model, ns: dict, row: dict) -> dict:
    prompt = row["prompt_ids"]
    P = len(prompt)
    x = torch.tensor([prompt])
    eos = EOS[CKPT_OF[family]]
    if family in ("llada2", "llada21"):
        call = {**kw, "eos_id": eos, "mask_id": MASK}
        blocks_total = -(-(P + kw["gen_length"]) // kw["block_length"]) - P // kw["block_length"]
    elif family == "sdar":
        call = {"mask_id": MASK, **kw}
        if call["stopping_criteria_idx"] == "EOS":
            call["stopping_criteria_idx"] = list(SDAR_STOP_IDS)
        blocks_total = -(-(P + kw["gen_length"]) // kw["block_length"]) - P // kw["block_length"]
    else:
        call = {**kw, "mask_id": MASK, "stop_token": eos}
        blocks_total = kw["max_new_tokens"] // kw["block_size"]
    tr = ForwardTrace(model)
    try:
        torch.manual_seed(row_seed(row["id"]))
        if family in ("llada2", "llada21"):
            out = model.generate(inputs=x, **call)
            returned = out[0].tolist()
            prompt_after = tr.canvas[0, :P].tolist()
        elif family == "sdar":
            out = ns["sdar_generate"](model, prompt={"input_ids": x}, **call)
            returned = out[0, P:].tolist()
            prompt_after = out[0, :P].tolist()
        else:
            out = model.generate(input_ids=x, **call)
            returned = out[0, P:].tolist()
            prompt_after = out[0, :P].tolist()
    finally:
        tr.close()
    assert tr.max_mask_logit < -100.0, (family, row["id"], tr.max_mask_logit)
    if family == "sdar":
        answer = [t for t in returned if t != MASK]
    else:
        answer = list(returned)
    assert MASK not in answer, (family, row["id"], answer)
    stops = SDAR_STOP_IDS if family == "sdar" else [eos]
    eos_at = [i for i, t in enumerate(answer) if t in stops]
    per_block = tr.denoise_forwards_per_block()
    res = {
        "id": row["id"], "seed": row_seed(row["id"]), "prompt_ids": prompt,
        "returned_ids": returned,
        "prompt_overwritten": [[i, t] for i, (a, t) in enumerate(zip(prompt, prompt_after)) if a != t],
        "answer_ids": answer,
        "eos_in_answer": bool(eos_at),
        "eos_index": eos_at[0] if eos_at else None,
        "blocks_total": blocks_total,
        "blocks_decoded": len(per_block),
        "stopped_before_last_block": len(per_block) < blocks_total,
        "n_forwards": len(tr.calls),
        "n_kv_store_forwards": sum(1 for c in tr.calls if c[3]),
        "denoise_forwards_per_block": per_block,
        "forward_trace": tr.calls,
    }
    if family != "sdar":
        res["canvas_ids"] = tr.canvas[0, P:].tolist()
    if family == "llada21":
        res["edits"] = count_edits(tr.inputs, tr.canvas[0].tolist(), kw["block_length"])
    return res, call


ROW_DOC = {
    "returned_ids": "what the reference function returned, after the prompt. LLaDA2.x generate() and Fast-dLLM "
                    "generate() already cut it after the first EOS (inclusive) and, LLaDA2.x, at gen_length; SDAR's "
                    "block_diffusion_generate returns the whole block-aligned canvas (mask ids where it stopped early)",
    "prompt_overwritten": "[[position, token], ...]: prompt positions whose token the reference replaced (SDAR's "
                          "topk over -inf confidences can pick and overwrite a prompt token of a partial first "
                          "block when fewer masks remain than the step's quota); [] otherwise",
    "answer_ids": "the family's own final answer: = returned_ids, except SDAR, where the mask ids are removed (as "
                  "SDAR generate.py's __main__ does with '<|MASK|>'); SDAR leaves anything after EOS in place",
    "eos_in_answer / eos_index": "an EOS in answer_ids, and the first one's index there (EOS: the checkpoint's "
                                 "eos_token_id; SDAR: any id of its generation_config eos_token_id list "
                                 "sdar_stop_ids, what its generate.py passes as stopping_criteria_idx)",
    "blocks_total / blocks_decoded": "blocks the loop would visit (LLaDA2.x / SDAR: ceil((P+gen)/B) - P//B; "
                                     "Fast-dLLM: max_new_tokens // block_size) / blocks that got a denoise forward",
    "stopped_before_last_block": "blocks_decoded < blocks_total: an EOS / stop rule ended the loop early",
    "n_forwards / n_kv_store_forwards": "model forward calls; of them, those storing their KV (SDAR prefill + "
                                        "block commit with store_kv=True; Fast-dLLM prefill + block commit with "
                                        "update_past_key_values=True; LLaDA2.x: no cache, always 0)",
    "denoise_forwards_per_block": "[[block end position, number of non-storing forwards of that block], ...]",
    "forward_trace": "per forward call [first position id, number of input tokens, KV-cache length before the "
                     "call, stores KV]",
    "canvas_ids": "LLaDA2.x / Fast-dLLM: the reference's internal token canvas after the prompt, as it stood after "
                  "the last forward's commits (mask ids where never decoded; for Fast-dLLM without the AR token "
                  "appended after a final block-commit forward)",
    "edits": "LLaDA2.1: number of already-decoded tokens replaced by a different token (T2T edits)",
}


# ---------------------------------------------------------------------------------------------------------
# JSON: indented structure, one line per list of numbers, floats with repr precision
# ---------------------------------------------------------------------------------------------------------

def _dump(obj, ind: int = 0) -> str:
    pad, pad1 = " " * ind, " " * (ind + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad1}{json.dumps(k)}: {_dump(v, ind + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if all(not isinstance(v, (dict, list)) for v in obj):
            return "[" + ", ".join(json.dumps(v) for v in obj) + "]"
        return "[\n" + ",\n".join(pad1 + _dump(v, ind + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sdar-code", required=True,
                    help="folder with SDAR's configuration_sdar.py, modeling_sdar.py and generate.py")
    ap.add_argument("--llada2-code", required=True,
                    help="folder with dllm's configuration_llada2_moe.py, modeling_llada2_moe.py, "
                         "configuration_llada21_moe.py, modeling_llada21_moe.py")
    ap.add_argument("--fast-dllm-code", required=True,
                    help="folder with Fast-dLLM v2's modeling_ori.py and configuration.py")
    ap.add_argument("--remake-checkpoints", action="store_true", help="rebuild tiny_* before decoding")
    args = ap.parse_args()
    t0 = time.time()
    torch.set_num_threads(1)
    import transformers

    work = Path(tempfile.mkdtemp(prefix="bd-ref-"))
    try:
        ns = setup_reference(args, work)
        for fam in CKPT:
            if args.remake_checkpoints or not (CKPT[fam] / "model.safetensors").exists():
                make_checkpoint(fam, ns)
        models: dict = {}

        def get(fam, dtype):
            if (fam, dtype) not in models:
                models[fam, dtype] = load_model(fam, ns, dtype)
            return models[fam, dtype]

        logits = {}
        for fam in ("llada2", "sdar", "fast_dllm_v2"):
            logits[fam] = {"input_ids": logits_input(), "call": LOGITS_MASK_DOC[fam],
                           F32: logits_golden(fam, get(fam, F32)), BF16: logits_golden(fam, get(fam, BF16))}
        # the LLaDA2.1 port is the same network: same logits from the same checkpoint
        assert logits_golden("llada21", get("llada21", F32)) == logits["llada2"][F32]

        rows = prompts()
        cases = []
        for fam, fam_cases in CASES.items():
            for name, (fn, dtype, kw) in fam_cases.items():
                model = get(fam, dtype)
                got, call = [], None
                for r in rows:
                    res, call = run_case(fam, fn, kw, model, ns, r)
                    got.append(res)
                cases.append({"family": fam, "name": name, "function": fn, "dtype": dtype,
                              "checkpoint": CKPT[CKPT_OF[fam]].name,
                              "kwargs": {k: v for k, v in call.items()}, "rows": got})
                if fam in ("llada2", "llada21") and dtype == F32:
                    cases[-1]["note"] = ("generate()'s bfloat16 0/-inf block mask was cast to float32 before each "
                                         "forward (SDPA rejects a bf16 mask with fp32 queries); values unchanged")
                print(f"{fam:13s} {name:45s} fwd={[g['n_forwards'] for g in got]} "
                      f"eos={[g['eos_index'] for g in got]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    golden = {
        "generator": "tests/decoder/parity/block/make_block_golden.py",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "reference_code": {
            "sdar": "github.com/JetAstra/SDAR@c2041a8333333d685f6e15122c84f60f51f85ebd generate.py "
                    "(block_diffusion_generate), training/model/SDAR-4B-Chat/{configuration,modeling}_sdar.py",
            "llada2": "github.com/ZHZisZZ/dllm@ca176752fbceec49c6b4777a2c18ae88e4eb10ed "
                      "dllm/pipelines/llada2/models/{configuration,modeling}_llada2_moe.py (LLaDA2MoeModelLM.generate)",
            "llada21": "github.com/ZHZisZZ/dllm@ca176752fbceec49c6b4777a2c18ae88e4eb10ed "
                       "dllm/pipelines/llada21/models/{configuration,modeling}_llada21_moe.py "
                       "(LLaDA2MoeModelLM.generate), run on the tiny_llada2 checkpoint",
            "fast_dllm_v2": "github.com/wangziyannb/Fast-dLLM@fd27cb3b4cb017db5058cd97ff315e67ba14e6ff "
                            "v2/{modeling_ori,configuration}.py (Fast_dLLM_QwenForCausalLM.generate)",
        },
        "seed": SEED, "row_seed": "zlib.crc32(f'{seed}:{id}'.encode()); torch.manual_seed(row_seed) right before "
                                  "each reference call",
        "mask_token_id": MASK, "eos_token_id": dict(EOS), "sdar_stop_ids": SDAR_STOP_IDS, "block_size": BLOCK,
        "row_fields": ROW_DOC,
        "logits": logits,
        "cases": cases,
    }
    OUT.write_text(_dump(golden) + "\n")
    print(f"wrote {OUT} in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
