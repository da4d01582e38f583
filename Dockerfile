# One image for every wapipe component: wapipe-operator, wapipe-ingress, wapipe-worker and
# the wapipe CLI. The operator gives its own image to the ingress and worker pods it
# creates (WAPIPE_IMAGE), so the three never run different versions.
#
#   docker build -t ghcr.io/wapipe/wapipe:dev .
#
# On a machine that cannot pull the public base images, scripts/image.sh makes them locally
# under the names below and builds this file unchanged (docs/real-node.md). No `# syntax=`
# line: BuildKit's built-in Dockerfile frontend (Docker 20.10 and later) has the cache mounts
# used below, and a syntax line would make every build fetch the frontend from Docker Hub.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
# rdkafka builds librdkafka from source: make, a C/C++ compiler, perl and python3 come
# with the rust image; add the libraries it links and pkg-config to find them.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential perl python3 pkg-config zlib1g-dev libssl-dev cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds (BuildKit); the binaries
# are copied out because the target cache is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      -p wapipe-operator -p wapipe-ingress -p wapipe-worker -p wapipe \
 && mkdir -p /out \
 && for bin in wapipe-operator wapipe-ingress wapipe-worker wapipe; do \
      cp "target/release/$bin" /out/ && strip /out/$bin; \
    done

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# libssl3 for librdkafka's TLS, ca-certificates for TLS to Kafka, HTTP sinks and the API
# server; nothing else.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 ca-certificates zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin nonroot
COPY --from=builder /out/ /usr/local/bin/
# Numeric so that runAsNonRoot can verify it without resolving names.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080
# The chart and the operator set the command per component; the operator is the default.
ENTRYPOINT []
CMD ["/usr/local/bin/wapipe-operator"]

LABEL org.opencontainers.image.title="wapipe" \
      org.opencontainers.image.description="WhatsApp webhooks into Kafka: operator, ingress, worker and CLI" \
      org.opencontainers.image.source="https://github.com/wapipe/wapipe" \
      org.opencontainers.image.licenses="Apache-2.0"
