"""Typed decoding configuration: the schema omegaconf validates YAML and CLI overrides against.

Units are in the names: `*_logit` thresholds are top-2 logit margins (SchED, Prophet); `*_prob`
thresholds are softmax probabilities (Fast-dLLM). Model-specific token ids never appear here: they come
from the model's own config through the adapter.
"""
from __future__ import annotations

from dataclasses import dataclass, field

#: field metadata read by the run fingerprint (driver/fingerprint.py): "speed" = changes how fast rows decode,
#: never what they decode (left out); "when_set" = added after fingerprints were first written, recorded only
#: when set away from its default (which decodes as before it existed), so shards committed earlier still match
SPEED_ONLY, WHEN_SET = {"fingerprint": "speed"}, {"fingerprint": "when_set"}


def speed_only(default):
    return field(default=default, metadata=SPEED_ONLY)


def when_set(default):
    return field(default=default, metadata=WHEN_SET)


DREAM_ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")


@dataclass
class SchedConfig:
    schedule: str = "cosine"            # linear | cosine | exp (see schedules.SCHEDULES)
    tau_high_logit: float = 7.5         # threshold at progress 0
    tau_low_logit: float = 2.5          # threshold at progress 1
    k: float = 4.0                      # decay rate of the exp schedule
    aggregate: str = "mean"             # mean | median | min | quantile | quantile_linear, over the still-masked span
    quantile: float = 0.5               # used when aggregate is quantile (lower order statistic) or
                                        # quantile_linear (interpolated, torch.quantile: SchED's `q` stat)
    progress_mode: str = "t_over_T"     # t_over_T (paper) | t_over_T_minus_1 (released code)
    # SchED's released exit gates (defaults: off, i.e. exit as soon as gbar >= tau(p)):
    min_progress: float = when_set(0.0)           # exit only once this fraction of the region is committed (0..1)
    patience_steps: int = when_set(0)             # exit only after more than this many consecutive gated steps
    max_change_ratio: float = when_set(1.0)       # a step counts towards patience only when at most this fraction of
                                        # the region's masked argmaxes changed since the last step (0..1;
                                        # the released code's default is 0.0: no change at all)
    region: str = when_set("all")                 # all | tail | custom: positions the gates and gbar look at
    region_start: int = when_set(0)               # custom region: first answer position (0-based)
    region_end: int = when_set(-1)                # custom region: one past its last answer position (-1 = answer end)


@dataclass
class DreamConfig:
    alg: str = "entropy"                # origin | maskgit_plus | topk_margin | entropy (Dream's `alg`)
    alg_temp: float = 0.0               # > 0: pick positions by sampling softmax(score / alg_temp); 0 = top-k
    eps: float = 1e-3                   # final time of Dream's linspace(1, eps, steps + 1) schedule


@dataclass
class FastDllmConfig:
    threshold_prob: float = 0.9         # commit masked block positions whose confidence reaches this


@dataclass
class ProphetConfig:
    tau_high_logit: float = 7.5         # phase 1 (p < 1/3); phase 2 uses the midpoint (5.0)
    tau_low_logit: float = 2.5          # phase 3 (p >= 2/3)


@dataclass
class TspdConfig:
    controller_path: str = "embedded/taskmix/controller/tspd.pt"  # trained controller (training/tspd_train.py)
    threshold_prob: float = 0.5         # fix masked block positions whose P(converged) reaches this
    ema_decay: float = 0.5              # decay of the margin-momentum EMA feature


@dataclass
class CeConfig:
    process_noise: float = 0.05         # q: white-acceleration noise of the constant-velocity model
    observation_noise: float = 1.0      # r: margin observation noise (logit^2)
    horizon: int = 2                    # H: steps ahead the forecast looks
    z: float = 1.0                      # lower bound = forecast mean - z * sigma
    fix_margin_logit: float = 6.0       # look-ahead: fix a position whose lower bound reaches this
    hold_margin_logit: float = 2.0      # stabilise: hold back a pick whose lower bound is below this
    innovation_k: float = 3.0           # stabilise: hold back when |innovation| > k * sqrt(S)


@dataclass
class DGemmaConfig:
    """DiffusionGemma's sampler (policy `dgemma`, the rules of its `generate()`); None = the checkpoint's
    generation_config.json value, else HF's default (48, 0.4, 0.8, 0.1, 1, 0.005)."""
    max_denoising_steps: int | None = None          # N: steps per canvas at most
    t_min: float | None = None                      # temperature at the canvas's last step
    t_max: float | None = None                      # temperature at its first step
    entropy_bound_nats: float | None = None         # accept the lowest-entropy positions while sum - max <= this
    stability_threshold_steps: int | None = None    # the argmax must have held this many steps ...
    confidence_threshold_nats: float | None = None  # ... and the canvas's mean entropy be below this
    rng: str = "per_row"                # per_row: each row its own generator (batch-invariant) | global: torch's
                                        # global RNG in generate()'s order (token parity with it at batch 1)


@dataclass
class BlockConfig:
    """Block-diffusion families (LLaDA2.x, SDAR / TraDo, Fast-dLLM v2: decoder/block); None = the family's
    released default (docs/models.md)."""
    threshold_prob: float | None = when_set(None)   # commit candidates whose probability is above this ...
    steps_per_block: int | None = when_set(None)    # ... when they meet the quota block_length / steps per step
    sub_block_length: int | None = when_set(None)   # candidates: the masks of the first unfinished sub-block
    block_length: int | None = when_set(None)       # None: the checkpoint's block size (what it was trained with)
    stop: str | None = when_set(None)               # block: a finished block holding an EOS ends the row; eager: an
                                        # EOS decoded with nothing masked before it ends it at once
    editing_threshold_prob: float | None = when_set(None)  # LLaDA2.1's token editing: replace a decided answer token
                                        # whose candidate differs with a probability above this (None: off)
    max_post_steps: int | None = when_set(None)     # editing: steps a block may take after its last mask (16)
    recompute: bool = speed_only(False)             # run each forward over the whole sequence instead of the exact
                                        # cache (the released LLaDA2 loop's way; the cache is checked against it)


