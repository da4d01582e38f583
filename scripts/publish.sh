#!/usr/bin/env bash
# Publishes a built image and the chart to the local registry (scripts/registry.sh), as a release
# would to a public one: the image as <registry>/wapipe/wapipe:TAG, the chart packaged with
# appVersion TAG and pushed as an OCI artifact (`helm push`) to oci://<registry>/charts.
#
#   scripts/publish.sh TAG    prints the chart reference and the image repository, one a line:
#                             oci://127.0.0.1:5000/charts/wapipe-operator <chart version>
#                             127.0.0.1:5000/wapipe/wapipe
#
# Needs the engine (scripts/docker.sh) with the image wapipe:TAG (scripts/image.sh build), the
# registry and helm (scripts/build-control-plane.sh).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tag="${1:?usage: $0 TAG}"
registry="$(bash "$repo/scripts/registry.sh" status)"
DOCKER_HOST="$(bash "$repo/scripts/docker.sh" status)"
export DOCKER_HOST
helm="$(bash "$repo/scripts/build-control-plane.sh" --print)/helm"
repository="$registry/wapipe/wapipe"

/usr/bin/docker tag "wapipe:$tag" "$repository:$tag"
/usr/bin/docker push -q "$repository:$tag" >&2

chart_version="$(sed -n 's/^version: *//p' "$repo/charts/wapipe-operator/Chart.yaml")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$helm" package "$repo/charts/wapipe-operator" --app-version "$tag" -d "$work" >/dev/null
"$helm" push "$work/wapipe-operator-$chart_version.tgz" "oci://$registry/charts" --plain-http >&2
echo "oci://$registry/charts/wapipe-operator $chart_version"
echo "$repository"
