#!/usr/bin/env bash
# Builds the wapipe image with the project's Dockerfile on the engine of scripts/docker.sh, on a
# machine that cannot pull the public base images: the bases the Dockerfile names are made here
# first, under those names, so the Dockerfile builds unchanged.
#
#   scripts/image.sh bases          make the base images that are missing (see below)
#   scripts/image.sh build [TAG]    bases, then `docker build -t TAG .` (default wapipe:dev);
#                                   prints TAG; the build time goes to <cache>/build-times.log
#
# The bases, named after the Dockerfile's ARG defaults (RUST_VERSION, DEBIAN_RELEASE):
#   debian:<release>-slim        a Debian root file system made by `debootstrap --variant=minbase`
#                                from the mirror apt already uses (its tarball cached), imported
#   rust:<version>-<release>     that base + the build packages + this machine's Rust toolchain
#                                (rustc must be <version>), then + `cargo vendor` of Cargo.lock
#                                with cargo pointed at it (rebuilt when Cargo.lock changes)
# An image already in the engine under a base's name is used as it is; nothing is pulled (no
# registry is reachable, and nothing may be asked of one). Where the public images can be
# pulled, a plain `docker build .` uses them and this script is not needed.
#
#   WAPIPE_IMAGE_CACHE   default /var/cache/wapipe/images (debootstrap tarball, vendored crates)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${WAPIPE_IMAGE_CACHE:-/var/cache/wapipe/images}"
cmd="${1:-}"

# shellcheck source=scripts/lib/log.sh
source "$repo/scripts/lib/log.sh"

host="$(bash "$repo/scripts/docker.sh" status 2>/dev/null)" ||
  die "the engine is not running: bash scripts/docker.sh start"