@dataclass
class DecodeConfig:
    gen_length: int = 16                # answer tokens per row (per-row max_new_tokens may lower it); rounded
                                        # up to whole blocks internally, the extra positions fixed to EOS
    allow_longer: bool = False          # let a row's max_new_tokens exceed gen_length (else that row is refused)
    block_length: int = 16              # semi-autoregressive block size
    steps: int = 16                     # step budget T for gen_length; steps % ceil(gen_length/block_length) == 0
    remasking: str = "low_confidence"   # low_confidence | margin | entropy | random
    temperature: float = 0.0            # 0 = greedy; > 0 adds Gumbel noise in float64
    top_p: float = when_set(1.0)                  # nucleus filter before sampling (probability mass kept; 1 = off)
    top_k: int = when_set(0)                      # keep only the k most likely tokens before sampling (0 = off)
    seed: int = 0                       # per-row generators are seeded from (seed, request id)
    samples_per_prompt: int = 1         # n: rows decoded per prompt, seeded from (seed, id, sample index)
    policy: list[str] = field(default_factory=lambda: ["sched"])  # see policies.POLICIES, e.g. [tspd, ce, sched]
    stop_at_eos: bool = True            # stop a row once EOS is committed with everything before it decoded
    exit_fill: str = when_set("sample")           # sample | argmax: what fills a row's remaining masks when an exit
                                        # policy fires (differs only when sampling; SchED's release: argmax)
    trace: str = "tokens"               # off | steps | tokens
    sched: SchedConfig = field(default_factory=SchedConfig)
    dream: DreamConfig = field(default_factory=DreamConfig)
    fastdllm: FastDllmConfig = field(default_factory=FastDllmConfig)
    prophet: ProphetConfig = field(default_factory=ProphetConfig)
    tspd: TspdConfig = field(default_factory=TspdConfig)
    ce: CeConfig = field(default_factory=CeConfig)
    dgemma: DGemmaConfig = field(default_factory=DGemmaConfig)
    block: BlockConfig = field(default_factory=BlockConfig)
    max_batch_size: int = speed_only(16)            # slots: rows in one forward
    max_batch_tokens: int = speed_only(16384)       # token budget of one forward (rows x padded width)
    cache: str = when_set("none")                 # none | prefix | dual: per-row approximate KV cache (decoder/masked/kv_cache.py)
    cache_refresh_steps: int = when_set(0)        # refresh a row's cache every N steps within a block too (0 = only at
                                        # each block start, the Fast-dLLM rule; 1 = every step = exact)
    max_cache_mb: float = speed_only(0.0)           # bound on the slots' cached K/V (MiB) the scheduler respects; 0 = none
    max_logits_mb: float = speed_only(256.0)        # bound on one step's logits + signal temporaries (MiB): the head
                                        # and the reductions run in chunks of positions that fit it

    def __post_init__(self) -> None:
        if self.trace in ("False", "false"):  # YAML 1.1 reads a bare `off` as a boolean
            self.trace = "off"
        if self.remasking not in ("low_confidence", "margin", "entropy", "random"):
            raise ValueError(f"decode.remasking={self.remasking!r}: use low_confidence, margin, entropy or random")
        if self.exit_fill not in ("sample", "argmax"):
            raise ValueError(f"decode.exit_fill={self.exit_fill!r}: use sample or argmax")
        if self.trace not in ("off", "steps", "tokens"):
            raise ValueError(f"decode.trace={self.trace!r}: use off, steps or tokens")
        if self.temperature < 0:
            raise ValueError("decode.temperature must be >= 0")
        if self.cache not in ("none", "prefix", "dual"):
            raise ValueError(f"decode.cache={self.cache!r}: use none, prefix or dual")
        if self.cache_refresh_steps < 0 or self.max_cache_mb < 0:
            raise ValueError("decode.cache_refresh_steps and decode.max_cache_mb must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("decode.top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("decode.top_k must be >= 0")
        if self.dream.alg not in DREAM_ALGS:
            raise ValueError(f"decode.dream.alg={self.dream.alg!r}: use {', '.join(DREAM_ALGS)}")
        if self.dgemma.rng not in ("per_row", "global"):
            raise ValueError(f"decode.dgemma.rng={self.dgemma.rng!r}: use per_row or global")
        b = self.block
        for key in ("threshold_prob", "editing_threshold_prob"):
            if getattr(b, key) is not None and not 0.0 <= getattr(b, key) <= 1.0:
                raise ValueError(f"decode.block.{key} must be in [0, 1]")
        if b.max_post_steps is not None and b.max_post_steps < 0:
            raise ValueError("decode.block.max_post_steps must be >= 0")
        if b.stop not in (None, "block", "eager"):
            raise ValueError(f"decode.block.stop={b.stop!r}: use block or eager")
        for key in ("steps_per_block", "sub_block_length", "block_length"):
            if getattr(b, key) is not None and getattr(b, key) <= 0:
                raise ValueError(f"decode.block.{key} must be positive")
        if self.max_logits_mb <= 0:
            raise ValueError("decode.max_logits_mb must be > 0")
