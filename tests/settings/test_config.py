"""Config loading (settings/schema.py) and value checks (settings/checks.py), without Ray."""
from __future__ import annotations

import os

import pytest
import yaml
from omegaconf import OmegaConf

from settings.schema import ConfigError, PipelineConfig
from settings.loader import DEFAULT_CONFIG, load_config
from settings.checks import POLICY_KINDS, check_files
from tests.support import ROOT


def test_config_layers_on_default_yaml_unless_no_defaults(tmp_path) -> None:
    mine = tmp_path / "my.yaml"
    mine.write_text("decode:\n  steps: 8\n")
    layered = load_config(str(mine), ["decode.seed=3"], defaults=True)
    tuned = yaml.safe_load(open(DEFAULT_CONFIG))["decode"]["sched"]
    assert (layered.decode.sched.schedule, layered.decode.sched.aggregate) == (tuned["schedule"], tuned["aggregate"])
    assert (layered.decode.steps, layered.decode.seed) == (8, 3)                  # file, then CLI on top
    alone = load_config(str(mine), defaults=False)
    assert (alone.decode.sched.schedule, alone.decode.sched.aggregate) == ("cosine", "mean")   # the schema's
    assert alone.decode.steps == 8 and tuned["schedule"] != "cosine"


def test_relative_paths_resolve_per_layer(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    default = load_config(None, defaults=True)
    assert default.model.path == str(ROOT / "embedded" / "taskmix" / "model")                 # project root, not the CWD
    assert default.input.url == str(ROOT / "embedded" / "taskmix" / "prompts" / "*.jsonl")
    (tmp_path / "cfgs").mkdir()
    (tmp_path / "cfgs" / "job.yaml").write_text("input:\n  url: data/*.jsonl\noutput:\n  url: s3://b/out\n")
    job = load_config(str(tmp_path / "cfgs" / "job.yaml"), ["model.path=m"])
    assert job.input.url == str(tmp_path / "cfgs" / "data" / "*.jsonl")           # the file's folder
    assert job.output.url == "s3://b/out"                                         # URLs untouched
    assert job.model.path == str(tmp_path / "m")                                  # CLI: the current folder


def test_lenient_spellings() -> None:
    assert load_config(None, ["decode.policy=sched"]).decode.policy == ["sched"]
    assert load_config(None, ["decode.policy=tspd,ce"]).decode.policy == ["tspd", "ce"]
    assert load_config(None, ["decode.steps=16.0", "decode.gen_length=32.0"]).decode.steps == 16
    with pytest.raises(ConfigError, match="decode.steps"):
        load_config(None, ["decode.steps=16.5"])


@pytest.mark.parametrize("override, key, allowed", [
    ("model.dtype=float8", "model.dtype", "bfloat16"),
    ("model.device=tpu", "model.device", "cuda"),
    ("model.family=gpt", "model.family", "llada"),
    ("decode.sched.schedule=weird", "decode.sched.schedule", "cosine"),
    ("decode.sched.aggregate=max", "decode.sched.aggregate", "quantile"),
    ("decode.sched.progress_mode=t", "decode.sched.progress_mode", "t_over_T"),
    ("decode.policy=[fastdllm,prophet,none]", "decode.policy", "at most one"),
    ("decode.policy=[sched,sched]", "decode.policy", "more than once"),
    ("decode.policy=[]", "decode.policy", "[none]"),
    ("decode.fastdllm.threshold_prob=1.5", "decode.fastdllm.threshold_prob", "[0, 1]"),
    ("run.max_error_fraction=-0.1", "run.max_error_fraction", "[0, 1]"),
    ("actors.batch_rows=0", "actors.batch_rows", ">= 1"),
])
def test_bad_values_name_the_key_and_allowed_values(override: str, key: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert str(e.value).startswith(f"config error at {key}:") and allowed in str(e.value)
    assert "\n" not in str(e.value)


def test_policy_kinds_match_the_policies_registry() -> None:
    from decoder.families import FAMILY_SPECS
    from decoder.policies.registry import POLICIES, build_policies
    assert set(POLICY_KINDS) == set(POLICIES)
    for name, kind in POLICY_KINDS.items():
        family = next(f for f in FAMILY_SPECS if POLICIES[name].runs_on(f))   # the first family that runs it
        built = build_policies(load_config(None, [f"decode.policy=[{name}]"]).decode, family=family)
        found = {"commit": [built.commit] if kind == "commit" else [],
                 "exit": built.exits,
                 "modifier": built.modifiers}[kind]
        assert len(found) == 1 and found[0].kind == kind, name


def test_files_are_checked_before_a_job(tmp_path) -> None:
    check_files(load_config(None, defaults=True), local_ray=True)                # the shipped files exist
    with pytest.raises(ConfigError, match="config error at model.path: .* is not a directory"):
        check_files(load_config(None, [f"model.path={tmp_path / 'nope'}"]))
    with pytest.raises(ConfigError, match="config error at model.path: .* has no config.json"):
        check_files(load_config(None, [f"model.path={tmp_path}"]))
    with pytest.raises(ConfigError, match="config error at decode.tspd.controller_path"):
        check_files(load_config(None, ["decode.policy=[tspd]", f"decode.tspd.controller_path={tmp_path / 'x.pt'}"]))
    with pytest.raises(ConfigError, match="config error at actors.num_gpus"):
        check_files(load_config(None, ["actors.num_gpus=1"]), local_ray=True)     # a local Ray without GPUs
    check_files(load_config(None, ["actors.num_gpus=1"]), local_ray=False)        # a cluster may have them


def _keys(node, prefix="") -> set[str]:
    out = set()
    for k, v in node.items():
        out |= _keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"}
    return out


def test_default_yaml_documents_every_key() -> None:
    schema = _keys(OmegaConf.to_container(OmegaConf.structured(PipelineConfig)))
    documented = _keys(yaml.safe_load(open(DEFAULT_CONFIG)))
    assert schema - documented == set(), "configs/default.yaml lacks these keys"
    text = open(DEFAULT_CONFIG).read()
    for section in ("tspd:", "ce:", "run:", "testing:"):
        assert f"\n  {section}" in text or f"\n{section}" in text, section
    assert os.path.dirname(DEFAULT_CONFIG) == str(ROOT / "configs")


def test_family_checks_before_a_job(tmp_path) -> None:
    from settings.checks import check_values
    from tests.support.tiny_dgemma import save_tiny
    path = save_tiny(str(tmp_path / "dgemma"))
    check_values(load_config(str(ROOT / "configs/diffusion_gemma.yaml"), []))   # no block/steps check for dgemma
    check_files(load_config(None, [f"model.path={path}", "decode.policy=[dgemma,sched]"]))
    for override, key in [("decode.policy=[fastdllm]", "decode.policy"), ("decode.cache=dual", "decode.cache"),
                          ("decode.temperature=0.7", "decode.temperature")]:
        with pytest.raises(ConfigError, match=f"config error at {key}"):
            check_files(load_config(None, [f"model.path={path}", override]))
    with pytest.raises(ConfigError, match="dgemma is DiffusionGemma's sampler"):
        check_files(load_config(None, ["decode.policy=[dgemma]"]))                 # the embedded model


def test_block_family_configs_and_checks(tmp_path) -> None:
    """The shipped block-family configs validate; a block family refuses the masked engine's policies and caches
    before a job, naming the key."""
    from settings.checks import check_values
    from tests.support.tiny_block import save_sdar
    for name in ("llada2", "sdar", "fast_dllm_v2"):
        check_values(load_config(str(ROOT / f"configs/{name}.yaml"), []))
    path = save_sdar(str(tmp_path / "sdar"))
    check_files(load_config(None, [f"model.path={path}", "decode.policy=[block,sched]"]))
    check_files(load_config(None, [f"model.path={path}"]))                       # default [sched]: block + sched
    for override, key in [("decode.policy=[fastdllm]", "decode.policy"), ("decode.cache=prefix", "decode.cache")]:
        with pytest.raises(ConfigError, match=f"config error at {key}"):
            check_files(load_config(None, [f"model.path={path}", override]))
    with pytest.raises(ConfigError, match="decode.block.stop"):
        load_config(None, ["decode.block.stop=later"])
