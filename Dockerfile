# syntax=docker/dockerfile:1
# Build stage: a wheel for every pinned runtime dependency, so the final image needs no compiler
# and no pip cache.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements.txt .
RUN pip wheel --wheel-dir /wheels -r requirements.txt

# Runtime stage: slim, non-root (uid 10001), works on a read-only root filesystem (writes only
# to /tmp), serves HTTPS on 8443. deploy/entrypoint.sh: wait for the database, migrate, exec gunicorn.
FROM python:3.11-slim-bookworm
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
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl
# Only what runs; owned by root, so the service cannot change its own code.
COPY config.py wsgi.py ./
COPY app/ app/
COPY migrations/ migrations/
COPY deploy/entrypoint.sh deploy/dbctl.py deploy/healthcheck.py deploy/gunicorn.conf.py deploy/gthread.py deploy/
# Bytecode now, since nothing can be written at run time.
RUN chmod 0755 deploy/entrypoint.sh \
 && python -m compileall -q config.py wsgi.py app migrations deploy
USER 10001:10001
EXPOSE 8443
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/app/deploy/healthcheck.py"]
ENTRYPOINT ["/app/deploy/entrypoint.sh"]
