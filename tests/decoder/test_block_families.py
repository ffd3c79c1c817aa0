"""Block-diffusion family loading: `auto` detects each family from config.json, the checkpoints in their original
layouts load with no missing or unused weights, and layouts the stock classes cannot express are refused with
the reason before any weight is read."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from decoder.families import block_size, check_loadable, resolve_family
from decoder.families.checkpoint_safety import CheckpointRefused

BLOCK = Path(__file__).parent / "parity" / "block"


@pytest.mark.parametrize("family,block", [("llada2", 32), ("sdar", 4), ("fast_dllm_v2", 4)])
def test_family_detected_and_block_size_read(family, block):
    path = str(BLOCK / f"tiny_{family}")
    assert resolve_family(path) == family and check_loadable(path) == family
    assert block_size(path) == block      # LLaDA2's tiny config names none: the family's 32


def _edited(tmp_path, family: str, **changes) -> str:
    path = tmp_path / family
    shutil.copytree(BLOCK / f"tiny_{family}", path)
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))
    return str(path)


@pytest.mark.parametrize("family,changes,message", [
    ("llada2", {"use_qkv_bias": True}, "use_bias / use_qkv_bias must be false"),
    ("llada2", {"score_function": "softmax"}, "only sigmoid"),
    ("llada2", {"norm_head": True}, "norm_head false"),
    ("sdar", {"num_experts": 128}, "MoE checkpoints"),
    ("sdar", {"mask_token_id": 1000}, "outside the vocabulary"),
    ("fast_dllm_v2", {"use_sliding_window": True}, "sliding window"),
])
def test_unsupported_layouts_are_refused_with_the_reason(tmp_path, family, changes, message):
    with pytest.raises(ValueError, match=message):
        check_loadable(_edited(tmp_path, family, **changes))


def test_their_remote_code_is_never_asked_for(tmp_path):
    """Their config.json names remote code (auto_map); the loaders map them to stock classes instead, while an
    unknown model_type with an auto_map stays refused."""
    assert check_loadable(str(BLOCK / "tiny_sdar")) == "sdar"
    with pytest.raises(CheckpointRefused, match="remote code"):
        check_loadable(_edited(tmp_path, "sdar", model_type="sdar_moe_v9"))
