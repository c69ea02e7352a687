# No `# syntax=` line: BuildKit would fetch that frontend from a registry; the one built into
# Docker (20.10 and later) reads this file, so it builds where no registry can be reached.
#
# The base: python:3.11-slim-bookworm, or the same from your registry mirror or made locally
# (docker build --build-arg BASE_IMAGE=mirror.example/library/python:3.11-slim-bookworm .).
# `make image-test` builds on one made with debootstrap (docs/OPERATIONS.md).
ARG BASE_IMAGE=python:3.11-slim-bookworm

# Build stage: every runtime dependency, each file checked against the hash in requirements.lock
# (the whole tree, transitive dependencies too), as wheels, so the final image needs no compiler
# and no pip cache.
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements.lock .
RUN pip wheel --require-hashes --wheel-dir /wheels -r requirements.lock

# Runtime stage: slim, non-root (uid 10001), works on a read-only root filesystem (writes only
# to /tmp), serves HTTPS on 8443. deploy/entrypoint.sh: wait for the database, migrate, exec gunicorn.
FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    APP_ENV=production \
    FLASK_APP=wsgi \
    INSTANCE_DIR=/tmp/instance \
    HOME=/tmp
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app
WORKDIR /app
# From those wheels only, and again only the files whose hashes the lock holds.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,from=build,source=/src,target=/src \
    pip install --no-cache-dir --no-index --find-links /wheels --require-hashes -r /src/requirements.lock
# Only what runs; owned by root, so the service cannot change its own code.
COPY config.py wsgi.py ./
COPY app/ app/
COPY migrations/ migrations/
COPY deploy/entrypoint.sh deploy/*.py deploy/
# Bytecode now, since nothing can be written at run time.
RUN chmod 0755 deploy/entrypoint.sh \
 && python -m compileall -q config.py wsgi.py app migrations deploy
USER 10001:10001
EXPOSE 8443
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/app/deploy/healthcheck.py"]
ENTRYPOINT ["/app/deploy/entrypoint.sh"]
