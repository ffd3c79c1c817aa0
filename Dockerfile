# GPU image of the dLLM batch-decoding pipeline: Ray's CUDA image + this project's pinned requirements.
#
#   docker build -t ghcr.io/example-org/dllm-batch:0.1.0-ray2.60.0-py311-cu128 .
#   docker run --rm --gpus all ghcr.io/example-org/dllm-batch:0.1.0-ray2.60.0-py311-cu128     # default job
#   docker run --rm --gpus all -v /models:/models -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY \
#       ghcr.io/example-org/dllm-batch:0.1.0-ray2.60.0-py311-cu128 --config configs/gpu.yaml ray.address=local
#
# The image name is defined once, in infra/image.txt; the KubeRay manifest (infra/kuberay/rayjob.yaml) and
# the cluster-launcher config (infra/cluster/aws.yaml) use the same name (tests/infra checks all four).
# Deployment, credentials and sizing: infra/README.md.
#
# Base image: same Ray (2.60.0) and Python (3.11) as requirements.txt, CUDA 12.8. Its default user is the
# non-root `ray` (uid 1000, gid 100 `users`), which owns the image's Python environment; every step below
# runs as that user (set explicitly, first), so nothing is created as root and there is no second user to
# manage. USER is numeric so that Kubernetes' `runAsNonRoot: true` can verify it (infra/kuberay/rayjob.yaml).
FROM rayproject/ray:2.60.0-py311-cu128
USER 1000:100

# torch: requirements.txt pins torch==2.13.0. On the dev/CI machines pip's find-links config resolves
# that pin to the local CPU wheel; a plain PyPI resolve would pick whatever CUDA build PyPI's default
# wheel is built against. So torch is installed first, alone, at the version pinned in requirements.txt
# (read from it: one source of truth), from the PyTorch index that matches the base image's CUDA.
# Build arg: TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 (older drivers), .../cpu (CPU image).
# The second install then finds torch==2.13.0 satisfied (2.13.0+cu128 matches ==2.13.0) and keeps it.
# requirements.txt holds the runtime pins only (the test tools are in requirements-test.txt, not installed here).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

COPY --chown=1000:100 requirements.txt /tmp/requirements.txt
RUN python -m pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "$(grep -E '^torch==' /tmp/requirements.txt)" \
    && python -m pip install --no-cache-dir -r /tmp/requirements.txt \
    && python -c "import sys, torch, ray; cpu = sys.argv[1].rstrip('/').endswith('/cpu'); \
assert cpu or torch.version.cuda, 'expected a CUDA build of torch'; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'ray', ray.__version__)" "${TORCH_INDEX_URL}" \
    && rm /tmp/requirements.txt \
    && mkdir -p /home/ray/app/output

# The project lives in /home/ray/app, the same path on every node (Ray workers import the project's packages from it:
# driver/run.py puts this directory on the workers' PYTHONPATH too). It is installed in place (editable, no
# dependencies: they are above), as scripts/env.sh does in a checkout: configs/ and embedded/ are read from
# here, and `dllm-pipeline` is the same command as `python pipeline.py`.
WORKDIR /home/ray/app
ENV PYTHONPATH=/home/ray/app \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0
COPY --chown=1000:100 pyproject.toml requirements.txt requirements-test.txt ./
COPY --chown=1000:100 pipeline.py ./
COPY --chown=1000:100 decoder/ decoder/
COPY --chown=1000:100 stages/ stages/
COPY --chown=1000:100 driver/ driver/
COPY --chown=1000:100 report/ report/
COPY --chown=1000:100 settings/ settings/
COPY --chown=1000:100 training/ training/
COPY --chown=1000:100 configs/ configs/
COPY --chown=1000:100 embedded/ embedded/
COPY --chown=1000:100 bench/ bench/
RUN python -m pip install --no-cache-dir --no-deps -e . \
    && dllm-pipeline --help > /dev/null

LABEL org.opencontainers.image.title="dllm-batch" \
      org.opencontainers.image.description="Offline batch decoding of diffusion LMs on Ray Data" \
      org.opencontainers.image.version="0.1.0"

# `docker run IMAGE [run] [--config ...] [key=value ...]` / `docker run IMAGE report <run-url>`.
# Ray's own tooling replaces the entry point: KubeRay sets the container command (ray start ...), and the
# cluster launcher runs the container with `--entrypoint=` (see infra/cluster/aws.yaml).
ENTRYPOINT ["python", "/home/ray/app/pipeline.py"]
CMD ["run"]
