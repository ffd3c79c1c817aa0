"""Replay of exit policies on a full-budget trace (decoder/replay.py) equals real decodes with those
settings, row for row: outputs, NFE and exit reason, for random SchED and Prophet settings (schedules,
thresholds, k, aggregates, gates, progress modes) on the task-mix model, with block-wise and one-block decoding,
and on the reasoning model (answers that depend on each other), under LLaDA's schedule and under Fast-dLLM's
threshold as the commit policy."""
from __future__ import annotations

import random

import pytest

from decoder.build import load_model
from decoder.offline import decode_prompts
from decoder.replay import replay, replay_check, row_trace, with_exit
from embedded.evaluate import WORKLOADS, load_heldout
from settings.loader import load_config
from stages.preprocess import load_tokenizer
from tests.support import EMBEDDED_MODEL

N_SETTINGS = 60


def random_setting(rng: random.Random) -> tuple[list[str], dict]:
    if rng.random() < 0.15:
        hi = rng.uniform(2, 12)
        return ["prophet"], {"prophet": {"tau_high_logit": hi, "tau_low_logit": rng.uniform(0, hi)}}
    hi = rng.uniform(1, 14)
    sched = {"schedule": rng.choice(["linear", "cosine", "exp"]), "tau_high_logit": hi,
             "tau_low_logit": rng.uniform(0, hi), "k": rng.choice([1.0, 4.0, 8.0, 16.0]),
             "aggregate": rng.choice(["mean", "median", "min", "quantile", "quantile_linear"]),
             "quantile": rng.choice([0.1, 0.25, 0.5]),
             "progress_mode": rng.choice(["t_over_T", "t_over_T_minus_1"])}
    if rng.random() < 0.4:   # SchED's released gates
        sched.update(min_progress=rng.choice([0.0, 0.2, 0.5]), patience_steps=rng.choice([0, 1, 2]),
                     max_change_ratio=rng.choice([0.1, 0.25, 1.0]), region=rng.choice(["all", "tail"]))
    return ["sched"], {"sched": sched}


@pytest.fixture(scope="module")
def models():
    loaded = {}

    def get(workload: str):
        if workload not in loaded:
            path = str(EMBEDDED_MODEL if workload == "toy" else WORKLOADS[workload].model)
            loaded[workload] = load_model(path), load_tokenizer(path)
        return loaded[workload]
    return get


@pytest.mark.parametrize("workload,layout", [
    ("toy", ["decode.block_length=16"]),
    pytest.param("toy", ["decode.block_length=4", "decode.gen_length=16"], marks=pytest.mark.slow),
    ("reasoning", []),
    pytest.param("reasoning", ["decode.policy=[fastdllm]", "decode.fastdllm.threshold_prob=0.9"],
                 marks=pytest.mark.slow),
], ids=["toy-one-block", "toy-blocks", "reasoning", "reasoning-fastdllm"])
def test_replayed_exits_equal_real_decodes(models, workload, layout):
    adapter, tok = models(workload)
    prompts = [r["prompt"] for r in load_heldout(24, workload)]
    full_cfg = load_config(WORKLOADS[workload].config, ["decode.policy=[none]", "decode.trace=tokens", *layout]).decode
    full = decode_prompts(adapter, tok, prompts, full_cfg)
    traces = [row_trace(r, full_cfg.gen_length) for r in full.results]
    rng = random.Random(7)
    exits = 0
    for _ in range(N_SETTINGS):
        policy, sections = random_setting(rng)
        cfg = with_exit(full_cfg, policy, **sections)
        real = decode_prompts(adapter, tok, prompts, replace_trace(cfg)).results
        replayed = replay(traces, cfg)
        assert [r.output_ids for r in replayed] == [r.output_ids for r in real], (policy, sections)
        assert [r.nfe for r in replayed] == [r.steps_taken for r in real], (policy, sections)
        assert [r.exit_reason for r in replayed] == [str(r.exit_reason) for r in real], (policy, sections)
        exits += sum(r.exit_step is not None for r in replayed)
    assert exits > N_SETTINGS * len(prompts) // 4   # the settings do exit early, often


def replace_trace(cfg):
    from dataclasses import replace
    return replace(cfg, trace="off")


def test_settings_that_change_commits_are_refused():
    cfg = load_config(None, ["decode.policy=[none,ce,sched]"]).decode
    assert "ce" in replay_check(cfg)
    assert "sampled" in replay_check(load_config(None, ["decode.temperature=0.7"]).decode)
    assert replay_check(load_config(None, ["decode.policy=[fastdllm,sched]"]).decode) is None
