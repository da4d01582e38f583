#!/usr/bin/env bash
# Run the Argo CD health check (deploy/argocd/health.lua) against tests/argocd/fixtures/
# in real Lua interpreters: lua5.4 always, lua5.1 too when installed (Argo CD's gopher-lua
# speaks Lua 5.1). Also checks that deploy/argocd/argocd-cm.yaml embeds the same script.
#
# Needs: apt-get install -y lua5.4 lua5.1; python3 with PyYAML.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 tests/argocd/fixtures_to_lua.py tests/argocd/fixtures >"$work/fixtures.lua"

ran=0
for interpreter in lua5.4 lua5.1; do
  if command -v "$interpreter" >/dev/null; then
    "$interpreter" tests/argocd/run.lua deploy/argocd/health.lua "$work/fixtures.lua"
    ran=$((ran + 1))
  elif [[ "$interpreter" == lua5.4 ]]; then
    echo "test-lua: lua5.4 is not installed (apt-get install -y lua5.4)" >&2
    exit 1
  else
    echo "test-lua: $interpreter not installed; Lua 5.1 compatibility not checked" >&2
  fi
done

# The argocd-cm snippet must carry exactly the tested script.
python3 - <<'PY'
import sys
import yaml
cm = yaml.safe_load(open("deploy/argocd/argocd-cm.yaml"))
key = "resource.customizations.health.wapipe.dev_WhatsAppWebhookPipeline"
embedded = cm["data"][key]
script = open("deploy/argocd/health.lua").read()
if embedded != script:
    sys.exit("test-lua: deploy/argocd/argocd-cm.yaml is stale: run scripts/render-argocd-cm.sh")
print("test-lua: argocd-cm.yaml embeds deploy/argocd/health.lua unchanged")
PY
echo "test-lua: ran the fixtures under $ran interpreter(s)"
