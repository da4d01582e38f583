# The local Rust builder plus the workspace's crates (`cargo vendor` of Cargo.lock), with cargo
# told to read crates.io from them: the project's Dockerfile then builds with no network. Tagged
# with the public builder's name by scripts/image.sh; rebuilt when Cargo.lock changes.
ARG TOOLCHAIN
FROM ${TOOLCHAIN}
COPY vendor/ /usr/local/cargo/vendor/
COPY config.toml /usr/local/cargo/config.toml
ARG LOCK_SHA
LABEL dev.wapipe.cargo-lock-sha256=${LOCK_SHA}
