# syntax=docker/dockerfile:1
# Build stage: compile wheels so the runtime image needs no compiler.
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements.txt .
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.txt

# Runtime stage: slim, non-root, serves HTTPS (or plain HTTP behind a TLS proxy) on 8443.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 APP_ENV=production FLASK_APP=wsgi
RUN useradd --create-home --uid 10001 app
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
COPY --chown=app:app . .
USER app
EXPOSE 8443
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
  CMD python -c "import os,ssl,urllib.request as u; s='https' if os.environ.get('TLS_CERT_FILE') else 'http'; u.urlopen(f'{s}://127.0.0.1:8443/health', context=ssl._create_unverified_context(), timeout=2)"
ENTRYPOINT ["deploy/entrypoint.sh"]
