# syntax=docker/dockerfile:1
# crdt-state's image: `docker build -t crdt-state .` from the repository root.
#
# Three stages. `inspector` builds the web inspector's page (Node, from its lock file). `build` turns the source into a wheel and installs it, with its pinned
# dependencies, into a virtual environment at /opt/crdt-state. The final stage is the same slim
# Python base plus git (snapshot push and gc), that environment, and a non-root user: no
# compiler, no pip, no source tree, no tests. Every dependency ships binary wheels for
# linux/amd64 and linux/arm64, so nothing is compiled in the build stage either.
#
# Run: the server listens on 0.0.0.0:8001; configure it with the environment variables of
# `crdt-state serve --help` (DATABASE_URL, REDIS_URL, JWT_SECRET_KEY, ...). The embedded store
# (no DATABASE_URL) and the Git snapshots live under /data: mount a volume there.
# Schema: `docker run ... crdt-state migrate` before the first start and after an upgrade.
# Stopping: SIGTERM drains clients (docs/OPERATIONS.md) for up to 5 + 10 s: give `docker stop`
# more than its default 10 s (`-t 30`, `stop_grace_period: 30s`).

ARG PYTHON_IMAGE=python:3.11-slim-trixie
ARG NODE_IMAGE=node:20-slim

# The web inspector's bundle (docs/INSPECTOR.md), from its lock file; the wheel carries it.
FROM ${NODE_IMAGE} AS inspector
WORKDIR /src/inspector
COPY inspector/package.json inspector/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY inspector ./
RUN npm run build

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel is made of (.dockerignore keeps the rest out of the context).
COPY pyproject.toml README.md ./
COPY crdt_state ./crdt_state
COPY adapters ./adapters
COPY migrations ./migrations
COPY --from=inspector /src/crdt_state/inspector_dist ./crdt_state/inspector_dist
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/crdt-state \
    && /opt/crdt-state/bin/pip install /wheels/crdt_state-*.whl \
    && /opt/crdt-state/bin/pip uninstall --yes pip \
    && /opt/crdt-state/bin/python -c "import crdt_state.app, adapters.postgres; from migrations import migration_files; assert migration_files('postgres') and migration_files('sqlite')"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="crdt-state" \
      org.opencontainers.image.description="Collaborative state server: Yjs panels over WebSocket, JSON over REST, a durable versioned log." \
      org.opencontainers.image.licenses="Apache-2.0"
# git: `git push` of snapshots (CRDT_STATE_GIT_PUSH_URL) and `git gc`; openssh-client for
# ssh push URLs. Versions follow the base image's Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends git openssh-client \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 crdt \
    && useradd --system --uid 10001 --gid crdt --home-dir /data --shell /usr/sbin/nologin crdt \
    && mkdir -p /data \
    && chown crdt:crdt /data
COPY --from=build /opt/crdt-state /opt/crdt-state
ENV PATH=/opt/crdt-state/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/data \
    CRDT_STATE_DATA_DIR=/data
WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8001
# Liveness only (/health: the process answers). Readiness is /ready, which an orchestrator
# asks itself (it turns 503 while the database is away: not a reason to restart).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8001/health', timeout=4).status != 200)"]
ENTRYPOINT ["crdt-state"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8001"]
