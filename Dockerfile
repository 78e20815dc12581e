# syntax=docker/dockerfile:1
# The Nanoroute gateway image: `docker build -t nanoroute:0.1.0 .` (docs/deploy.md).
# Runtime dependencies only, at the versions of requirements/runtime.lock: no torch, no vLLM (vLLM runs in its
# own image), no compiler, no pip, and no litellm. `--build-arg EXTRAS=litellm` builds the image that also runs
# `type: litellm` backends (Anthropic, Gemini, Bedrock...), from requirements/runtime-litellm.lock.
# scripts/image.sh builds and smoke-tests both without a Docker daemon.
#
# Config: without NANOROUTE_CONFIG the gateway serves its embedded default config. Mount a file and point
# NANOROUTE_CONFIG at it (the Helm chart mounts its ConfigMap at /etc/nanoroute and sets
# NANOROUTE_CONFIG=/etc/nanoroute/config.yaml). Keys come from the environment: NANOROUTE_API_KEYS,
# NANOROUTE_ADMIN_KEY and each provider key that the config names in api_key_env.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# One optional extra of pyproject.toml, or none.
ARG EXTRAS=""
WORKDIR /src
# The same script builds tests/deploy/test_dockerfile.py's venv, so what is tested is what ships. It installs
# only what requirements/*.lock pins by version and sha256 (scripts/lock.py writes them).
COPY scripts/install-runtime.sh /usr/local/bin/install-runtime.sh
COPY pyproject.toml README.md ./
COPY requirements/ requirements/
COPY gateway/ gateway/
RUN sh /usr/local/bin/install-runtime.sh /src /opt/nanoroute "$EXTRAS"

FROM ${PYTHON_IMAGE} AS runtime
ARG EXTRAS=""
LABEL org.opencontainers.image.title="nanoroute" \
      org.opencontainers.image.description="OpenAI-compatible LLM routing gateway" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.nanoroute.extras="${EXTRAS}"

RUN groupadd --system --gid 10001 nanoroute \
    && useradd --system --uid 10001 --gid nanoroute --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin nanoroute

COPY --from=build /opt/nanoroute /opt/nanoroute

ENV PATH=/opt/nanoroute/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NANOROUTE_HOST=0.0.0.0 \
    NANOROUTE_PORT=8080

USER 10001:10001
EXPOSE 8080

# No curl in a slim image: the venv's Python asks /healthz (liveness: the event loop answers).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('NANOROUTE_PORT', '8080'), timeout=2)"]

ENTRYPOINT ["nanoroute"]
CMD ["serve"]
