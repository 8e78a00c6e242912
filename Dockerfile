# syntax=docker/dockerfile:1
# streamproc worker image: a builder stage makes the wheel and a virtualenv, the runtime stage
# carries only that virtualenv on the slim Python base, running as an unprivileged user.
#
# Pin the base by digest in production builds, e.g.
#   --build-arg BASE_IMAGE=python:3.11-slim-bookworm@sha256:<digest>
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
# Bytecode is compiled at install time and kept: the root filesystem is read-only at run time.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY streamproc ./streamproc
# Every dependency at the version of constraints.txt (scripts/lock), the one the tests ran with. The
# virtualenv keeps only what runs: the build tools (pip, wheel, setuptools) leave it at the end.
RUN python -m venv /opt/streamproc \
 && /opt/streamproc/bin/pip install --upgrade pip==24.3.1 wheel==0.45.1 \
 && /opt/streamproc/bin/pip wheel --wheel-dir /wheels -c constraints.txt ".[avro]" \
 && /opt/streamproc/bin/pip install --no-index --find-links /wheels -c constraints.txt "streamproc[avro]" \
 && /opt/streamproc/bin/pip uninstall -y setuptools wheel pip

FROM ${BASE_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="streamproc" \
      org.opencontainers.image.description="Kafka worker that routes Segment events to partner APIs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/streamproc/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The base's own packaging tools are not needed at run time either (scanners flag old setuptools).
RUN groupadd --system --gid 10001 streamproc \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin streamproc \
 && { python -m pip uninstall -y -q setuptools wheel pip 2>/dev/null || true; } \
 && rm -rf /usr/share/python-wheels
COPY --from=builder /opt/streamproc /opt/streamproc
# No configuration is built in: the Helm chart mounts the operator's at /etc/streamproc/config.yaml, and
# a container started without one stops at once with "cannot read the file" rather than run against
# real partner endpoints with placeholder credentials.
USER 10001:10001
EXPOSE 9464
ENTRYPOINT ["streamproc"]
CMD ["run", "--config", "/etc/streamproc/config.yaml"]
