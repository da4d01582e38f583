# A stand-in for the public rust:<version>-<release> image, made on a machine that cannot pull
# it: the local Debian base (scripts/image.sh bases), the packages the project's Dockerfile
# installs in its builder stage, and the Rust toolchain installed on this machine, laid out as
# the public image lays it out (RUSTUP_HOME=/usr/local/rustup, CARGO_HOME=/usr/local/cargo).
# Built by scripts/image.sh; the crates come in a later layer (rust-vendor.Dockerfile).
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential perl python3 pkg-config zlib1g-dev libssl-dev cmake ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY toolchain/ /usr/local/rustup/toolchains/local/
RUN mkdir -p /usr/local/cargo/bin \
 && for b in /usr/local/rustup/toolchains/local/bin/*; do ln -s "$b" /usr/local/cargo/bin/; done \
 && rustc --version && cargo --version
