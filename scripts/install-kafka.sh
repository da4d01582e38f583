#!/usr/bin/env bash
# Installs Apache Kafka (the broker, KRaft mode) as Maven Central jars into a cache keyed by
# version, and Java 17 from Debian if no java is on PATH. A second run finds the cache and
# costs nothing. Prints nothing but progress; scripts/kafka.sh and `wapipe up` read the cache.
#
#   WAPIPE_CACHE   cache root (default /var/cache/wapipe; ~/.cache/wapipe when that is not writable)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pom="$repo/kafka-local/kafka/pom.xml"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")"
log4j="$(sed -n 's:.*<log4j.version>\(.*\)</log4j.version>.*:\1:p' "$pom")"

default_cache=/var/cache/wapipe
if ! mkdir -p "$default_cache" 2>/dev/null || [[ ! -w "$default_cache" ]]; then
  default_cache="${XDG_CACHE_HOME:-$HOME/.cache}/wapipe"
fi
cache="${WAPIPE_CACHE:-$default_cache}"
libs="$cache/kafka/$version-log4j$log4j/libs"

if ! command -v java >/dev/null 2>&1 || ! java -version 2>&1 | grep -Eq 'version "(1[7-9]|2[0-9])'; then
  echo "install-kafka: apt-get install openjdk-17-jre-headless"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi
if ! command -v mvn >/dev/null 2>&1; then
  echo "install-kafka: apt-get install maven"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq maven >/dev/null
fi

if [[ -f "$libs/.complete" ]]; then
  echo "install-kafka: Kafka $version already in $libs"
  exit 0
fi
echo "install-kafka: fetching Kafka $version (log4j binding $log4j) with Maven into $libs"
rm -rf "$libs"
mkdir -p "$libs"
mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs"
for jar in "kafka_2.13-$version.jar" "log4j-slf4j-impl-$log4j.jar" "log4j-core-$log4j.jar"; do
  [[ -f "$libs/$jar" ]] || { echo "install-kafka: $jar is missing from $libs" >&2; exit 1; }
done
touch "$libs/.complete"
echo "install-kafka: Kafka $version installed ($(find "$libs" -name '*.jar' | wc -l) jars)"
