"""Policies on hand-built step contexts: top-k selection, SchED per-row exits, Fast-dLLM thresholds,
registry validation, and a conformance test every registered policy must pass."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from decoder.config import DecodeConfig, SchedConfig
from decoder.families import FAMILY_SPECS
from decoder.policies.registry import POLICIES, build_policies
from decoder.policies.base import ExitDecision, StepContext, topk_mask
from decoder.policies.commit import FastDllmPolicy, SchedulePolicy
from decoder.policies.exit import MarginExitPolicy, sched_policy
from decoder.policies.schedules import tau_cosine, tau_linear
from decoder.signals import StepSignals


def make_ctx(margin=None, confidence=None, masked=None, in_block=None, k=None, progress=None) -> StepContext:
    """A StepContext with defaults filled in; the remasking score is the confidence."""
    shape = next(t.shape for t in (margin, confidence, masked) if t is not None)
    margin = torch.zeros(shape) if margin is None else margin
    confidence = torch.full(shape, 0.5) if confidence is None else confidence
    masked = torch.ones(shape, dtype=torch.bool) if masked is None else masked
    in_block = torch.ones(shape, dtype=torch.bool) if in_block is None else in_block
    b = shape[0]
    sig = StepSignals(x0=torch.zeros(shape, dtype=torch.long), confidence=confidence, margin=margin,
                      entropy=torch.zeros(shape), argmax=torch.zeros(shape, dtype=torch.long),
                      sample_prob=confidence, sample_margin=confidence / 2, sample_neg_entropy=-confidence)
    rows = [SimpleNamespace(generator=torch.Generator().manual_seed(i), block_step=0, steps_per_block=4,
                            prompt_length=3, answer_tokens=shape[1], gen_length=shape[1]) for i in range(b)]
    return StepContext(sig, confidence, masked, in_block,
                       torch.ones(b, dtype=torch.long) if k is None else k,
                       torch.zeros(b) if progress is None else progress, rows=rows)


# ---------------------------------------------------------------- topk_mask


def test_topk_mask_per_row_k() -> None:
    score = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.3, 0.2, 0.1, 0.0], [0.4, 0.4, 0.4, 0.9]])
    cand = torch.tensor([[True, True, True, False], [True, True, True, True], [True, True, True, False]])
    out = topk_mask(score, cand, torch.tensor([2, 0, 2]))
    assert out.tolist() == [
        [False, True, True, False],     # 0.9, 0.5 (0.7 is not a candidate)
        [False, False, False, False],   # k = 0
        [True, True, False, False],     # ties go to the leftmost; the 0.9 is not a candidate
    ]


def test_topk_mask_k_larger_than_candidates() -> None:
    score = torch.tensor([[0.1, 0.9, 0.5]])
    cand = torch.tensor([[True, False, True]])
    assert torch.equal(topk_mask(score, cand, torch.tensor([5])), cand)


def test_schedule_policy_uses_k_and_candidates() -> None:
    score = torch.tensor([[0.9, 0.8, 0.7, 0.6]])
    ctx = make_ctx(confidence=score, masked=torch.tensor([[False, True, True, True]]),
                   in_block=torch.tensor([[True, True, True, False]]), k=torch.tensor([1]))
    assert SchedulePolicy(DecodeConfig()).select(ctx).tolist() == [[False, True, False, False]]


# ---------------------------------------------------------------- SchED exit


def two_row_ctx() -> StepContext:
    """Row 0: masked positions have margin 10; row 1: masked margin 0.5 but committed ones 100."""
    margin = torch.tensor([[10.0, 10.0, 10.0, 100.0], [0.5, 0.5, 100.0, 100.0]])
    masked = torch.tensor([[True, True, True, False], [True, True, False, False]])
    return make_ctx(margin=margin, masked=masked, progress=torch.tensor([0.25, 0.5]))


def test_sched_exit_per_row() -> None:
    pol = sched_policy(DecodeConfig())  # cosine 7.5 -> 2.5
    d = pol.should_exit(two_row_ctx())
    assert isinstance(d, ExitDecision)
    assert d.exit.tolist() == [True, False]
    expected_tau = [tau_cosine(0.25, 7.5, 2.5), tau_cosine(0.5, 7.5, 2.5)]
    torch.testing.assert_close(d.tau, torch.tensor(expected_tau))
    # g-bar is the mean over still-masked positions only: the committed 100s do not count.
    torch.testing.assert_close(d.gbar, torch.tensor([10.0, 0.5]))


def test_sched_exit_uses_configured_schedule() -> None:
    cfg = DecodeConfig(sched=SchedConfig(schedule="linear", tau_high_logit=20.0, tau_low_logit=4.0))
    d = sched_policy(cfg).should_exit(two_row_ctx())
    torch.testing.assert_close(d.tau, torch.tensor([tau_linear(0.25, 20.0, 4.0), tau_linear(0.5, 20.0, 4.0)]))
    assert d.exit.tolist() == [False, False]  # tau(0.25) = 16 > 10


def test_sched_exit_row_without_masks_does_not_exit() -> None:
    ctx = make_ctx(margin=torch.full((1, 3), 50.0), masked=torch.zeros(1, 3, dtype=torch.bool))
    d = sched_policy(DecodeConfig()).should_exit(ctx)
    assert d.exit.tolist() == [False]


def test_sched_min_aggregate() -> None:
    cfg = DecodeConfig(sched=SchedConfig(aggregate="min"))
    ctx = make_ctx(margin=torch.tensor([[10.0, 1.0, 10.0]]), progress=torch.tensor([0.9]))
    d = sched_policy(cfg).should_exit(ctx)
    assert d.gbar.tolist() == [1.0] and d.exit.tolist() == [False]


def test_margin_exit_rejects_unknown_schedule() -> None:
    with pytest.raises(ValueError, match="unknown schedule 'step'.*cosine"):
        MarginExitPolicy("step", 7.5, 2.5, 4.0, "mean", 0.5, "x")


# ---------------------------------------------------------------- Fast-dLLM


def test_fastdllm_commits_all_confident_candidates() -> None:
    conf = torch.tensor([[0.95, 0.5, 0.91, 0.99], [0.2, 0.6, 0.4, 0.3]])
    masked = torch.tensor([[True, True, True, False], [True, True, True, True]])
    ctx = make_ctx(confidence=conf, masked=masked)
    out = FastDllmPolicy(DecodeConfig()).select(ctx)
    assert out.tolist() == [
        [True, False, True, False],     # >= 0.9 among candidates; 0.99 is already committed
        [False, True, False, False],    # none qualifies: the single best candidate
    ]


def test_fastdllm_threshold_is_inclusive() -> None:
    conf = torch.tensor([[0.9, 0.9, 0.1]])
    out = FastDllmPolicy(DecodeConfig()).select(make_ctx(confidence=conf))
    assert out.tolist() == [[True, True, False]]


# ---------------------------------------------------------------- build_policies


def test_build_policies_rejects_unknown_name() -> None:
    with pytest.raises(ValueError) as err:
        build_policies(DecodeConfig(policy=["sched", "bogus"]))
    message = str(err.value)
    assert "bogus" in message
    for name in POLICIES:
        assert name in message


def test_build_policies_rejects_two_commit_policies() -> None:
    with pytest.raises(ValueError, match="more than one commit policy"):
        build_policies(DecodeConfig(policy=["none", "fastdllm"]))


def test_build_policies_composition() -> None:
    ps = build_policies(DecodeConfig(policy=["sched"]))
    assert isinstance(ps.commit, SchedulePolicy) and [p.name for p in ps.exits] == ["sched"]
    ps = build_policies(DecodeConfig(policy=["fastdllm", "prophet", "sched"]))
    assert isinstance(ps.commit, FastDllmPolicy) and [p.name for p in ps.exits] == ["prophet", "sched"]
    ps = build_policies(DecodeConfig(policy=["none"]))
    assert isinstance(ps.commit, SchedulePolicy) and ps.exits == []


# ---------------------------------------------------------------- conformance over the registry


def random_ctx(seed: int, b: int = 3, g: int = 8) -> StepContext:
    gen = torch.Generator().manual_seed(seed)
    masked = torch.rand(b, g, generator=gen) < 0.7
    masked[0] = True
    masked[-1] = False                              # a row with nothing left
    in_block = torch.zeros(b, g, dtype=torch.bool)
    in_block[:, : g // 2] = True
    return make_ctx(margin=torch.rand(b, g, generator=gen) * 12, confidence=torch.rand(b, g, generator=gen),
                    masked=masked, in_block=in_block, k=torch.tensor([2, 1, 3])[:b],
                    progress=torch.rand(b, generator=gen))


def with_features(ctx: StepContext, pol) -> StepContext:
    """Give the context trajectory features and the policy's per-position state (as the engine does)."""
    from decoder.features import TrajectoryState, trajectory_features
    b, g = ctx.masked.shape
    s = ctx.signals
    ctx.features, _ = trajectory_features(s.confidence, s.entropy, s.margin, s.x0, TrajectoryState.empty((b, g)),
                                          torch.zeros(b, g), torch.zeros(b, g), ctx.progress[:, None])
    ctx.pos = {k: torch.full((b, g, *shape), fill, dtype=dt)
               for k, (dt, fill, shape) in getattr(pol, "position_state", {}).items()}
    return ctx


