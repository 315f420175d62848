# syntax=docker/dockerfile:1
# The giftcard-mesh image: one entry point, `giftcard serve <all|balance|...|gateway>`.
#   docker build -t giftcard-mesh:0.1.0 .
# Two stages: stubs are generated and wheels built in `build`; `runtime` gets only the
# installed virtualenv (no compiler, no grpcio-tools, no sources), running as uid 10001.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The stub generator lives in its own venv so grpcio-tools never reaches the runtime image.
RUN python -m venv /opt/protoc \
 && /opt/protoc/bin/pip install "grpcio-tools>=1.60"
# .dockerignore lets in only what the package needs (an allowlist).
COPY . .
# Same generator as `make gen` (which also builds a dev venv, not wanted here): protos/ -> api/giftcard.
RUN /opt/protoc/bin/python scripts/gen_protos.py
# The runtime venv, at the path it keeps in the runtime stage (venvs are not relocatable).
# pip compiles .pyc here, so the read-only root filesystem costs nothing at start-up.
RUN python -m venv /opt/giftcard \
 && /opt/giftcard/bin/pip install ./api . \
 && /opt/giftcard/bin/giftcard --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="giftcard-mesh" \
      org.opencontainers.image.description="Gift card payment mesh: gRPC services over Redis"
ENV PATH=/opt/giftcard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed numeric uid/gid: Kubernetes can verify runAsNonRoot only for numeric users.
RUN groupadd --system --gid 10001 giftcard \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin giftcard
COPY --from=build /opt/giftcard /opt/giftcard
USER 10001:10001
WORKDIR /tmp
# gRPC (health + reflection on every server) and Prometheus /metrics.
EXPOSE 50051 9464
ENTRYPOINT ["giftcard"]
CMD ["serve", "all"]
