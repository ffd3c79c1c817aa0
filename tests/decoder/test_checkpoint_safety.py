"""No code from a checkpoint is ever run, and weights load from safetensors unless pickles are allowed
(decoder/families/checkpoint_safety.py, through load_model and the pre-Ray config check)."""
from __future__ import annotations

import json
import pathlib

import pytest
import torch

from settings.schema import ConfigError
from settings.loader import load_config
from settings.checks import check_files
from decoder.build import load_model
from decoder.families.checkpoint_safety import CheckpointRefused
from tests.decoder.test_adapters import EOS, MASK, tiny_llama
from tests.support import ROOT

#: Remote code that leaves a file behind when it is imported.
EVIL = "import pathlib\npathlib.Path({sentinel!r}).write_text('ran')\n"


def _with_remote_code(path: pathlib.Path, config: dict) -> pathlib.Path:
    sentinel = path / "remote-code-ran"
    for module in ("configuration_evil", "modeling_evil"):
        (path / f"{module}.py").write_text(EVIL.format(sentinel=str(sentinel)))
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                          "AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (path / "config.json").write_text(json.dumps(config))
    return sentinel


def _check(path, *overrides: str) -> None:
    check_files(load_config(None, [f"model.path={path}", *overrides]))


def test_a_checkpoint_that_asks_for_remote_code_is_refused(tmp_path) -> None:
    tiny_llama(mask_token_id=MASK, eos_token_id=EOS).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    sentinel = _with_remote_code(tmp_path, {**config, "model_type": "evilnet", "architectures": ["EvilModel"]})
    for family in ("auto", "native"):
        with pytest.raises(CheckpointRefused, match=r"asks for remote code \(auto_map: AutoConfig -> "
                                                    r"configuration_evil.EvilConfig.*no class for model_type 'evilnet'"):
            load_model(str(tmp_path), family=family, device="cpu")
    with pytest.raises(ConfigError, match="at model.path: .*never runs code shipped with a checkpoint"):
        _check(tmp_path)                                              # before Ray starts: exit 2
    assert not sentinel.exists()


def test_a_native_architecture_with_an_auto_map_loads_the_stock_class(tmp_path) -> None:
    ref = tiny_llama(mask_token_id=MASK, eos_token_id=EOS)
    ref.save_pretrained(tmp_path)
    sentinel = _with_remote_code(tmp_path, json.loads((tmp_path / "config.json").read_text()))
    adapter = load_model(str(tmp_path), device="cpu")
    assert type(adapter.model).__name__ == "LlamaForCausalLM" and not sentinel.exists()


def test_pickle_only_weights_are_refused_unless_allowed(tmp_path) -> None:
    ref = tiny_llama(mask_token_id=MASK, eos_token_id=EOS)
    ref.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointRefused, match=r"pickle files only \(pytorch_model.bin\).*"
                                                r"model.allow_pickle_weights=true"):
        load_model(str(tmp_path), device="cpu")
    with pytest.raises(ConfigError, match="at model.allow_pickle_weights: .*pytorch_model.bin"):
        _check(tmp_path)
    _check(tmp_path, "model.allow_pickle_weights=true")
    adapter = load_model(str(tmp_path), device="cpu", allow_pickle_weights=True)
    ids = torch.randint(0, 60, (1, 8))
    assert torch.equal(adapter.logits(ids, torch.ones_like(ids)), ref(ids).logits)


def test_trust_remote_code_is_never_set_in_the_project() -> None:
    """The one exception is the parity golden generator, which runs the reference code under transformers
    4.57 in its own environment (tests/decoder/parity/make_dream_golden.py), never in the pipeline."""
    hits = []
    for folder in ("decoder", "stages", "driver", "report", "settings", "training", "bench", "infra", "embedded", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            if "trust_remote_code=True" in text or "trust_remote_code = True" in text:
                hits.append(str(path.relative_to(ROOT)))
    assert "trust_remote_code=True" not in (ROOT / "pipeline.py").read_text()
    assert hits == []


def test_every_converted_family_and_model_type_is_exempt_from_the_remote_code_refusal():
    """Families the adapters map onto stock classes ship an auto_map; the refusal must know them all."""
    from decoder.families import FAMILY_SPECS
    from decoder.families.checkpoint_safety import CONVERTED_TYPES, native_model_types
    for spec in FAMILY_SPECS.values():
        converted = [t for t in spec.model_types if t not in native_model_types()]
        assert set(converted) <= CONVERTED_TYPES, spec
        if converted:
            assert spec.name in CONVERTED_TYPES, spec
