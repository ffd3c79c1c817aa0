"""What a checkpoint's files tell before anything loads (decoder/families/checkpoint_files.py, each family's
`check_config`, `check_loadable`), and that the pre-Ray config check reports it as one line naming
model.path (settings/checks.py `check_files`)."""
from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file

from decoder.families import check_loadable
from decoder.families.checkpoint_files import CheckpointIncomplete, check_safetensors
from settings.checks import check_files
from settings.loader import load_config
from settings.schema import ConfigError

EMBEDDED_MODEL = pathlib.Path(__file__).resolve().parents[2] / "embedded" / "taskmix" / "model"


@pytest.fixture
def model(tmp_path):
    """A copy of the embedded checkpoint (native family, one safetensors file) to break."""
    path = tmp_path / "model"
    shutil.copytree(EMBEDDED_MODEL, path)
    return path


def _config(path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))


def _check_files(path, *overrides: str) -> None:
    check_files(load_config(None, [f"model.path={path}", *overrides]))


def test_the_embedded_checkpoint_is_loadable(model) -> None:
    assert check_loadable(str(model)) == "native"
    _check_files(model)


def test_a_truncated_safetensors_file_names_the_file_and_the_tensor(model) -> None:
    weights = model / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(size - 1000)
    with pytest.raises(CheckpointIncomplete, match=r"model\.safetensors: truncated: tensor '.+' lies at bytes"):
        check_loadable(str(model))
    with pytest.raises(ConfigError, match=r"^config error at model\.path: .*model\.safetensors: truncated") as e:
        _check_files(model)
    assert "\n" not in str(e.value)


def test_header_length_past_the_end_and_trailing_bytes(tmp_path) -> None:
    file = tmp_path / "w.safetensors"
    save_file({"a": np.zeros((2, 3), np.float32), "b": np.ones(4, np.float16)}, str(file))
    assert check_safetensors(str(file)) == 2
    data = file.read_bytes()
    file.write_bytes(data + b"\0" * 8)                                   # bytes no tensor covers
    with pytest.raises(CheckpointIncomplete, match="cover 32 bytes of data, the file holds 40"):
        check_safetensors(str(file))
    file.write_bytes(data[:20])                                          # cut inside the header
    with pytest.raises(CheckpointIncomplete, match="header length says"):
        check_safetensors(str(file))
    file.write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointIncomplete, match="not even a header length"):
        check_safetensors(str(file))


def test_a_header_whose_shape_does_not_match_its_bytes(tmp_path) -> None:
    file = tmp_path / "w.safetensors"
    header = json.dumps({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode()
    file.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 8)
    with pytest.raises(CheckpointIncomplete, match=r"tensor 'a' \(F32 \[3\]\) spans 8 bytes, its shape needs 12"):
        check_safetensors(str(file))


def test_an_index_that_names_a_missing_shard(model) -> None:
    weights = model / "model.safetensors"
    weights.rename(model / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"lm_head.weight": "model-00001-of-00002.safetensors",
                            "model.norm.weight": "model-00002-of-00002.safetensors"}}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointIncomplete, match=r"names 1 file\(s\) the folder lacks: model-00002-of-00002"):
        check_loadable(str(model))


def test_no_weight_files_and_an_unreadable_config(model) -> None:
    (model / "model.safetensors").unlink()
    with pytest.raises(CheckpointIncomplete, match="no weight files"):
        check_loadable(str(model))
    (model / "config.json").write_text('{"model_type": "llama",')
    with pytest.raises(ConfigError, match=r"at model\.path: .*config\.json: not valid JSON"):
        _check_files(model)


def test_native_mask_token_missing_or_outside_the_vocabulary(model) -> None:
    _config(model, mask_token_id=None)
    with pytest.raises(ConfigError, match="^config error at model.path: .*config has no mask_token_id"):
        _check_files(model)
    _config(model, mask_token_id=48)
    with pytest.raises(ValueError, match=r"mask_token_id 48 is outside the vocabulary \(vocab_size 48\)"):
        check_loadable(str(model))
    _config(model, mask_token_id=1, is_causal=True)
    with pytest.raises(ValueError, match="causal LM, not a diffusion LM"):
        check_loadable(str(model))


def test_llada_and_dream_configs_are_checked_before_loading(tmp_path) -> None:
    save_file({"x": np.zeros(1, np.float32)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llada", "d_model": 8, "vocab_size": 64}))
    with pytest.raises(ValueError, match="LLaDA config.json lacks mlp_hidden_size, n_layers, n_heads"):
        check_loadable(str(tmp_path))
    llada = {"model_type": "llada", "d_model": 8, "mlp_hidden_size": 16, "n_layers": 1, "n_heads": 2,
             "max_sequence_length": 32, "vocab_size": 64}
    (tmp_path / "config.json").write_text(json.dumps(llada))     # LLaDA's default mask id 126336 needs its vocabulary
    with pytest.raises(ValueError, match="mask_token_id 126336 is outside the vocabulary"):
        check_loadable(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({**llada, "mask_token_id": 63}))
    assert check_loadable(str(tmp_path)) == "llada"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "Dream", "rope_scaling": {"type": "yarn"}}))
    with pytest.raises(ValueError, match="rope_scaling"):
        check_loadable(str(tmp_path))


def test_an_unknown_family_is_named_before_the_files_are_read(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown model family 'gpt'; valid: auto, llada, dream, native"):
        check_loadable(str(tmp_path / "nothing"), family="gpt")
