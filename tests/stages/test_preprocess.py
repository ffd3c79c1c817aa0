"""Validate/tokenize stage (stages/preprocess.py) with the embedded character-level tokenizer."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pyarrow as pa
import pytest
from transformers import AutoTokenizer

from decoder.config import DecodeConfig
from stages.preprocess import check_row, context_length, load_tokenizer, preprocess_batch
from tests.stages.helpers import MODEL, jsonl, parse
from tests.support import ROOT

DECODE = DecodeConfig()                               # gen_length 16, block_length 16
LONGER = DecodeConfig(allow_longer=True)              # rows may ask for more than gen_length
TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system turns') }}"
            "{% endif %}{{ m['content'] }}|{% endfor %}{% if add_generation_prompt %}={% endif %}")


def ids_of(text: str) -> list[int]:
    return load_tokenizer(MODEL)(text, add_special_tokens=False)["input_ids"]


def check(rec, tok=None, use_template: bool = True, decode: DecodeConfig = DECODE):
    row = parse(jsonl(rec))[0]
    return check_row(row, tok or load_tokenizer(MODEL), decode, context_length(MODEL), use_template)


@pytest.fixture(scope="module")
def templated():
    tok = AutoTokenizer.from_pretrained(MODEL)       # a fresh instance: the cached one stays template-free
    tok.chat_template = TEMPLATE
    return tok


def test_embedded_model_facts() -> None:
    assert context_length(MODEL) == 64
    assert load_tokenizer(MODEL).chat_template is None
    assert ids_of("ab=") == [4, 5, 41]


def test_good_prompt_is_tokenized_without_template() -> None:
    assert check({"id": "a", "prompt": "copy:ab="}) == (ids_of("copy:ab="), "")


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt(prompt: str) -> None:
    assert check({"id": "e", "prompt": prompt}) == ([], "empty prompt")


def test_prompt_length_limit_is_context_minus_answer() -> None:
    ids, err = check({"id": "fits", "prompt": "a" * 48})              # 48 + 16 == 64
    assert err == "" and len(ids) == 48
    assert check({"id": "long", "prompt": "a" * 49}) == \
        ([], "prompt too long: 49 tokens + 16 answer positions > model context 64")
    # a per-row answer length counts too: 40 + 32 > 64
    assert check({"id": "long32", "prompt": "a" * 40, "max_new_tokens": 32}, decode=LONGER) == \
        ([], "prompt too long: 40 tokens + 32 answer positions > model context 64")
    ids, err = check({"id": "ok32", "prompt": "a" * 32, "max_new_tokens": 32}, decode=LONGER)
    assert err == "" and len(ids) == 32


def test_max_new_tokens_above_gen_length_needs_allow_longer() -> None:
    assert check({"id": "m", "prompt": "copy:a=", "max_new_tokens": 32}) == ([], (
        "max_new_tokens 32 > decode.gen_length 16 (set decode.allow_longer=true to decode such rows at their own length)"))
    assert check({"id": "m", "prompt": "copy:a=", "max_new_tokens": 32}, decode=LONGER) == (ids_of("copy:a="), "")
    assert check({"id": "m", "prompt": "copy:a=", "max_new_tokens": 16}) == (ids_of("copy:a="), "")


@pytest.mark.parametrize("mnt", [7, 8, 24])
def test_max_new_tokens_need_not_be_a_multiple_of_block_length(mnt: int) -> None:
    assert check({"id": "m", "prompt": "copy:a=", "max_new_tokens": mnt}, decode=LONGER) == (ids_of("copy:a="), "")
    small_blocks = DecodeConfig(gen_length=16, block_length=8, steps=16, allow_longer=True)
    assert check({"id": "m", "prompt": "copy:a=", "max_new_tokens": mnt}, decode=small_blocks)[1] == ""


def test_the_context_check_counts_whole_blocks() -> None:
    """33 tokens occupy 3 blocks of 16 (48 positions, 15 EOS-fixed): 20 + 48 > 64."""
    assert check({"id": "m", "prompt": "a" * 20, "max_new_tokens": 33}, decode=LONGER) == \
        ([], "prompt too long: 20 tokens + 48 answer positions > model context 64")


def test_row_with_an_error_passes_through_unchanged() -> None:
    row = parse(jsonl({"prompt": "copy:a="}))[0]
    assert row["error"] == "missing id"
    before = dict(row)
    assert check_row(row, load_tokenizer(MODEL), DECODE, 64, True) == ([], "missing id")
    assert row == before


def test_messages_without_chat_template_is_an_error() -> None:
    ids, err = check({"id": "m", "messages": [{"role": "user", "content": "ab"}]})
    assert ids == [] and err == "messages given but the tokenizer has no chat template; send 'prompt' instead"


def test_chat_template_applies_to_prompt_and_messages(templated) -> None:
    assert check({"id": "p", "prompt": "ab"}, templated) == (ids_of("ab|="), "")
    msgs = [{"role": "user", "content": "ab"}, {"role": "assistant", "content": "c"}]
    assert check({"id": "m", "messages": msgs}, templated) == (ids_of("ab|c|="), "")
    # a message list wins over a prompt given alongside it
    assert check({"id": "both", "prompt": "zz", "messages": msgs}, templated) == (ids_of("ab|c|="), "")
    # chat_template=false: bare prompts are tokenized as is, messages cannot be
    assert check({"id": "p", "prompt": "ab"}, templated, use_template=False) == (ids_of("ab"), "")
    assert check({"id": "m", "messages": msgs}, templated, use_template=False)[1].startswith("messages given")


@pytest.mark.parametrize("messages", ["hello", [{"role": "user"}], ["hi"], {"role": "user", "content": "x"}])
def test_malformed_messages_are_an_error(templated, messages) -> None:
    assert check({"id": "m", "messages": messages}, templated) == \
        ([], "messages must be a list of {role, content} objects")


def test_template_that_rejects_the_messages_is_a_row_error_not_a_crash(templated) -> None:
    """Real chat templates raise (jinja2 TemplateError via raise_exception) on e.g. non-alternating roles."""
    assert check({"id": "s", "messages": [{"role": "system", "content": "ab"}]}, templated) == \
        ([], "chat template rejected the row: no system turns")


def test_preprocess_batch_on_a_parsed_shard() -> None:
    rows = [{"id": "a", "prompt": "copy:ab="}, {"id": "b", "prompt": ""}, {"id": "a", "prompt": "dup"},
            {"id": "c", "prompt": "rev:xyz=", "max_new_tokens": 16}, {"id": "d", "prompt": "x" * 60}]
    table = pa.Table.from_pylist(parse(jsonl(*rows)))
    out = preprocess_batch(table, MODEL, DECODE)
    assert out.column_names == table.column_names + ["prompt_ids"]
    assert out.schema.field("prompt_ids").type == pa.list_(pa.int32())
    assert out.drop_columns(["error", "prompt_ids"]).equals(table.drop_columns(["error"]))
    errors = out["error"].to_pylist()
    assert errors[0] == errors[3] == ""
    assert errors[1] == "empty prompt" and errors[2] == "duplicate id 'a' in shard"
    assert errors[4].startswith("prompt too long: 60 tokens")
    assert out["prompt_ids"].to_pylist() == [ids_of("copy:ab="), [], [], ids_of("rev:xyz="), []]


def test_preprocess_batch_uses_the_model_dirs_chat_template(tmp_path, templated) -> None:
    model = tmp_path / "model"
    templated.save_pretrained(model)
    shutil.copy(f"{MODEL}/config.json", model / "config.json")
    table = pa.Table.from_pylist(parse(jsonl({"id": "p", "prompt": "ab"},
                                             {"id": "m", "messages": [{"role": "user", "content": "cd"}]})))
    out = preprocess_batch(table, str(model), DECODE)
    assert out["error"].to_pylist() == ["", ""]
    assert out["prompt_ids"].to_pylist() == [ids_of("ab|="), ids_of("cd|=")]
    raw = preprocess_batch(table, str(model), DECODE, use_template=False)
    assert raw["prompt_ids"].to_pylist()[0] == ids_of("ab") and raw["error"].to_pylist()[1].startswith("messages")


def test_host_stages_load_the_tokenizer_without_torch() -> None:
    """Read/preprocess/write workers start without importing torch (seconds per worker on a cold start)."""
    code = ("import sys; import stages.read.stage, stages.preprocess, stages.write.sink; "
            f"tok = stages.preprocess.load_tokenizer({MODEL!r}); "
            "assert tok('ab=', add_special_tokens=False)['input_ids'] == [4, 5, 41]; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_generic_tokenizer_keeps_its_chat_template(templated, tmp_path) -> None:
    templated.save_pretrained(tmp_path)
    shutil.copy(f"{MODEL}/config.json", tmp_path / "config.json")
    light = load_tokenizer.__wrapped__(str(tmp_path))   # uncached: the generic fast path
    assert type(light).__name__ == type(templated).__name__ and light.chat_template == TEMPLATE
    row = {"id": "a", "messages": [{"role": "user", "content": "ab"}]}
    assert check(row, light) == check(row, templated) and check(row, light)[0][-1] == ids_of("=")[0]