@pytest.fixture
def controller_path(tmp_path) -> str:
    from decoder.policies.tspd import TspdController
    path = str(tmp_path / "tspd.pt")
    torch.manual_seed(0)
    TspdController().save(path, {})
    return path


#: variants of the registered policies whose options change their code path
VARIANTS = {"dream-origin": ("dream", {"dream.alg": "origin"}), "dream-maskgit": ("dream", {"dream.alg": "maskgit_plus"}),
            "dream-margin-alg_temp": ("dream", {"dream.alg": "topk_margin", "dream.alg_temp": 0.5}),
            "sched-gated": ("sched", {"sched.patience_steps": 1, "sched.max_change_ratio": 0.0,
                                      "sched.min_progress": 0.2, "sched.region": "tail"}),
            "sched-custom-region": ("sched", {"sched.region": "custom", "sched.region_start": 2,
                                              "sched.region_end": 6})}


def canvas_conformance(pol, seed: int) -> None:
    """A canvas sampler (DiffusionGemma's): accepted samples kept, the rest noise, done on stop or last step."""
    from decoder.policies.dgemma import DGemmaSettings
    pol.settings = DGemmaSettings(4, 0.4, 0.8, 1.0 + seed, 1, 0.5)
    g = torch.Generator().manual_seed(seed)
    b, c = 4, 6
    sample, noise, argmax = (torch.randint(0, 50, (b, c), generator=g) for _ in range(3))
    entropy = torch.rand(b, c, generator=g) * 2
    entropy[0] = 0.0                                        # row 0: confident and, with its history, stable
    history = torch.full((b, 1, c), -1)
    history[0, 0] = argmax[0]
    last = torch.tensor([False, False, True, False])
    d = pol.decide(sample, argmax, entropy, noise, history, last)
    assert d.accepted.shape == (b, c) and d.accepted.dtype == torch.bool and d.accepted.any(-1).all()
    assert torch.equal(d.next_canvas, torch.where(d.accepted, sample, noise))
    assert d.done.tolist() == [True, False, True, False] and d.stopped.tolist() == [True, False, False, False]
    assert torch.equal(d.history[:, -1], argmax)
    t = pol.temperatures(torch.tensor([0, 3]))
    assert torch.allclose(t, torch.tensor([0.8, 0.5]))     # t_max at the first step, linear towards t_min