export DOCKER_HOST="$host" DOCKER_BUILDKIT=1
docker() { nice -n 10 /usr/bin/docker "$@"; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

arg_default() { sed -n "s/^ARG $1=\(.*\)$/\1/p" "$repo/Dockerfile" | head -n 1; }
rust_version="$(arg_default RUST_VERSION)"
release="$(arg_default DEBIAN_RELEASE)"
[[ -n "$rust_version" && -n "$release" ]] || die "no ARG RUST_VERSION / DEBIAN_RELEASE default in the Dockerfile"
debian_image="debian:$release-slim"
rust_image="rust:$rust_version-$release"
toolchain_image="wapipe-local/rust-toolchain:$rust_version-$release"
mkdir -p "$cache"

# timed NAME CMD...: runs CMD and appends its duration to the build-times log.
timed() {
  local name="$1" start
  shift
  start=$(date +%s)
  "$@"
  printf '%s %s %ss (%s cores)\n' "$(date -u +%FT%TZ)" "$name" "$(($(date +%s) - start))" "$(nproc)" >>"$cache/build-times.log"
  log "$name: $(($(date +%s) - start))s"
}

# The first deb822 or one-line source apt uses on this machine (the mirror debootstrap reads).
apt_mirror() {
  local uri
  uri="$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n 1)"
  [[ -n "$uri" ]] || uri="$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\).*/\2/p' /etc/apt/sources.list 2>/dev/null | grep -v security | head -n 1)"
  echo "${uri:-http://deb.debian.org/debian}"
}

make_debian() {
  local tarball="$cache/debian-$release-slim.tar" dir mirror
  if [[ ! -s "$tarball" ]]; then
    command -v debootstrap >/dev/null || die "debootstrap is not installed (scripts/install-deps.sh)"
    mirror="$(apt_mirror)"
    dir="$(mktemp -d "$cache/rootfs.XXXXXX")"
    log "debootstrap --variant=minbase $release from $mirror"
    nice -n 10 debootstrap --variant=minbase "$release" "$dir" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
      { tail -n 20 "$cache/debootstrap.log" >&2; rm -rf "$dir"; die "debootstrap failed (log: $cache/debootstrap.log)"; }
    # The public image's apt sources (main, updates, security) on this mirror, no package lists,
    # no caches: what `apt-get update` in a Dockerfile expects to start from.
    rm -f "$dir/etc/apt/sources.list"
    cat >"$dir/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $release $release-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: $release-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # Like the public slim image: no documentation, manual pages or translations, now or from
    # packages installed later (dpkg's path excludes), the copyright files kept.
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
      'path-exclude /usr/share/man/*' 'path-exclude /usr/share/groff/*' 'path-exclude /usr/share/info/*' \
      'path-exclude /usr/share/lintian/*' 'path-exclude /usr/share/linda/*' 'path-exclude /usr/share/locale/*' \
      >"$dir/etc/dpkg/dpkg.cfg.d/slim"
    find "$dir/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
    find "$dir/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$dir"/usr/share/{man,groff,info,lintian,linda,locale}/*
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
      "$dir"/var/log/* "$dir"/tmp/* "$dir"/root/.bash_history
    : >"$dir/etc/hostname"
    : >"$dir/etc/resolv.conf"
    tar --numeric-owner -C "$dir" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$dir"
  fi
  docker import --change 'CMD ["bash"]' "$tarball" "$debian_image" >/dev/null
}

make_toolchain() {
  local sysroot version ctx
  sysroot="$(rustc --print sysroot)"
  version="$(rustc --version | awk '{print $2}')"
  [[ "$version" == "$rust_version" || "$version" == "$rust_version".* ]] ||
    die "the Dockerfile builds with Rust $rust_version but this machine has rustc $version"
  ctx="$(mktemp -d "$cache/toolchain-ctx.XXXXXX")"
  mkdir -p "$ctx/toolchain"
  # bin, lib and libexec; not the 800 MB of documentation under share/.
  cp -a "$sysroot/bin" "$sysroot/lib" "$ctx/toolchain/"
  [[ -d "$sysroot/libexec" ]] && cp -a "$sysroot/libexec" "$ctx/toolchain/"
  cp "$repo/scripts/image/rust-toolchain.Dockerfile" "$ctx/Dockerfile"
  docker build -q --build-arg BASE="$debian_image" -t "$toolchain_image" "$ctx" >/dev/null ||
    { rm -rf "$ctx"; die "building $toolchain_image failed"; }
  rm -rf "$ctx"
}

make_rust() {
  local sha="$1" vendor="$cache/vendor-$1" ctx
  if [[ ! -f "$vendor/.complete" ]]; then
    rm -rf "$vendor"
    log "cargo vendor (Cargo.lock $sha)"
    (cd "$repo" && cargo vendor --locked --versioned-dirs --offline "$vendor" >/dev/null 2>&1) ||
      (cd "$repo" && cargo vendor -q --locked --versioned-dirs "$vendor" >/dev/null) || die "cargo vendor failed"
    touch "$vendor/.complete"
    # Only the vendor directory of the current Cargo.lock is kept.
    find "$cache" -maxdepth 1 -name 'vendor-*' ! -name "vendor-$sha" -exec rm -rf {} +
  fi
  ctx="$(mktemp -d "$cache/vendor-ctx.XXXXXX")"
  cp -al "$vendor" "$ctx/vendor"
  rm -f "$ctx/vendor/.complete"
  printf '%s\n' '[source.crates-io]' 'replace-with = "vendored"' '[source.vendored]' \
    'directory = "/usr/local/cargo/vendor"' >"$ctx/config.toml"
  cp "$repo/scripts/image/rust-vendor.Dockerfile" "$ctx/Dockerfile"
  docker build -q --build-arg TOOLCHAIN="$toolchain_image" --build-arg LOCK_SHA="$sha" \
    -t "$rust_image" "$ctx" >/dev/null || { rm -rf "$ctx"; die "building $rust_image failed"; }
  rm -rf "$ctx"
}

bases() {
  if ! have_image "$debian_image"; then timed "base $debian_image" make_debian; fi
  local sha label
  sha="$(sha256sum "$repo/Cargo.lock" | cut -c1-16)"
  if have_image "$rust_image"; then
    label="$(docker image inspect -f '{{index .Config.Labels "dev.wapipe.cargo-lock-sha256"}}' "$rust_image")"
    # An image of this name not made here (a pulled rust image) is used as it is.
    [[ -z "$label" || "$label" == "<no value>" || "$label" == "$sha" ]] && return 0
  fi
  if ! have_image "$toolchain_image"; then timed "base $toolchain_image" make_toolchain; fi
  timed "base $rust_image" make_rust "$sha"
}

case "$cmd" in
  bases)
    bases
    ;;
  build)
    tag="${2:-wapipe:dev}"
    bases
    log "docker build -t $tag ."
    timed "docker build $tag" docker build -t "$tag" "$repo" >&2
    log "$tag: $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.1f MB", $1 / 1e6}')"
    echo "$tag"
    ;;
  *)
    echo "usage: $0 bases | build [TAG]" >&2
    exit 2
    ;;
esac
