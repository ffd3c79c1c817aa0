"""Validate/tokenize stage: chat template, tokenization and per-row checks, errors kept as rows.

Runs as Ray Data tasks over pyarrow batches (a plain function; the tokenizer is cached per worker
process). A row that fails a check keeps flowing with `error` set, so the writer can report it in
errors/ with its id, shard and reason; nothing is dropped and nothing raises.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache

import pyarrow as pa
from jinja2 import TemplateError
from transformers import PreTrainedTokenizerFast

from decoder.config import DecodeConfig
from decoder.families.specs import block_size
from decoder.transfer import blocks_of, row_schedule


#: tokenizer_config classes that are nothing but a tokenizer.json (plus chat template and special tokens)
GENERIC_TOKENIZER_CLASSES = {"PreTrainedTokenizerFast", "TokenizersBackend"}


@lru_cache(maxsize=4)
def load_tokenizer(path: str):
    """The checkpoint's tokenizer. A generic fast tokenizer (the embedded model's, LLaDA's) loads without
    `AutoTokenizer`, whose import pulls in torch: ~2 s less start-up in every preprocess worker."""
    try:
        with open(os.path.join(path, "tokenizer_config.json")) as f:
            cls = json.load(f).get("tokenizer_class")
    except (OSError, ValueError):
        cls = None
    if cls in GENERIC_TOKENIZER_CLASSES and os.path.exists(os.path.join(path, "tokenizer.json")):
        return PreTrainedTokenizerFast.from_pretrained(path, trust_remote_code=False)
    from transformers import AutoTokenizer  # model-specific classes (e.g. Dream's Qwen2Tokenizer)
    return AutoTokenizer.from_pretrained(path, trust_remote_code=False)   # never code shipped with a checkpoint


@lru_cache(maxsize=4)
def _config(path: str) -> dict:
    with open(f"{path}/config.json") as f:
        return json.load(f)


def context_length(path: str) -> int:
    """Context length from config.json without loading weights (HF, LLaDA and Dream key names; a
    multimodal config's text_config)."""
    cfg = _config(path)
    cfg = {**(cfg.get("text_config") or {}), **cfg}
    return int(cfg.get("max_position_embeddings") or cfg.get("max_sequence_length") or 1 << 30)


def canvas_length(path: str, decode: DecodeConfig | None = None) -> int:
    """The unit answers occupy whole ones of in a canvas or block family: DiffusionGemma's canvas, a
    block-diffusion family's block (decode.block.block_length, else the checkpoint's); 0 for masked families,
    whose answer layout follows decode.block_length and decode.steps."""
    cfg = _config(path)
    if cfg.get("model_type") == "diffusion_gemma":
        return int(cfg.get("canvas_length") or 256)
    block = block_size(path)
    return (decode.block.block_length or block) if block and decode is not None else block


def non_text_parts(messages: list) -> list[str]:
    """Types of message content parts that are not text (images, audio): text-only decoding refuses them."""
    return [str(p.get("type")) for m in messages if isinstance(m.get("content"), list)
            for p in m["content"] if isinstance(p, dict) and p.get("type") not in (None, "text")]


def prompt_ids(tok, prompt: str | None, messages_json: str | None, use_template: bool) -> list[int]:
    """Token ids of a row's prompt; chat messages (or a bare prompt) go through the chat template if any."""
    has_template = use_template and bool(getattr(tok, "chat_template", None))
    if messages_json is not None:
        messages = json.loads(messages_json)
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "content" in m for m in messages):
            raise ValueError("messages must be a list of {role, content} objects")
        if non_text_parts(messages):
            raise ValueError(f"messages hold {sorted(set(non_text_parts(messages)))} content: decoding is text only")
        if not has_template:
            raise ValueError("messages given but the tokenizer has no chat template; send 'prompt' instead")
        return list(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))
    if has_template:
        msgs = [{"role": "user", "content": prompt}]
        return list(tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False))
    return tok(prompt, add_special_tokens=False)["input_ids"]


def check_overrides(row: dict, decode: DecodeConfig, g: int) -> None:
    """Per-row `steps`, `temperature` and `tau_low_logit` against the job's settings; raises ValueError."""
    steps = row.get("row_steps", -1)
    blocks = g // decode.block_length
    if steps is not None and steps > 0 and steps % blocks:
        raise ValueError(f"steps {steps} must be a multiple of the row's {blocks} block(s) "
                         f"({g} answer positions / block_length {decode.block_length})")
    temp = row.get("row_temperature")
    if decode.samples_per_prompt > 1 and temp == 0 and decode.remasking != "random":
        raise ValueError(f"temperature 0 with decode.samples_per_prompt={decode.samples_per_prompt} "
                         f"would decode {decode.samples_per_prompt} identical samples")
    if row.get("row_tau_low_logit") is not None and "sched" not in decode.policy:
        raise ValueError("tau_low_logit set but decode.policy has no sched exit policy")


def check_row(row: dict, tok, decode: DecodeConfig, context: int, use_template: bool,
              canvas: int = 0) -> tuple[list[int], str]:
    """(prompt ids, error reason or "") for one parsed row."""
    if row["error"]:
        return [], row["error"]
    if row["messages"] is None and not (row["prompt"] or "").strip():
        return [], "empty prompt"
    mnt = row["max_new_tokens"] if row["max_new_tokens"] > 0 else None
    if mnt is not None and mnt > decode.gen_length and not decode.allow_longer:
        return [], (f"max_new_tokens {mnt} > decode.gen_length {decode.gen_length} (set decode.allow_longer=true "
                    f"to decode such rows at their own length)")
    try:
        ids = prompt_ids(tok, row["prompt"], row["messages"], use_template)
        if canvas:   # a canvas or block family: whole canvases / blocks; per-row steps are checked by its engine
            g = -(-(mnt or decode.gen_length) // canvas) * canvas
        else:
            n, _ = row_schedule(decode.gen_length, decode.block_length, decode.steps, mnt)
            g = blocks_of(n, decode.block_length) * decode.block_length   # whole blocks (the rest EOS-fixed)
            check_overrides(row, decode, g)
    except (ValueError, TypeError) as e:
        return [], str(e)
    except TemplateError as e:  # a chat template's raise_exception (e.g. roles must alternate): a row error
        return [], f"chat template rejected the row: {e}"
    if not ids:
        return [], "prompt tokenizes to nothing"
    if len(ids) + g > context:
        return [], f"prompt too long: {len(ids)} tokens + {g} answer positions > model context {context}"
    return ids, ""


def preprocess_batch(batch: pa.Table, model_path: str, decode: DecodeConfig, use_template: bool = True) -> pa.Table:
    tok = load_tokenizer(model_path)
    context, canvas = context_length(model_path), canvas_length(model_path, decode)
    ids, errors = [], []
    for row in batch.to_pylist():
        row_ids, err = check_row(row, tok, decode, context, use_template, canvas)
        ids.append(row_ids)
        errors.append(err)
    batch = batch.set_column(batch.schema.get_field_index("error"), "error", pa.array(errors, pa.string()))
    return batch.append_column("prompt_ids", pa.array(ids, pa.list_(pa.int32())))
