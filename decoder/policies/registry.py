"""The one registry of decode policies: name -> `PolicySpec` (factory, kind, the engines that can run it, the
config section holding its parameters). Config checks, `build_policies`, the engines and the run fingerprint
all read it, so a new policy is one entry here. Factories are named, not imported: the driver validates
configs with this table without importing torch (the policies' modules load when a policy is built).

Kinds: one *commit* policy per row set (default: the model family's, see decoder/families), any number of
*exit* policies, and *modifiers* (CE) that adjust both. "none" is the fixed-step baseline (the schedule
commits, no exit policy).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from decoder.config import DecodeConfig
from decoder.families import FAMILY_SPECS

if TYPE_CHECKING:
    from decoder.policies.base import PolicySet

KINDS = ("commit", "exit", "modifier")
MASKED, CANVAS, BLOCK = frozenset({"masked"}), frozenset({"canvas"}), frozenset({"block"})


@dataclass(frozen=True)
class PolicySpec:
    """One policy: `factory` ("module:name", a callable of the DecodeConfig) builds it; `engines` are the
    engine kinds that can run it (a family's engine, FamilySpec.engine); `section` names its DecodeConfig
    sub-config (None: it has no parameters)."""
    name: str
    kind: str
    factory: str
    engines: frozenset
    section: str | None = None

    def __call__(self, cfg: DecodeConfig):
        module, _, attr = self.factory.partition(":")
        return getattr(importlib.import_module(module), attr)(cfg)

    def runs_on(self, family: str) -> bool:
        return FAMILY_SPECS[family].engine in self.engines


POLICIES: dict[str, PolicySpec] = {s.name: s for s in (
    PolicySpec("none", "commit", "decoder.policies.commit:SchedulePolicy", MASKED),
    PolicySpec("dream", "commit", "decoder.policies.dream:DreamPolicy", MASKED, "dream"),
    PolicySpec("fastdllm", "commit", "decoder.policies.commit:FastDllmPolicy", MASKED, "fastdllm"),
    PolicySpec("tspd", "commit", "decoder.policies.tspd:TspdPolicy", MASKED, "tspd"),
    PolicySpec("dgemma", "commit", "decoder.policies.dgemma:DGemmaPolicy", CANVAS, "dgemma"),
    PolicySpec("block", "commit", "decoder.policies.block:BlockCommitPolicy", BLOCK, "block"),
    PolicySpec("sched", "exit", "decoder.policies.exit:sched_policy", MASKED | CANVAS | BLOCK, "sched"),
    PolicySpec("prophet", "exit", "decoder.policies.exit:prophet_policy", MASKED | CANVAS | BLOCK, "prophet"),
    PolicySpec("ce", "modifier", "decoder.policies.ce:ConfidenceExtrapolation", MASKED, "ce"),
)}


def names_of(kind: str) -> list[str]:
    return [n for n, s in POLICIES.items() if s.kind == kind]


def default_commit(family: str | None) -> str:
    """The commit policy a family runs when decode.policy names none (Dream checkpoints: Dream's own loop)."""
    return FAMILY_SPECS[family].default_commit if family in FAMILY_SPECS else "none"


def in_use(names: list[str], family: str | None) -> list[str]:
    """The policies a row set runs: the named ones, plus the family's commit policy when none is named."""
    if any(POLICIES[n].kind == "commit" for n in names if n in POLICIES):
        return list(names)
    return [*names, default_commit(family)]


def composition_error(names: list[str], family: str | None = None) -> str | None:
    """Why `names` cannot run (on `family`; None: any masked family), or None: unknown names, repeats, more than
    one commit policy, a policy the family's engine cannot run."""
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        return f"unknown {unknown}; known: {', '.join(sorted(POLICIES))}"
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        return f"{repeated} named more than once"
    commits = [n for n in names if POLICIES[n].kind == "commit"]
    if len(commits) > 1:
        kinds = "; ".join(f"{k}: {', '.join(names_of(k))}" for k in KINDS)
        return f"names more than one commit policy {commits}; name at most one ({kinds})"
    spec = FAMILY_SPECS.get(family or "native")
    bad = sorted(n for n in names if spec.engine not in POLICIES[n].engines)
    if bad and spec.engine == "block":
        runnable = sorted(n for n, s in POLICIES.items() if "block" in s.engines)
        return (f"{bad} cannot run on a block-diffusion family ({spec.name}: its loop commits by threshold and "
                f"quota inside a block over an exact cache); use {runnable}")
    if bad and spec.engine == "canvas":
        runnable = sorted(n for n, s in POLICIES.items() if "canvas" in s.engines)
        return (f"{bad} cannot run on a canvas family ({spec.name}: no mask token, every position is resampled "
                f"each step); use {runnable}")
    if bad:
        owners = {n: [f for f, fs in FAMILY_SPECS.items() if fs.engine in POLICIES[n].engines] for n in bad}
        return "; ".join(f"{n} needs model.family {' or '.join(owners[n])}" for n in bad) + \
            (" (dgemma is DiffusionGemma's sampler)" if "dgemma" in bad else "")
    return None


def build_policies(cfg: DecodeConfig, family: str | None = None) -> "PolicySet":
    """Resolve `cfg.policy` names: at most one commit policy (default: the family's), any exit policies and
    modifiers (CE), e.g. [tspd, ce, sched]."""
    names = [cfg.policy] if isinstance(cfg.policy, str) else list(cfg.policy)
    error = composition_error(names, family)
    if error:
        raise ValueError(f"decode.policy {error}")
    from decoder.policies.base import PolicySet
    built = [POLICIES[n](cfg) for n in in_use(names, family)]
    return PolicySet(commit=next(p for p in built if p.kind == "commit"),
                     exits=[p for p in built if p.kind == "exit"],
                     modifiers=[p for p in built if p.kind == "modifier"])
