# Connector image: python -m functions.connector on Cloud Run (see infra/connector.tf).
#checkov:skip=CKV_DOCKER_2:Cloud Run ignores Docker HEALTHCHECK; startup and liveness probes on /healthz are set in infra/connector.tf.
# Pinned base: Python 3.11 (the notifier's python311 runtime) on Debian 12, slim variant.
# Pin the digest too when you bump it: python:3.11.14-slim-bookworm@sha256:<digest>.
# The build stage compiles functions/core/_raw_gate.c (the connector's raw frame gate) with the
# same pyproject.toml definition `make install` uses; the slim image has no compiler. Without
# the .so the connector runs the same rules in Python (functions/core/raw_gate.py), slower.
FROM python:3.11.14-bookworm AS build
WORKDIR /src
COPY pyproject.toml ./
COPY functions/ ./functions/
RUN pip install --no-cache-dir --no-deps --target /built . \
    && cp /built/functions/core/_raw_gate.*.so /src/

FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Runtime dependencies only (requirements.txt, pinned); test and lint tools live in
# requirements-dev.txt and never enter the image. Installed first for layer caching.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# The application package only (.dockerignore keeps everything else out of the context).
COPY functions/ ./functions/
COPY --from=build /src/_raw_gate.*.so ./functions/core/

# Unprivileged user, no home, no shell login.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin connector
USER 10001:10001

# Cloud Run sets PORT; the connector serves GET /healthz on it.
CMD ["python", "-m", "functions.connector"]
