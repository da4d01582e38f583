#!/usr/bin/env bash
# shellcheck disable=SC2154 # url and app_secret are set by the suite that sources this file
# The test body shared by the end-to-end suites: the kind suite (tests/e2e/run.sh) and the real
# node suite (tests/node/run.sh). Sourced; the caller sets `url` (the ingress's webhook URL) and
# `app_secret`, and counts with `passed` and `failed`.

log() { printf '\n=== %s\n' "$*"; }
pass() { passed=$((passed + 1)); echo "PASS $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1" >&2; }

# check NAME COMMAND...: one assertion of the suite.
check() {
  local name="$1"
  shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}

# retry SECONDS COMMAND...: until the command succeeds or the time is up.
retry() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS >= deadline)) && return 1
    sleep 3
  done
}

# meta_payload FIRST COUNT: one POST carrying COUNT text messages from three users.
meta_payload() {
  local first=$1 count=$2 i messages="" user
  for ((i = first; i < first + count; i++)); do
    user=$((15550000001 + i % 3))
    messages+="${messages:+,}{\"from\":\"$user\",\"id\":\"wamid.E2E$(printf '%08d' "$i")\",\"timestamp\":\"$((1767225600 + i))\",\"type\":\"text\",\"text\":{\"body\":\"message $i\"}}"
  done
  printf '{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"E2E"},"wa_id":"15550000001"}],"messages":[%s]}}]}]}' "$messages"
}
sign() { printf '%s' "$1" | openssl dgst -sha256 -hmac "$app_secret" -r | cut -d' ' -f1; }

# post BODY [SIGNATURE]: prints the HTTP status.
post() {
  local body=$1 signature=${2-sha256=$(sign "$1")}
  curl -s -o /dev/null -w '%{http_code}' -X POST "$url" \
    -H 'Content-Type: application/json' -H "X-Hub-Signature-256: $signature" --data-binary "$body"
}

# send_batch FIRST POSTS PER_POST: POSTS signed requests, all must answer 200.
send_batch() {
  local first=$1 posts=$2 per=$3 p code
  for ((p = 0; p < posts; p++)); do
    code="$(post "$(meta_payload $((first + p * per)) "$per")")"
    [[ "$code" == 200 ]] || { echo "POST answered $code" >&2; return 1; }
  done
}
