# Shoal server image.
#
#   docker build -t shoal .
#   docker run -p 8080:8080 -v shoal-data:/data shoal
#
# Three stages on one slim Debian base, so that compiled code built in the first runs in the last:
#   builder  compilers; builds a wheel of Shoal and of every dependency (hnswlib from source);
#   install  no compilers; installs only those wheels (--no-index) into the venv /opt/shoal;
#   runtime  no compilers, no wheel files: the venv, a non-root user, /data.
# The venv is copied instead of installing in the last stage because a COPY of the wheels there
# would stay in the image's layers even after they are deleted. Plain `docker build` syntax only
# (no BuildKit mounts), so docker-compose v1 and the classic builder can build it too.
#
# The base is pinned by tag, not digest (the digest could not be resolved where this file was
# written, offline); pin `python:3.11-slim-bookworm@sha256:...` for reproducible release builds.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # hnswlib without -march=native: a wheel tuned to the build machine's CPU dies with SIGILL
    # on another one, and an image runs wherever it is pulled.
    HNSWLIB_NO_NATIVE=1

# g++ and make for hnswlib's C++ extension (the only dependency compiled from source).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential=12.9 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY api ./api
COPY server ./server
COPY storage ./storage
COPY index ./index

# Wheels for Shoal and all of its runtime dependencies; hnswlib built here, never a binary wheel.
RUN pip wheel --no-binary hnswlib --wheel-dir /wheels .


FROM ${PYTHON_IMAGE} AS install

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY --from=builder /wheels /wheels
# Only the wheels built above: --no-index makes a missing one an error, not a download.
RUN python -m venv /opt/shoal \
    && /opt/shoal/bin/pip install --no-index --find-links=/wheels /wheels/*.whl


FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="Shoal" \
      org.opencontainers.image.description="Multi-tenant vector database server" \
      org.opencontainers.image.licenses="Apache-2.0"

# uid/gid 10001: above the range of system and login users of the base image and of the host.
RUN groupadd --system --gid 10001 shoal \
    && useradd --system --no-log-init --uid 10001 --gid shoal \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin shoal \
    && mkdir -p /data /tmp/numba \
    && chown shoal:shoal /data /tmp/numba

COPY --from=install /opt/shoal /opt/shoal

# Configuration is by environment (`SHOAL_*`, see docs/configuration.md); flags after
# `serve` override it: `docker run shoal serve --durability os`.
# SHOAL_HOST=0.0.0.0 is needed to be reachable from outside the container, and the server
# refuses to listen beyond loopback without an admin key: set SHOAL_ADMIN_KEY, or better
# SHOAL_ADMIN_KEY_FILE pointing at a mounted secret (or pass `serve --insecure` for a
# throwaway local run). /healthz and /readyz need no key, so the HEALTHCHECK stays as it is.
ENV PATH=/opt/shoal/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SHOAL_DATA_DIR=/data \
    SHOAL_HOST=0.0.0.0 \
    SHOAL_PORT=8080 \
    # numba caches compiled kernels next to their module by default: read-only site-packages
    # for this user. /tmp is writable (a tmpfs or emptyDir under a read-only root filesystem).
    NUMBA_CACHE_DIR=/tmp/numba \
    # One BLAS thread per process: on small machines a second one made single queries slower.
    OPENBLAS_NUM_THREADS=1

USER 10001:10001
WORKDIR /data
VOLUME /data
EXPOSE 8080

# Liveness only (no curl in the slim image): /healthz is 200 while the process serves HTTP,
# also during recovery, and 500 when recovery failed. Readiness is /readyz (orchestrator probes).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = 'http://127.0.0.1:%s/healthz' % os.environ.get('SHOAL_PORT', '8080'); sys.exit(0 if urllib.request.urlopen(url, timeout=4).status == 200 else 1)"]

# SIGTERM (docker stop) shuts down gracefully: up to 30 s for requests in flight, then the WAL
# is synced and RocksDB closed. Give `docker stop` more than its default 10 s (`-t 45`).
ENTRYPOINT ["shoal"]
CMD ["serve"]
