#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian machine, reusing whatever is
# already there: C toolchain and headers for librdkafka, Lua and shellcheck for the chart and
# Argo CD checks, the Python packages of the chart tests, PostgreSQL, Java 17 and the Apache Kafka
# broker (Maven Central jars, cached by version); for the image and the real node: Debian's Docker
# engine (docker.io: dockerd, containerd, runc; /usr/local/bin/docker may be a client only),
# debootstrap for the local base images, the CNI plugins and iptables.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

need_apt=()
for pair in gcc:build-essential g++:build-essential make:build-essential pkg-config:pkg-config \
  perl:perl python3:python3 lua5.4:lua5.4 lua5.1:lua5.1 shellcheck:shellcheck psql:postgresql-client \
  promtool:prometheus dockerd:docker.io containerd:docker.io debootstrap:debootstrap iptables:iptables; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
[[ -f /usr/include/openssl/ssl.h ]] || need_apt+=(libssl-dev)
[[ -f /usr/include/zlib.h ]] || need_apt+=(zlib1g-dev)
[[ -x /usr/lib/cni/bridge ]] || need_apt+=(containernetworking-plugins)
if ! command -v pg_ctlcluster >/dev/null 2>&1 && ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  need_apt+=(postgresql)
fi
if ((${#need_apt[@]})); then
  echo "install-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import helm_python, kubernetes_validate, pytest, yaml, jsonschema' 2>/dev/null; then
  echo "install-deps: pip install -r tests/chart/requirements.txt"
  python3 -m pip install -q -r tests/chart/requirements.txt
fi

bash scripts/install-kafka.sh