@pytest.mark.parametrize("name", sorted(POLICIES) + sorted(VARIANTS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_policy_conformance(name: str, seed: int, controller_path: str) -> None:
    name, options = VARIANTS.get(name, (name, {}))
    cfg = DecodeConfig(policy=[name])
    for key, value in options.items():
        section, field = key.split(".")
        setattr(getattr(cfg, section), field, value)
    cfg.tspd.controller_path = controller_path
    pol = POLICIES[name](cfg)
    if getattr(pol, "canvas_only", False):
        return canvas_conformance(pol, seed)
    ctx = with_features(random_ctx(seed), pol)
    b, g = ctx.masked.shape
    assert pol.kind in ("commit", "exit", "modifier")
    if pol.kind == "modifier":
        picked = SchedulePolicy(cfg).select(ctx)
        out, extra = pol.modify(ctx, picked)
        assert out.shape == extra.shape == (b, g) and out.dtype == extra.dtype == torch.bool
        assert not (out & ~picked).any(), "a modifier may only hold back what the commit policy picked"
        assert not (extra & ~ctx.candidates).any(), "look-ahead picked a non-candidate"
        assert ((out | extra).any(-1) >= picked.any(-1)).all(), "a row that committed must still commit"
        assert pol.modify_exit(ctx, ctx.masked.any(-1)).shape == (b,)
    elif pol.kind == "commit":
        out = pol.select(ctx)
        assert out.shape == (b, g) and out.dtype == torch.bool
        assert not (out & ~ctx.candidates).any(), "selected a position that is not a candidate"
        has_cand = ctx.candidates.any(-1)
        if getattr(pol, "alg", None) == "origin":   # Dream's origin commits a random count, zero included
            assert not (out.any(-1) & ~has_cand).any()
        else:
            assert (out.any(-1) == has_cand).all(), "a row with candidates must commit at least one"
    else:
        d = pol.should_exit(ctx)
        assert d.exit.shape == (b,) and d.exit.dtype == torch.bool
        assert d.tau.shape == (b,) and d.tau.dtype == torch.float32
        assert d.gbar.shape == (b,) and d.gbar.dtype == torch.float32
        assert not (d.exit & ~ctx.masked.any(-1)).any(), "a row with nothing masked cannot exit"
        assert isinstance(pol.name, str) and pol.name
    owner = next((f for f, spec in FAMILY_SPECS.items() if POLICIES[name].runs_on(f)), None)
    ps = build_policies(cfg, family=owner)   # the first family whose engine runs it
    assert ps.commit.select(ctx).shape == (b, g)
    for e in ps.exits:
        assert e.should_exit(ctx).exit.shape == (b,)
