# syntax=docker/dockerfile:1
# bailiwick: the data-residency proxy as a sidecar image (docs/deployment.md).
#
#   docker build -t bailiwick:0.1.0 .
#   docker run --read-only --tmpfs /tmp -p 8080:8080 -p 9090:9090 \
#     -v "$PWD/policies:/etc/bailiwick/policies:ro" -e BAILIWICK_UPSTREAM=http://storage:9000 bailiwick:0.1.0
#
# tests/deploy/test_image.py reads this file: it runs the builder's RUN lines into a fresh venv,
# starts the ENTRYPOINT + CMD with the final stage's ENV and runs the HEALTHCHECK command as written.
#
# The base is pinned to a patch release. Pin its digest too when you build for production
# (python:3.11.17-slim-bookworm@sha256:…, from `docker buildx imagetools inspect`): no registry
# can be asked for it where this file is written and tested, so no digest is written here.
ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm

# ---- builder: a wheel of the project, installed with its dependencies into a venv ----
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy/ proxy/
COPY policies/ policies/
# Every dependency has binary wheels for CPython 3.11 on Linux (amd64, arm64): no compiler here either.
# The venv gets no pip of its own (the builder's pip installs into it), so the final image has no installer.
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m pip wheel --no-deps --wheel-dir dist . \
 && python3 -m venv --without-pip /opt/bailiwick \
 && python3 -m pip --python /opt/bailiwick/bin/python install --only-binary=:all: dist/bailiwick-*.whl

# ---- final: the same base, the venv, nothing else ----
FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
LABEL org.opencontainers.image.title="bailiwick" \
      org.opencontainers.image.description="Data residency enforcement proxy: storage data is reachable only from the jurisdiction whose law governs it." \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/deployment.md" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# A system user with a fixed numeric id (Kubernetes' runAsNonRoot can check a number), no home, no shell;
# the policy folder exists (empty) so that a missing mount fails closed: no policy, every request refused.
RUN groupadd --system --gid 10001 bailiwick \
 && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin bailiwick \
 && mkdir -p /etc/bailiwick/policies
COPY --from=builder /opt/bailiwick /opt/bailiwick
# Nothing is written at run time outside /tmp (--workers N keeps its metrics files in a temporary
# directory there) and the volumes you mount; the audit log goes to standard output by default.
# BAILIWICK_* variables override the configuration file, and flags override both: the two set here win
# over a mounted file's admin_listen and policies (change them with -e). BAILIWICK_CONFIG is not set:
# naming a file that is not there stops the start; set it to the file you mount
# (-e BAILIWICK_CONFIG=/etc/bailiwick/bailiwick.yaml). The health check reads the port from BAILIWICK_ADMIN_LISTEN.
ENV PATH=/opt/bailiwick/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    BAILIWICK_ADMIN_LISTEN=0.0.0.0:9090 \
    BAILIWICK_POLICIES=/etc/bailiwick/policies
VOLUME ["/etc/bailiwick/policies"]
EXPOSE 8080 9090
USER 10001:10001
# Relative paths given as flags or BAILIWICK_* variables resolve here; those in a configuration
# file (jwks_file: keys/…) resolve from the file's own folder.
WORKDIR /etc/bailiwick
# /healthz on the admin port, with the image's own Python (a slim image has no curl or wget).
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; port = os.environ.get('BAILIWICK_ADMIN_LISTEN', ':9090').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).close()"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["bailiwick"]
CMD ["serve"]
